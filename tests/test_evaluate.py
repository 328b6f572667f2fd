"""The evaluator against a naive per-episode loop, and the CI against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from oneshot.evaluate import embed_split, evaluate, score_episodes
from oneshot.stats import holm, paired, summarize

from test_episodes import toy_split
from oneshot.episodes import sample_episodes


def naive_accuracy(emb, episode, n_shot, classifier, distance):
    """One episode, classified query by query with explicit loops."""
    n_way = episode.shape[0]
    correct = total = 0
    for c in range(n_way):
        for q in episode[c, n_shot:]:
            best, best_d = None, math.inf
            for k in range(n_way):
                shots = [emb[i] for i in episode[k, :n_shot]]
                cands = [sum(shots) / n_shot] if classifier == "nearest-prototype" else shots
                for s in cands:
                    if distance == "euclidean":
                        d = float(((emb[q] - s) ** 2).sum().sqrt())
                    else:
                        d = 1 - float(torch.dot(emb[q], s) / (emb[q].norm() * s.norm()))
                    if d < best_d:
                        best, best_d = k, d
            correct += best == c
            total += 1
    return correct / total


@pytest.mark.parametrize("classifier", ["nearest-support", "nearest-prototype"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("n_shot", [1, 3])
def test_vectorised_scores_match_a_naive_loop(classifier, distance, n_shot):
    s = toy_split(n_classes=10, per_class=8)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 6, generator=g)
    emb = centres[s.labels] + 0.9 * torch.randn(len(s.labels), 6, generator=g)
    ep = sample_episodes(s, 5, n_shot, 3, 40, seed=1)
    got = score_episodes(emb, ep, n_shot, classifier, distance)
    want = [naive_accuracy(emb, e, n_shot, classifier, distance) for e in ep]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert 0.2 < float(got.mean()) < 1.0


def test_chunking_does_not_change_scores(monkeypatch):
    import oneshot.evaluate as ev

    s = toy_split()
    emb = torch.randn(len(s.labels), 4, generator=torch.Generator().manual_seed(0))
    ep = sample_episodes(s, 5, 1, 5, 100, seed=0)
    whole = score_episodes(emb, ep, 1)
    monkeypatch.setattr(ev, "_CHUNK_FLOATS", 5 * 6 * 4 * 7)  # 7 episodes per chunk
    assert torch.equal(whole, score_episodes(emb, ep, 1))


def test_each_image_is_embedded_exactly_once():
    s = toy_split(n_classes=7, per_class=9)
    seen = []

    def encode(x):
        seen.append(len(x))
        return x.flatten(1)

    embed_split(encode, s, batch_size=10, progress=False)
    assert sum(seen) == 63


def test_evaluate_reports_summary_and_per_episode():
    s = toy_split()
    s.images = torch.randint(0, 255, s.images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ep = sample_episodes(s, 5, 1, 2, 30, seed=0)
    r = evaluate(lambda x: x.flatten(1), s, ep, 1, progress=False)
    assert len(r["per_episode"]) == 30 and r["episodes"] == 30
    assert r["mean"] == pytest.approx(np.mean(r["per_episode"]))


def test_bad_classifier_or_width():
    emb = torch.zeros(10, 2)
    ep = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="classifier"):
        score_episodes(emb, ep, 1, "knn")
    with pytest.raises(ValueError, match="cannot hold"):
        score_episodes(emb, ep, 2)


def test_confidence_intervals_match_scipy():
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.6, 1.0, 600)
    s = summarize(acc)
    se = stats.sem(acc)
    assert s["mean"] == pytest.approx(acc.mean())
    assert s["ci95"] == pytest.approx(1.96 * acc.std(ddof=1) / math.sqrt(600))
    lo, hi = stats.t.interval(0.95, 599, loc=acc.mean(), scale=se)
    assert s["t_ci95"] == pytest.approx((hi - lo) / 2)
    assert s["t_ci95"] > s["ci95"]


def test_paired_comparison_and_holm():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, 500)
    b = np.clip(a - 0.02 + rng.normal(0, 0.05, 500), 0, 1)
    r = paired(a, b)
    assert r["diff"] == pytest.approx((a - b).mean())
    assert r["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_t"] < 1e-3
    assert paired(a, a)["p_t"] == 1.0
    with pytest.raises(ValueError, match="same episodes"):
        paired(a, b[:10])
    adj = holm([0.01, 0.04, 0.03, 0.5])
    assert adj.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
