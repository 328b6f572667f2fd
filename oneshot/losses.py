"""Siamese losses: contrastive, triplet (with mining), Koch BCE, prototypical; and softmax
pre-training (cross-entropy over the training classes through a head the loss owns).

Every loss takes embeddings `emb` [B, D] and integer labels [B] of a batch of P classes x K
images (the trainer passes the classes' indices in the training split; only which items share
a class matters); pairs and triplets are formed online inside the batch. Distances come from
`oneshot.distances` (smaller = closer for every metric), and the reduction to a scalar
happens in `_mean` / `_reduce` only. A batch with nothing to learn from returns a zero that
is still connected to `emb` (never NaN).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .distances import pairwise

from .errors import ConfigError

MINING = ("all", "hard", "semihard")
POS_WEIGHT = ("balanced", "mean", "active", "hard")
HEADS = ("linear", "cosine")


# ---- reduction: the one place that turns per-pair / per-triplet terms into a scalar ----

def _zero(emb: torch.Tensor) -> torch.Tensor:
    """A scalar 0 with a grad_fn connected to emb (zero gradients)."""
    return emb.sum() * 0


def _mean(values: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Mean of values, or a connected zero when there are none."""
    return values.mean() if values.numel() else _zero(emb)


def _reduce(
    per_pair: torch.Tensor, same: torch.Tensor, how: str, emb: torch.Tensor
) -> torch.Tensor:
    """per_pair [n] with same [n] (bool, same class) -> scalar.

    "mean": plain mean over all pairs. "balanced": mean over positive pairs + mean over negative
    pairs. "active": mean over positive pairs + mean over the negative pairs with a non-zero
    term (those still inside the margin), as batch-all does for triplets. An empty group
    contributes 0.
    """
    if how == "mean":
        return _mean(per_pair, emb)
    if how == "balanced":
        return _mean(per_pair[same], emb) + _mean(per_pair[~same], emb)
    if how == "active":
        return _mean(per_pair[same], emb) + _mean(per_pair[~same & (per_pair > 0)], emb)
    raise ConfigError(f"unknown pos_weight {how!r}; choose one of {', '.join(POS_WEIGHT)}")


def _pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs i < j of a batch: (i [n], j [n], same [n] bool)."""
    i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
    return i, j, labels[i] == labels[j]


# ---- losses ----

def contrastive(
    emb: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 1.0,
    metric: str = "euclidean",
    pos_weight: str = "balanced",
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006) over all pairs i < j of the batch.

    emb [B, D], labels [B] -> scalar. Per pair, with Y = 1 for a dissimilar pair and D the
    distance under `metric`: L = (1 - Y) * D^2 / 2 + Y * max(0, margin - D)^2 / 2.
    pos_weight="balanced" (default) returns mean(positive pairs) + mean(negative pairs): a
    P x K batch has only P*K*(K-1)/2 positive pairs among B*(B-1)/2, so a plain mean would be
    dominated by negatives. pos_weight="active" averages the negatives over those still inside
    the margin only, so easy negatives do not dilute the hard ones. pos_weight="mean" is the
    plain mean over all pairs. pos_weight="hard" keeps, per anchor, only its farthest positive
    and its closest negative (the pairs batch-hard triplet mining would pick): mean over anchors
    of the positive term + mean over anchors of the negative term.
    """
    if pos_weight == "hard":
        d = pairwise(emb, emb, metric)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        has_pos, has_neg = pos.any(1), (~same).any(1)
        hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)[has_pos]
        hardest_neg = d.masked_fill(same, float("inf")).amin(1)[has_neg]
        return _mean(0.5 * hardest_pos.pow(2), emb) + _mean(0.5 * F.relu(margin - hardest_neg).pow(2), emb)
    i, j, same = _pairs(labels)
    d = pairwise(emb, emb, metric)[i, j]
    per_pair = torch.where(same, 0.5 * d.pow(2), 0.5 * F.relu(margin - d).pow(2))
    return _reduce(per_pair, same, pos_weight, emb)


def triplet(
    emb: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    metric: str = "euclidean",
    mining: str = "hard",
) -> torch.Tensor:
    """Triplet loss (Schroff et al. 2015) max(0, D(a,p) - D(a,n) + margin), mined in the batch.

    emb [B, D], labels [B] -> scalar. mining:
    - "all": every valid triplet (a, p, n), averaged over those with non-zero loss
      (batch-all, Hermans et al. 2017); 0 when none is non-zero.
    - "hard": per anchor the farthest positive and the closest negative (batch-hard), mean
      over anchors that have both.
    - "semihard" (FaceNet; the rule of TF-addons' triplet_semihard_loss): for each
      anchor-positive pair the closest negative with D(a,n) > D(a,p); if no negative is
      farther than the positive, the farthest negative of the anchor. Mean over all
      anchor-positive pairs whose anchor has a negative.
    """
    d = pairwise(emb, emb, metric)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same  # [B, B] masks: (anchor, positive), (anchor, negative)

    if mining == "all":
        valid = pos[:, :, None] & neg[:, None, :]  # [a, p, n]
        losses = F.relu(d[:, :, None] - d[:, None, :] + margin)[valid]
        return _mean(losses[losses > 0], emb)
    if mining == "hard":
        has_both = pos.any(1) & neg.any(1)
        hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)
        hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
        return _mean(F.relu(hardest_pos - hardest_neg + margin)[has_both], emb)
    if mining == "semihard":
        d_ap, d_an = d[:, :, None], d[:, None, :]  # [a, p, 1], [a, 1, n]
        farther = neg[:, None, :] & (d_an > d_ap)  # [a, p, n]
        closest_farther = torch.where(farther, d_an, float("inf")).amin(2)  # [a, p]
        farthest = d.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)  # [a, 1]
        chosen = torch.where(farther.any(2), closest_farther, farthest)
        valid = pos & neg.any(1, keepdim=True)
        return _mean(F.relu(d - chosen + margin)[valid], emb)
    raise ConfigError(f"unknown mining {mining!r}; choose one of {', '.join(MINING)}")


