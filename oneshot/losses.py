"""Siamese losses: contrastive, triplet, Koch BCE, prototypical; and softmax pre-training
(cross-entropy over the training classes through a head the loss owns).

Every loss takes embeddings `emb` [B, D] and integer labels [B] of a batch of P classes x K
images (the trainer passes the classes' indices in the training split; only which items share
a class matters). The contrastive and triplet losses are three parts: a miner
(`oneshot.miners`) picks the pairs or triplets of the batch, the loss scores each one it is
given (`contrastive_terms`, `triplet_terms`), and a reduction (`oneshot.reduce`, the one place
that turns terms into a scalar) averages them; `lossparams.PAIR_RULES` and `TRIPLET_RULES` say
which miner and reduction each setting names. Distances come from `oneshot.distances` (smaller = closer for
every metric). A batch with nothing to learn from returns a zero that is still connected to
`emb` (never NaN). Every default is the built-in's in `oneshot.lossparams.BUILTIN_PARAMS`.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import miners, reduce
from .distances import pairwise
from .errors import ConfigError
from .lossparams import BUILTIN_PARAMS, LOSS_CHOICES, PAIR_RULES, TRIPLET_RULES


def _rule(rules: dict, key: str, value: str):
    if value not in rules:
        raise ConfigError(f"unknown {key} {value!r}; choose one of {', '.join(rules)}")
    return rules[value]


# ---- terms: what a loss scores on the pairs or triplets it is given ----

def contrastive_terms(d: torch.Tensor, pairs: miners.Pairs, margin: float) -> torch.Tensor:
    """Contrastive terms (Hadsell, Chopra & LeCun 2006): d [B, B] distances, pairs of n -> [n].

    With D = d[a, b]: D^2 / 2 for a same-class pair, max(0, margin - D)^2 / 2 for another."""
    dp = d[pairs.a, pairs.b]
    return torch.where(pairs.same, 0.5 * dp.pow(2), 0.5 * F.relu(margin - dp).pow(2))


def triplet_terms(d: torch.Tensor, triplets: miners.Triplets, margin: float) -> torch.Tensor:
    """Triplet terms (Schroff et al. 2015): d [B, B] distances, m triplets -> [m],
    max(0, D(a,p) - D(a,n) + margin)."""
    a, p, n = triplets
    return F.relu(d[a, p] - d[a, n] + margin)


# ---- losses ----

def contrastive(
    emb: torch.Tensor,
    labels: torch.Tensor,
    margin: float = BUILTIN_PARAMS["contrastive"]["margin"],
    metric: str = BUILTIN_PARAMS["contrastive"]["distance"],
    pos_weight: str = BUILTIN_PARAMS["contrastive"]["pos_weight"],
    stats: dict | None = None,
) -> torch.Tensor:
    """Contrastive loss over the pairs of the batch, D the distance under `metric`.

    emb [B, D], labels [B] -> scalar. Per pair (`contrastive_terms`), with Y = 1 for a
    dissimilar pair: L = (1 - Y) * D^2 / 2 + Y * max(0, margin - D)^2 / 2. pos_weight (`PAIR_RULES`):
    - "balanced": all pairs i < j; mean(positive pairs) + mean(negative pairs): a P x K batch has
      only P*K*(K-1)/2 positive pairs among B*(B-1)/2, so a plain mean would be dominated by negatives.
    - "active": all pairs; the negatives averaged over those still inside the margin only, so
      easy negatives do not dilute the hard ones.
    - "mean": all pairs; the plain mean over all of them.
    - "hard": per anchor only its farthest positive and its closest negative (the pairs batch-hard
      triplet mining would pick): mean over anchors of the positive term + mean over anchors of the
      negative term.
    Given `stats`, puts in it `mining_stats` (active: the fraction of its negative pairs still
    inside the margin; a positive pair always has a loss).
    """
    mine, reduction = _rule(PAIR_RULES, "pos_weight", pos_weight)
    d = pairwise(emb, emb, metric)
    pairs = mine(labels, d)
    terms = contrastive_terms(d, pairs, margin)
    if stats is not None:
        stats.update(mining_stats(d, labels, (terms > 0) & ~pairs.same, ~pairs.same))
    return reduction(terms, pairs.same, emb)


def triplet(
    emb: torch.Tensor,
    labels: torch.Tensor,
    margin: float = BUILTIN_PARAMS["triplet"]["margin"],
    metric: str = BUILTIN_PARAMS["triplet"]["distance"],
    mining: str = BUILTIN_PARAMS["triplet"]["mining"],
    stats: dict | None = None,
) -> torch.Tensor:
    """Triplet loss max(0, D(a,p) - D(a,n) + margin) on the triplets mined in the batch.

    emb [B, D], labels [B] -> scalar. mining (`TRIPLET_RULES`):
    - "all": every valid triplet (a, p, n), averaged over those with non-zero loss
      (batch-all, Hermans et al. 2017); 0 when none is non-zero.
    - "hard": per anchor the farthest positive and the closest negative (batch-hard), mean
      over anchors that have both.
    - "semihard" (FaceNet; the rule of TF-addons' triplet_semihard_loss): for each
      anchor-positive pair the closest negative with D(a,n) > D(a,p); if no negative is
      farther than the positive, the farthest negative of the anchor. Mean over all
      anchor-positive pairs whose anchor has a negative.
    Given `stats`, puts in it `mining_stats` (active: the fraction of its triplets with a non-zero loss).
    """
    mine, reduction = _rule(TRIPLET_RULES, "mining", mining)
    d = pairwise(emb, emb, metric)
    terms = triplet_terms(d, mine(labels, d), margin)
    if stats is not None:
        stats.update(mining_stats(d, labels, terms > 0, torch.ones_like(terms, dtype=torch.bool)))
    return reduction(terms, emb)


def mining_stats(d: torch.Tensor, labels: torch.Tensor, active: torch.Tensor, counted: torch.Tensor) -> dict:
    """What a mined loss shows while it trains, as detached scalars on d's device (no host sync):
    "active", the fraction of the `counted` terms [n] (bool) that are `active` [n] (bool, a
    non-zero loss); "hardest_pos" / "hardest_neg", the mean over anchors of the distance to its
    farthest positive / closest negative in the batch (d [B, B], labels [B]); 0 where none."""
    pos, neg = miners.masks(labels)
    d = d.detach().float()

    def masked_mean(v, m):
        return torch.where(m, v, 0).sum() / m.sum().clamp_min(1)

    return {"active": (active & counted).sum() / counted.sum().clamp_min(1),
            "hardest_pos": masked_mean(d.masked_fill(~pos, float("-inf")).amax(1), pos.any(1)),
            "hardest_neg": masked_mean(d.masked_fill(~neg, float("inf")).amin(1), neg.any(1))}


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
    i, j, same = miners.all_pairs(labels)
    logits = head(emb[i], emb[j])
    bce = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype), reduction="none")
    return reduce.balanced(bce, same, emb)


def proto(
    emb: torch.Tensor, labels: torch.Tensor, n_support: int, metric: str = BUILTIN_PARAMS["proto"]["distance"]
) -> torch.Tensor:
    """Prototypical loss (Snell et al. 2017) inside one batch.

    emb [B, D], labels [B] -> scalar. Per class, its first n_support items in batch order are
    the support (their mean is the prototype) and the rest are queries; the loss is the mean
    cross-entropy of the queries over -distance to every prototype. Every class needs at
    least n_support items; a batch without queries gives a connected 0. ProtoNet's own
    metric is "sqeuclidean".
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
        return reduce.zero(emb)
    logits = -pairwise(emb[queries], prototypes, metric)  # [Q, C]
    return F.cross_entropy(logits, cls[queries])


# ---- losses as modules: what the trainer calls, loss(emb, labels) -> scalar ----

class FunctionLoss(nn.Module):
    """A loss function with its keyword arguments bound: forward(emb, labels) = fn(emb, labels, **params).

    Holds no parameters of its own (unless `fn` is itself a module). Where `fn` takes `stats`
    (a mined loss), `self.stats` holds what its last call put there (`mining_stats`)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params):
        super().__init__()
        self.fn = fn
        self.params = params
        self.stats = {}
        self._takes_stats = "stats" in inspect.signature(fn).parameters

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """emb [B, D], labels [B] -> scalar."""
        if not self._takes_stats:
            return self.fn(emb, labels, **self.params)
        self.stats = {}
        return self.fn(emb, labels, stats=self.stats, **self.params)

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

    def __init__(self, dim: int, num_classes: int, head: str = BUILTIN_PARAMS["softmax"]["head"],
                 scale: float = BUILTIN_PARAMS["softmax"]["scale"]):
        super().__init__()
        if head not in LOSS_CHOICES["head"]:
            raise ConfigError(f"unknown softmax head {head!r}; choose one of {', '.join(LOSS_CHOICES['head'])}")
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
