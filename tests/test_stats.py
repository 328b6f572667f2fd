"""Tests for oneshot.stats: episode-level summaries, paired tests, Holm, and the crossed
(seeds x episodes) intervals, whose coverage is checked on simulated studies.

Coverage tolerance: 2,000 simulated studies give a Monte Carlo SE of sqrt(.95 * .05 / 2000)
= 0.005 at 95%; we accept [0.93, 0.97] (about 4 SE), leaving ~0.01 for the approximation error
of the method itself. All draws use fixed numpy Generator seeds, so the figures are fixed."""

import math

import numpy as np
import pytest
from scipy import stats

from oneshot.stats import _crossed_se, crossed, holm, paired, paired_crossed, summarize

N_STUDIES = 2000
LO, HI = 0.93, 0.97
MU = 0.7


def simulate(rng, n, seeds, episodes, sd_seed, sd_episode, sd_inter):
    """n studies [n, S, E] of acc = mu + a_s + b_e + c_se (normal components)."""
    return (MU + sd_seed * rng.standard_normal((n, seeds, 1))
            + sd_episode * rng.standard_normal((n, 1, episodes))
            + sd_inter * rng.standard_normal((n, seeds, episodes)))


def coverage(studies, truth=MU):
    return float(np.mean([abs(r["mean"] - truth) <= r["ci95"] for r in map(crossed, studies)]))


# ---- existing functions -------------------------------------------------------------------

def test_summarize_matches_hand_computation():
    acc = np.random.default_rng(0).uniform(0.5, 1.0, 300)
    s = summarize(acc)
    se = stats.sem(acc)
    assert s["mean"] == pytest.approx(acc.mean())
    assert s["std"] == pytest.approx(np.std(acc, ddof=1))
    assert s["ci95"] == pytest.approx(1.96 * se)
    assert s["t_ci95"] == pytest.approx(stats.t.ppf(0.975, 299) * se)
    assert s["episodes"] == 300
    one = summarize([0.8])
    assert one["ci95"] == 0.0 and math.isnan(one["t_ci95"])
    with pytest.raises(ValueError):
        summarize([])


def test_paired_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, 400)
    b = np.clip(a - 0.01 + rng.normal(0, 0.05, 400), 0, 1)
    r = paired(a, b)
    assert r["diff"] == pytest.approx((a - b).mean())
    assert r["diff_ci95"] == pytest.approx(1.96 * stats.sem(a - b))
    assert r["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    same = paired(a, a)
    assert same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0 and same["diff"] == 0.0
    with pytest.raises(ValueError, match="same episodes"):
        paired(a, b[:5])


def test_holm_hand_example():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(.03, 2*.03), max(.06, 1*.04)
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.6]).tolist() == pytest.approx([0.4, 0.6])
    assert holm([0.5, 0.9, 0.01]).tolist() == pytest.approx([1.0, 1.0, 0.03])


# ---- crossed: exact reductions and bookkeeping --------------------------------------------

