"""Verification, "the same class or not?", scored on a fixed, seeded set of image pairs.

`sample_pairs` draws a balanced set of same-class and different-class pairs from a split (the
same pairs for every run of a study: one seed); `pair_scores` scores them from the cached
embeddings (negative distance, or the Koch head's probability: higher = more likely the same);
`verification_metrics` gives ROC AUC, equal error rate and TAR at fixed FARs from
scikit-learn's ROC curve, each with a 95% percentile-bootstrap CI (`scipy.stats.bootstrap`,
same and different pairs resampled separately). The interval covers the draw of pairs only;
pairs share images, so it is somewhat narrow. scikit-learn is imported on first use, never by
`import oneshot`.
"""

from __future__ import annotations

import numpy as np
import torch

from .distances import paired
from .errors import ConfigError, OneshotError

FARS = (1e-3, 1e-2)
PAIRS = 20_000
RESAMPLES = 1000
ROC_POINTS = np.logspace(-4, 0, 41)  # false accept rates at which a record keeps its ROC curve


def sample_pairs(labels: torch.Tensor, n_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced verification pairs of a split with M images.

    labels [M] (class of each image) -> pairs [P, 2] (image indices, long), same [P] (bool),
    P = n_pairs rounded down to even: P/2 same-class pairs (an image with another image of its
    class, uniformly) then P/2 different-class pairs (an image with an image of another class,
    uniformly). The first image of each pair is uniform over the images that can take part.
    """
    labels = labels.long().cpu()
    counts = torch.bincount(labels)
    if n_pairs < 2:
        raise ConfigError(f"a verification set needs at least 2 pairs, not {n_pairs}")
    if int((counts > 0).sum()) < 2 or int(counts.max()) < 2:
        raise ConfigError("verification pairs need at least 2 classes and a class with 2 images")
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)  # images sorted by class
    start = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - start[labels[order]]  # position of each image in its class
    half = n_pairs // 2

    def uniform(high: torch.Tensor) -> torch.Tensor:  # one integer in [0, high) per entry
        return (torch.rand(len(high), generator=g, dtype=torch.float64) * high).long().clamp_max(high - 1)

    eligible = torch.nonzero(counts[labels] >= 2).squeeze(1)
    a = eligible[uniform(torch.full((half,), len(eligible)))]
    c = labels[a]
    b = order[start[c] + (rank[a] + 1 + uniform(counts[c] - 1)) % counts[c]]
    a2 = torch.randint(len(labels), (half,), generator=g)
    c2 = labels[a2]
    r = uniform(len(labels) - counts[c2])
    b2 = order[r + (r >= start[c2]).long() * counts[c2]]
    pairs = torch.stack([torch.cat([a, a2]), torch.cat([b, b2])], 1)
    same = torch.cat([torch.ones(half, dtype=torch.bool), torch.zeros(half, dtype=torch.bool)])
    return pairs, same


@torch.no_grad()
def pair_scores(emb: torch.Tensor, pairs: torch.Tensor, scorer: str, head=None) -> np.ndarray:
    """Similarity of each pair, higher = more likely the same class.

    emb [M, D], pairs [P, 2] -> float64 [P]. scorer: a distance of `oneshot.distances`
    (score = -distance) or "koch-head" (the sigmoid of the Koch head `head` of a Koch run).
    """
    e1, e2 = emb[pairs[:, 0]], emb[pairs[:, 1]]
    if scorer == "koch-head":
        if head is None:
            raise ConfigError("the koch-head scorer needs the head of a run trained with loss 'koch'")
        s = head.similarity(e1, e2)
    else:
        s = -paired(e1, e2, scorer)
    return s.double().numpy()


def sklearn_metrics():
    """scikit-learn's metrics module, or an OneshotError that says how to install it."""
    try:
        from sklearn import metrics
    except ImportError as e:
        raise OneshotError(f"verification metrics need scikit-learn ({e}): pip install 'oneshot[verification]' "
                           "(make install installs it)") from e
    return metrics


def _metrics(same: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[AUC, EER, TAR at each FAR of FARS]."""
    fpr, tpr, _ = sklearn_metrics().roc_curve(same, scores)
    return _from_roc(fpr, tpr)


def _from_roc(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    return np.array([sklearn_metrics().auc(fpr, tpr), _eer(fpr, tpr), *_tar(fpr, tpr, FARS)])


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where false accepts equal false rejects, linearly interpolated on the ROC."""
    fnr = 1 - tpr
    i = int(np.argmax(fpr >= fnr))  # fpr rises and fnr falls along the curve; the first crossing
    if i == 0:
        return float(fpr[0])
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def _tar(fpr: np.ndarray, tpr: np.ndarray, fars) -> list[float]:
    """True accept rate at the best threshold whose false accept rate is at most each far."""
    return [float(tpr[np.searchsorted(fpr, far, side="right") - 1]) for far in fars]


def verification_metrics(scores, same, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """ROC metrics of pair scores with 95% percentile-bootstrap CIs.

    scores [P] (higher = same), same [P] (bool) -> {"roc_auc", "eer", "tar_at_far": {far: tar}},
    each value a dict {"value", "ci95": [low, high], "se"}, plus "pairs" and "roc": the true
    accept rate at the false accept rates ROC_POINTS (for plots).
    """
    from scipy.stats import bootstrap

    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if not np.isfinite(scores).all():
        raise ValueError("verification scores hold NaN or inf: the embeddings are not finite")
    pos, neg = scores[same], scores[~same]
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError("verification needs at least 2 same and 2 different pairs")
    fpr, tpr, _ = sklearn_metrics().roc_curve(same, scores)
    point = _from_roc(fpr, tpr)

    def stat(p, n):
        return _metrics(np.r_[np.ones(len(p), bool), np.zeros(len(n), bool)], np.r_[p, n])

    boot = bootstrap((pos, neg), stat, paired=False, vectorized=False, n_resamples=resamples,
                     method="percentile", rng=np.random.default_rng(seed))
    lo, hi, se = boot.confidence_interval.low, boot.confidence_interval.high, boot.standard_error
    entry = [{"value": float(point[i]), "ci95": [float(lo[i]), float(hi[i])], "se": float(se[i])}
             for i in range(len(point))]
    return {"roc_auc": entry[0], "eer": entry[1],
            "tar_at_far": {f"{far:g}": e for far, e in zip(FARS, entry[2:])},
            "pairs": {"same": int(len(pos)), "different": int(len(neg))},
            "roc": {"far": ROC_POINTS.tolist(), "tar": _tar(fpr, tpr, ROC_POINTS)}}


def flat(metrics: dict) -> dict:
    """The point values of `verification_metrics` as the flat fields `oneshot eval` prints:
    roc_auc, eer, tar_at_far {far: tar} (fractions)."""
    return {"roc_auc": metrics["roc_auc"]["value"], "eer": metrics["eer"]["value"],
            "tar_at_far": {k: v["value"] for k, v in metrics["tar_at_far"].items()}}
