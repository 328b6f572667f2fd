"""Confidence intervals and paired comparisons over per-episode accuracies.

Single seed: `summarize` / `paired` over episodes [E]. Several training seeds scored on the same
episodes (seeds and episodes crossed, arrays [S, E]): `crossed` / `paired_crossed`, which add the
seed and seed x episode variance to the episode part (two-way random-effects ANOVA)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special
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
    the Wilcoxon signed-rank p-value (both 1.0 when every difference is zero)."""
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


def _crossed_se(x: np.ndarray) -> tuple[float, float, float]:
    """x [S, E] with S >= 2, E >= 2 -> (grand mean, standard error, effective df).

    Model x[s, e] = mu + a_s + b_e + c_se. E[MS_seed] = E v_a + v_c, E[MS_ep] = S v_b + v_c,
    E[MS_res] = v_c, so Var(mean) = v_a/S + v_b/E + v_c/(S E) = (MS_seed + MS_ep - MS_res)/(S E)
    = seed part (MS_seed - MS_res)/(S E) + episode part MS_ep/(S E). A component estimated below
    zero is set to zero: seed part >= 0 and episode part >= MS_res/(S E), so the variance is never
    below the episode-only one of the seed-averaged episodes; unbiased when nothing is clamped.
    Critical value: Cochran-Cox, the t quantiles of the parts (df S - 1, and E - 1 or
    (S - 1)(E - 1)) averaged with the parts as weights; df is the one giving that quantile."""
    n_s, n_e = x.shape
    grand = x.mean()
    if np.ptp(x) == 0.0:  # all equal: no rounding noise in the interval
        return float(grand), 0.0, float("nan")
    seed_dev = x.mean(axis=1) - grand
    ep_dev = x.mean(axis=0) - grand
    resid = x - grand - seed_dev[:, None] - ep_dev[None, :]
    ms_seed = n_e * float((seed_dev**2).sum()) / (n_s - 1)
    ms_ep = n_s * float((ep_dev**2).sum()) / (n_e - 1)
    ms_res = float((resid**2).sum()) / ((n_s - 1) * (n_e - 1))
    seed_part = max(ms_seed - ms_res, 0.0) / (n_s * n_e)
    ep_part, df_ep = (ms_ep, n_e - 1) if ms_ep > ms_res else (ms_res, (n_s - 1) * (n_e - 1))
    ep_part /= n_s * n_e
    var = seed_part + ep_part
    if var <= 0.0:
        return float(grand), 0.0, float("nan")
    if seed_part == 0.0:
        return float(grand), math.sqrt(var), float(df_ep)
    t_seed, t_ep = st.t.ppf(0.975, n_s - 1), st.t.ppf(0.975, df_ep)
    t_star = (seed_part * t_seed + ep_part * t_ep) / var
    lo, hi = sorted((float(n_s - 1), float(df_ep)))
    df = float(np.clip(special.stdtridf(0.975, t_star), lo, hi))
    return float(grand), math.sqrt(var), df


def _t_half(se: float, df: float) -> float:
    return float(st.t.ppf(0.975, df)) * se if se > 0.0 else 0.0


def _as_seeds(acc) -> np.ndarray:
    x = np.asarray(acc, np.float64)
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"need accuracies [S, E] (or [E]), got shape {np.shape(acc)}")
    return x


def crossed(acc) -> dict:
    """Accuracies [S, E] (every seed on the same E episodes) or [E] -> mean, 95% CI half-width
    with seed, episode and interaction variance, seeds, episodes, seed_sd, df, method.

    S == 1: exactly `summarize` (1.96 s / sqrt(E); df E - 1; seed_sd NaN, not estimable).
    S >= 2 (needs E >= 2): two-way random-effects ANOVA variance, Cochran-Cox t quantile (see
    `_crossed_se`); the seed part has only S - 1 df, so with S = 3 and a dominant seed variance
    the interval is wide (t_2 = 4.30). Plain Satterthwaite df under-covers there (~0.92)."""
    x = _as_seeds(acc)
    n_s, n_e = x.shape
    if n_s == 1:
        s = summarize(x[0])
        return {"mean": s["mean"], "ci95": s["ci95"], "seeds": 1, "episodes": n_e,
                "seed_sd": float("nan"), "df": float(n_e - 1), "method": "episodes-normal"}
    if n_e < 2:
        raise ValueError("crossed() needs at least 2 episodes per seed")
    mean, se, df = _crossed_se(x)
    return {"mean": mean, "ci95": _t_half(se, df), "seeds": n_s, "episodes": n_e,
            "seed_sd": float(x.mean(axis=1).std(ddof=1)), "df": df, "method": "crossed-anova-cochran-cox"}


def paired_crossed(a, b) -> dict:
    """Compare two configurations, arrays [S, E] (or [E]) with matched seeds and the same
    episodes: d = a - b per (seed, episode) -> diff, diff_ci95 (`crossed` on d), two-sided p
    from the same t statistic and df, seeds. S == 1: exactly `paired` (p = ttest_rel)."""
    x, y = _as_seeds(a), _as_seeds(b)
    if x.shape != y.shape:
        raise ValueError(f"paired_crossed needs matched seeds and the same episodes: "
                         f"shapes {np.shape(a)} vs {np.shape(b)}")
    n_s = x.shape[0]
    if n_s == 1:
        r = paired(x[0], y[0])
        return {"diff": r["diff"], "diff_ci95": r["diff_ci95"], "p": r["p_t"], "seeds": 1}
    if x.shape[1] < 2:
        raise ValueError("paired_crossed() needs at least 2 episodes per seed")
    diff, se, df = _crossed_se(x - y)
    if se == 0.0:  # every (seed, episode) difference is the same
        p = 1.0 if diff == 0.0 else 0.0
    else:
        p = float(2 * st.t.sf(abs(diff) / se, df))
    return {"diff": diff, "diff_ci95": _t_half(se, df), "p": p, "seeds": n_s}
