"""Reports from records alone: rows read from the records (`frames`), the tables (`tables`,
`verification`, `budget`), the plots (`plots`), the results README (`readme`) and the published
numbers they are set beside (`published`)."""
