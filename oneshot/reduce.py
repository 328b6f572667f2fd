"""Reductions: the one place that turns per-pair or per-triplet loss terms into a scalar.

Each takes the terms [n] a loss scored on what its miner (`oneshot.miners`) returned and `emb`
[B, D], the batch's embeddings: a reduction with nothing to average returns a zero still
connected to `emb` (zero gradients, never NaN). The pair reductions also take `same` [n] (bool,
a same-class pair); an empty group (no positive or no negative pair) contributes 0.
"""

from __future__ import annotations

import torch


def zero(emb: torch.Tensor) -> torch.Tensor:
    """A scalar 0 with a grad_fn connected to emb [B, D] (zero gradients)."""
    return emb.sum() * 0


def mean(terms: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The mean of terms [n], or a connected zero when n = 0."""
    return terms.mean() if terms.numel() else zero(emb)


def nonzero(terms: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The mean of the non-zero terms [n] (batch-all: the active triplets), or a connected zero."""
    return mean(terms[terms > 0], emb)


# ---- pair reductions: terms [n], same [n] (bool), emb [B, D] -> scalar ----

def pooled(terms: torch.Tensor, same: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The plain mean over all pairs, positive and negative together."""
    return mean(terms, emb)


def balanced(terms: torch.Tensor, same: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The mean over the positive pairs + the mean over the negative pairs."""
    return mean(terms[same], emb) + mean(terms[~same], emb)


def active(terms: torch.Tensor, same: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The mean over the positive pairs + the mean over the negative pairs with a non-zero term
    (those still inside the margin), as batch-all does for triplets."""
    return mean(terms[same], emb) + mean(terms[~same & (terms > 0)], emb)