class KochHead(nn.Module):
    """Koch et al. (2015) similarity head: logit = w . |e1 - e2| + b.

    e1, e2 [n, dim] -> logits [n] (higher = more likely the same class).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """e1, e2 [n, dim] -> logits [n]."""
        return self.fc((e1 - e2).abs()).squeeze(-1)

    def similarity(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Probability of the same class, sigmoid(logit): e1, e2 [n, dim] -> [n] in (0, 1)."""
        return torch.sigmoid(self(e1, e2))


def koch(emb: torch.Tensor, labels: torch.Tensor, head: KochHead) -> torch.Tensor:
    """Koch et al. (2015) loss: binary cross-entropy with logits over all pairs i < j.

    emb [B, D], labels [B] -> scalar. Target 1 for a same-class pair. Positives and negatives
    are balanced: mean BCE over positive pairs + mean BCE over negative pairs (an empty group
    contributes 0), as positive pairs are rare in a P x K batch.
    """
    i, j, same = _pairs(labels)
    logits = head(emb[i], emb[j])
    bce = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype), reduction="none")
    return _reduce(bce, same, "balanced", emb)


def proto(
    emb: torch.Tensor, labels: torch.Tensor, n_support: int, metric: str = "sqeuclidean"
) -> torch.Tensor:
    """Prototypical loss (Snell et al. 2017) inside one batch.

    emb [B, D], labels [B] -> scalar. Per class, its first n_support items in batch order are
    the support (their mean is the prototype) and the rest are queries; the loss is the mean
    cross-entropy of the queries over -distance to every prototype. Every class needs at
    least n_support items; a batch without queries gives a connected 0.
    """
    if n_support < 1:
        raise ConfigError(f"n_support must be >= 1, got {n_support}")
    same = labels[:, None] == labels[None, :]
    # classes numbered 0..C-1 in order of first appearance (prototypes in batch order, whatever
    # the label values): cls [B]
    first = same.int().argmax(1)  # the first item of each item's class
    starts = first == torch.arange(len(labels), device=labels.device)
    cls = (torch.cumsum(starts, 0) - 1)[first]
    n_classes = int(starts.sum())
    rank = torch.tril(same, diagonal=-1).sum(1)  # position of each item within its class
    support = rank < n_support
    onehot = F.one_hot(cls, n_classes).T.to(emb.dtype)  # [C, B]
    sizes = onehot.sum(1)
    if (sizes < n_support).any():
        raise ConfigError(f"every class needs at least n_support={n_support} items in the batch")
    weights = onehot * support.to(emb.dtype)
    prototypes = (weights @ emb) / weights.sum(1, keepdim=True)  # [C, D]
    queries = ~support
    if not queries.any():
        return _zero(emb)
    logits = -pairwise(emb[queries], prototypes, metric)  # [Q, C]
    return F.cross_entropy(logits, cls[queries])


# ---- losses as modules: what the trainer calls, loss(emb, labels) -> scalar ----

class FunctionLoss(nn.Module):
    """A loss function with its keyword arguments bound: forward(emb, labels) = fn(emb, labels, **params).

    Holds no parameters of its own (unless `fn` is itself a module)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params):
        super().__init__()
        self.fn = fn
        self.params = params

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """emb [B, D], labels [B] -> scalar."""
        return self.fn(emb, labels, **self.params)

    def extra_repr(self) -> str:
        return f"{getattr(self.fn, '__name__', self.fn)}, {self.params}"


class KochLoss(nn.Module):
    """Koch's BCE loss with the similarity head it trains (its parameters are the loss's own)."""

    def __init__(self, dim: int):
        super().__init__()
        self.head = KochHead(dim)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """emb [B, D], labels [B] -> scalar."""
        return koch(emb, labels, self.head)


class SoftmaxLoss(nn.Module):
    """Cross-entropy over the training classes through a head on the embedding: softmax
    pre-training (SimpleShot, RFS). The head is the loss's own parameters (trained, kept in
    checkpoints, never used at test).

    head="linear": logits = W e + b (SimpleShot's linear layer with bias); head="cosine":
    logits = scale * cos(e, w_c) (Baseline++, Chen et al. 2019)."""

    def __init__(self, dim: int, num_classes: int, head: str = "linear", scale: float = 10.0):
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"unknown softmax head {head!r}; choose one of {', '.join(HEADS)}")
        self.head, self.scale = head, scale
        self.fc = nn.Linear(dim, num_classes, bias=head == "linear")

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, D] -> logits [B, C]."""
        if self.head == "linear":
            return self.fc(emb)
        return self.scale * F.normalize(emb, dim=-1) @ F.normalize(self.fc.weight, dim=-1).T

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """emb [B, D], labels [B] (indices of the training classes) -> scalar."""
        return F.cross_entropy(self.logits(emb), labels)