def test_single_seed_reduces_exactly_to_summarize_and_paired():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.4, 1.0, 600)
    b = np.clip(a - 0.02 + rng.normal(0, 0.08, 600), 0, 1)
    s = summarize(a)
    for c in (crossed(a), crossed(a[None, :])):
        assert c["ci95"] == s["ci95"] and c["mean"] == s["mean"]
        assert c["ci95"] == 1.96 * (np.std(a, ddof=1) / math.sqrt(600))
        assert (c["seeds"], c["episodes"], c["df"]) == (1, 600, 599.0)
        assert math.isnan(c["seed_sd"])
    r, p = paired_crossed(a[None], b[None]), paired(a, b)
    assert r["diff"] == p["diff"] and r["diff_ci95"] == p["diff_ci95"] and r["seeds"] == 1
    assert r["p"] == p["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert paired_crossed(a, b) == r


def test_crossed_bookkeeping_and_errors():
    x = simulate(np.random.default_rng(3), 1, 4, 50, 0.02, 0.1, 0.05)[0]
    c = crossed(x)
    assert c["mean"] == pytest.approx(x.mean(axis=1).mean())
    assert c["seed_sd"] == pytest.approx(np.std(x.mean(axis=1), ddof=1))
    assert (c["seeds"], c["episodes"]) == (4, 50)
    assert 3.0 <= c["df"] <= 49.0 and c["method"] == "crossed-anova-cochran-cox"
    assert c["ci95"] > crossed(x[:1])["ci95"]
    const = crossed(np.full((3, 20), 0.8))
    assert const["ci95"] == 0.0 and const["mean"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        crossed(np.zeros((3, 1)))
    with pytest.raises(ValueError):
        crossed(np.zeros((2, 3, 4)))


def test_variance_formula_matches_simulation():
    """Var(grand mean) = v_a/S + v_b/E + v_c/(S E) and the ANOVA estimate of it is unbiased."""
    s_, e_, va, vb, vc = 4, 200, 0.02**2, 0.1**2, 0.06**2
    x = simulate(np.random.default_rng(4), N_STUDIES, s_, e_, *map(math.sqrt, (va, vb, vc)))
    true_var = va / s_ + vb / e_ + vc / (s_ * e_)
    est = np.array([_crossed_se(xi) for xi in x])
    assert np.var(est[:, 0], ddof=1) == pytest.approx(true_var, rel=0.1)
    assert np.mean(est[:, 1] ** 2) == pytest.approx(true_var, rel=0.1)


# ---- crossed: coverage on simulated studies -----------------------------------------------

SETTINGS = {  # seeds, episodes, sd_seed, sd_episode, sd_interaction
    "seed variance zero": (3, 600, 0.0, 0.07, 0.058),
    "seed variance dominant S=3": (3, 600, 0.03, 0.07, 0.058),
    "seed variance dominant S=5": (5, 400, 0.03, 0.07, 0.058),
    "episode variance dominant": (5, 1000, 0.002, 0.15, 0.05),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_crossed_coverage(name):
    rng = np.random.default_rng(10 + list(SETTINGS).index(name))
    cov = coverage(simulate(rng, N_STUDIES, *SETTINGS[name]))
    assert LO <= cov <= HI, f"{name}: coverage {cov:.4f}"


def test_episode_only_and_seed_only_intervals_under_cover():
    """Why the crossed method is needed: each one-way interval misses a variance part."""
    seed_heavy = simulate(np.random.default_rng(20), N_STUDIES, 3, 600, 0.03, 0.07, 0.058)
    pooled = (summarize(x.mean(axis=0)) for x in seed_heavy)  # episode-only, seed-averaged
    ep_only = np.mean([abs(s["mean"] - MU) <= s["ci95"] for s in pooled])
    assert ep_only < 0.6, ep_only
    assert LO <= coverage(seed_heavy) <= HI
    ep_heavy = simulate(np.random.default_rng(21), N_STUDIES, 5, 400, 0.0, 0.1, 0.05)
    seed_means = (summarize(x.mean(axis=1)) for x in ep_heavy)  # t over the S seed means
    seed_only = np.mean([abs(s["mean"] - MU) <= s["t_ci95"] for s in seed_means])
    assert seed_only < 0.8, seed_only
    assert LO <= coverage(ep_heavy) <= HI


def test_interval_widens_with_seed_variance():
    rng = np.random.default_rng(30)
    n, s_, e_ = 300, 3, 400
    z = rng.standard_normal((n, s_, 1))  # the same draws, scaled by the seed SD
    noise = 0.08 * rng.standard_normal((n, 1, e_)) + 0.05 * rng.standard_normal((n, s_, e_))
    widths = [np.mean([crossed(MU + sd * zi + ni)["ci95"] for zi, ni in zip(z, noise)])
              for sd in (0.0, 0.005, 0.01, 0.02, 0.04, 0.08)]
    assert all(w1 > w0 for w0, w1 in zip(widths, widths[1:])), widths
    assert widths[-1] > 5 * widths[0]


# ---- paired_crossed -----------------------------------------------------------------------

def matched_pairs(rng, n, seeds, episodes, delta):
    """a shares its seed and episode effects with b; d = a - b has its own crossed parts."""
    b = simulate(rng, n, seeds, episodes, 0.02, 0.1, 0.05)
    d = simulate(rng, n, seeds, episodes, 0.01, 0.03, 0.04) - MU + delta
    return b + d, b


@pytest.mark.parametrize("delta", [0.0, 0.01])
def test_paired_crossed_coverage_and_null_rejection(delta):
    a, b = matched_pairs(np.random.default_rng(40), N_STUDIES, 3, 500, delta)
    res = [paired_crossed(ai, bi) for ai, bi in zip(a, b)]
    diff = np.array([r["diff"] for r in res])
    half = np.array([r["diff_ci95"] for r in res])
    p = np.array([r["p"] for r in res])
    assert diff == pytest.approx((a - b).mean(axis=(1, 2)))
    cov = np.mean(np.abs(diff - delta) <= half)
    assert LO <= cov <= HI, cov
    # the p-value and the interval use the same statistic and df: p < .05 <=> 0 outside the CI
    assert np.array_equal(p < 0.05, np.abs(diff) > half)
    if delta == 0.0:  # under the null: rejection rates near the nominal levels
        assert 0.03 <= np.mean(p < 0.05) <= 0.07
        assert 0.16 <= np.mean(p < 0.2) <= 0.24


def test_paired_crossed_edge_cases():
    rng = np.random.default_rng(50)
    a = rng.uniform(0.5, 1.0, (3, 100))
    same = paired_crossed(a, a)
    assert same == {"diff": 0.0, "diff_ci95": 0.0, "p": 1.0, "seeds": 3}
    assert paired_crossed(a, a - 0.25)["p"] < 1e-12  # a constant difference
    assert paired_crossed(np.full((2, 5), 0.5), np.full((2, 5), 0.25))["p"] == 0.0
    strong = paired_crossed(a, a - 0.05 + 0.01 * rng.standard_normal((3, 100)))
    assert strong["diff"] == pytest.approx(0.05, abs=0.005) and strong["p"] < 1e-3
    with pytest.raises(ValueError, match="matched seeds"):
        paired_crossed(a, a[:2])
    with pytest.raises(ValueError, match="matched seeds"):
        paired_crossed(a, a[:, :50])
