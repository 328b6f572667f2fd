"""oneshot: a one-shot learning benchmark harness (Siamese losses, N-way K-shot episodes, CIs)."""

__version__ = "0.1.0"
