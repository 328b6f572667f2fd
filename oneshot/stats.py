"""Confidence intervals and paired comparisons over per-episode accuracies."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as st


def summarize(acc) -> dict:
    """Per-episode accuracies [E] -> mean, 95% normal CI half-width `1.96 s / sqrt(E)`,
    Student-t half-width, sample std (ddof 1) and E. Fractions in, fractions out."""
    a = np.asarray(acc, dtype=np.float64)
    n = len(a)
    if n == 0:
        raise ValueError("no episodes to summarise")
    s = float(a.std(ddof=1)) if n > 1 else 0.0
    se = s / math.sqrt(n)
    t = float(st.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
    return {"mean": float(a.mean()), "ci95": 1.96 * se, "t_ci95": t * se, "std": s, "episodes": n}


def paired(a, b) -> dict:
    """Compare two configurations scored on the same episodes (arrays [E], same order).

    Returns the mean difference a - b with its 95% CI (normal), the paired t-test p-value and
    the Wilcoxon signed-rank p-value (NaN when every difference is zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same episodes: shapes {a.shape} vs {b.shape}")
    d = a - b
    s = summarize(d)
    if np.all(d == 0):
        p_t = p_w = 1.0
    else:
        p_t = float(st.ttest_rel(a, b).pvalue)
        p_w = float(st.wilcoxon(a, b).pvalue)
    return {"diff": s["mean"], "diff_ci95": s["ci95"], "p_t": p_t, "p_wilcoxon": p_w}


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, np.float64)
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj
