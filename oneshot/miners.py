"""Miners: which pairs or triplets of a batch a loss scores.

A miner reads the labels [B] of a batch (and, for the hard rules, its distance matrix d [B, B],
smaller = closer, from `oneshot.distances.pairwise`) and returns index tensors: `Pairs` for a
pair loss (contrastive), `Triplets` for a triplet loss. Mining picks indices only: it never
carries gradients (d is read detached); the loss gathers its distances at the mined indices.
A batch with nothing to mine returns empty tensors, which the reductions (`oneshot.reduce`)
turn into a connected zero.

Where a hard rule's hardest distance is tied, the first of the tied items (in batch order) is
picked, and the gradient goes to that item alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Pairs(NamedTuple):
    """Pairs (a[k], b[k]) of batch items, a, b [n] (long); same [n] (bool): a same-class pair."""

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor


class Triplets(NamedTuple):
    """Triplets (anchor a[k], positive p[k], negative n[k]) of batch items, each [m] (long)."""

    a: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor


def masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """labels [B] -> (pos, neg) [B, B] bool: pos[a, p] a same-class pair a != p, neg[a, n] a
    different-class pair."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def hardest(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor, the index of its farthest positive and of its closest negative.

    d, pos, neg [B, B] -> (hardest_pos [B], hardest_neg [B]), long; an anchor without a
    positive (negative) gets an index that means nothing: check pos.any(1) (neg.any(1)).
    """
    d = d.detach()
    return d.masked_fill(~pos, float("-inf")).argmax(1), d.masked_fill(~neg, float("inf")).argmin(1)


# ---- pair miners: labels [B], d [B, B] -> Pairs ----

def all_pairs(labels: torch.Tensor, d: torch.Tensor | None = None) -> Pairs:
    """Every pair i < j of the batch (row by row), labels [B] -> Pairs of B*(B-1)/2. d unused."""
    i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
    return Pairs(i, j, labels[i] == labels[j])


def hard_pairs(labels: torch.Tensor, d: torch.Tensor) -> Pairs:
    """Per anchor its farthest positive and its closest negative (the pairs batch-hard triplet
    mining would pick): first (a, hardest positive of a) for every anchor with a positive, then
    (a, hardest negative of a) for every anchor with a negative, anchors in batch order.
    labels [B], d [B, B] -> Pairs."""
    pos, neg = masks(labels)
    hp, hn = hardest(d, pos, neg)
    with_pos, with_neg = pos.any(1).nonzero().squeeze(1), neg.any(1).nonzero().squeeze(1)
    same = torch.arange(len(with_pos) + len(with_neg), device=labels.device) < len(with_pos)
    return Pairs(torch.cat([with_pos, with_neg]), torch.cat([hp[with_pos], hn[with_neg]]), same)


# ---- triplet miners: labels [B], d [B, B] -> Triplets ----

def all_triplets(labels: torch.Tensor, d: torch.Tensor | None = None) -> Triplets:
    """Every valid triplet (a, p, n), in the order of a, then p, then n. d unused."""
    pos, neg = masks(labels)
    a, p, n = (pos[:, :, None] & neg[:, None, :]).nonzero(as_tuple=True)
    return Triplets(a, p, n)


def hard_triplets(labels: torch.Tensor, d: torch.Tensor) -> Triplets:
    """Batch-hard: per anchor that has a positive and a negative, its farthest positive and its
    closest negative; anchors in batch order."""
    pos, neg = masks(labels)
    hp, hn = hardest(d, pos, neg)
    a = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    return Triplets(a, hp[a], hn[a])


def semihard_triplets(labels: torch.Tensor, d: torch.Tensor) -> Triplets:
    """Semi-hard (FaceNet; the rule of TF-addons' triplet_semihard_loss): for each anchor-positive
    pair whose anchor has a negative, the closest negative with D(a,n) > D(a,p); if no negative is
    farther than the positive, the farthest negative of the anchor. Pairs in the order of a, then p."""
    pos, neg = masks(labels)
    d = d.detach()
    d_ap, d_an = d[:, :, None], d[:, None, :]  # [a, p, 1], [a, 1, n]
    farther = neg[:, None, :] & (d_an > d_ap)  # [a, p, n]
    closest_farther = torch.where(farther, d_an, float("inf")).argmin(2)  # [a, p]
    farthest = d.masked_fill(~neg, float("-inf")).argmax(1, keepdim=True)  # [a, 1]
    chosen = torch.where(farther.any(2), closest_farther, farthest)  # [a, p]
    a, p = (pos & neg.any(1, keepdim=True)).nonzero(as_tuple=True)
    return Triplets(a, p, chosen[a, p])

