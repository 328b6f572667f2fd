"""Datasets: find, verify and decode once (`decode`: files of a folder or zip, catalogue,
training statistics; `cache`), split by protocol (`omniglot`, `miniimagenet`, `imagefolder` for
`folder:` trees, `l2l`), and draw episodes and batches from a `Split` (`episodes`).
`load.load_split` is the one entry point."""
