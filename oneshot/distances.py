"""Distances between embeddings: the one place that says which way is "closer".

Every function returns a *distance*: smaller means more similar, for every metric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

METRICS = ("euclidean", "sqeuclidean", "cosine")


def pairwise(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance matrix between two sets of embeddings.

    x: [..., n, d], y: [..., m, d] (leading batch dims broadcast) -> [..., n, m].
    `euclidean` is ||x - y||, `sqeuclidean` its square, `cosine` is 1 - cos(x, y) in [0, 2].
    """
    if metric == "sqeuclidean":
        xx = x.pow(2).sum(-1, keepdim=True)
        yy = y.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
        return (xx + yy - 2 * x @ y.transpose(-1, -2)).clamp_min(0)
    if metric == "euclidean":
        # sqrt(0) has an infinite gradient; the clamp keeps gradients finite on identical points.
        return pairwise(x, y, "sqeuclidean").clamp_min(1e-12).sqrt()
    if metric == "cosine":
        return 1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(-1, -2)
    raise ConfigError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")


def paired(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance between matching rows: x, y [n, d] -> [n]."""
    if metric == "sqeuclidean":
        return (x - y).pow(2).sum(-1)
    if metric == "euclidean":
        return (x - y).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    if metric == "cosine":
        return 1 - F.cosine_similarity(x, y, dim=-1)
    raise ConfigError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")
