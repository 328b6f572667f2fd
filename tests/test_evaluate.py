"""The evaluator against a naive per-episode loop, and the CI against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from oneshot.evaluate import embed_split, evaluate, score_episodes
from oneshot.stats import holm, paired, summarize

from test_episodes import toy_split
from oneshot.data.episodes import sample_episodes


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


def id_split(n_classes=7, per_class=9):
    """A toy split whose image i carries its own index in pixel (0, 0, 0); other pixels are 255."""
    s = toy_split(n_classes=n_classes, per_class=per_class)
    n = len(s.labels)
    assert n <= 255
    s.images = torch.full((n, 1, 2, 2), 255, dtype=torch.uint8)
    s.images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    s.mean, s.std = (0.5,), (0.25,)
    return s


def recording_encoder(split):
    """An encoder that records, per call, the image ids it was given; it embeds image i as [i, i]."""
    calls = []

    def encode(x):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 2, 2)
        # the input is normalised: (pixel / 255 - mean) / std
        torch.testing.assert_close(x[:, 0, 1:, :], torch.full_like(x[:, 0, 1:, :], (1 - 0.5) / 0.25))
        ids = torch.round((x[:, 0, 0, 0] * split.std[0] + split.mean[0]) * 255).long()
        calls.append(ids.tolist())
        return torch.stack([ids.float(), ids.float()], 1)

    return encode, calls


def test_each_image_is_embedded_exactly_once_in_order():
    s = id_split()
    encode, calls = recording_encoder(s)
    emb = embed_split(encode, s, batch_size=10, progress=False)
    seen = [i for c in calls for i in c]
    assert seen == list(range(63)), "every image once, in split order"
    assert all(len(c) <= 10 for c in calls)
    assert emb.shape == (63, 2) and emb.dtype == torch.float32
    assert emb[:, 0].long().tolist() == list(range(63)), "row i of the result embeds image i"


def test_only_the_given_indices_are_embedded_in_their_order():
    s = id_split()
    encode, calls = recording_encoder(s)
    idx = torch.randperm(63, generator=torch.Generator().manual_seed(3))[:25]
    emb = embed_split(encode, s, batch_size=8, progress=False, indices=idx)
    assert [i for c in calls for i in c] == idx.tolist()
    assert all(len(c) <= 8 for c in calls)
    assert emb[:, 0].long().tolist() == idx.tolist()


def class_images(n_classes=10, per_class=12, side=4, seed=0):
    """A toy split of noisy class prototypes: uint8 [M, 1, side, side]."""
    s = toy_split(n_classes=n_classes, per_class=per_class)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 215, (n_classes, side * side))
    pix = centres[s.labels.numpy()] + rng.normal(0, 45, (len(s.labels), side * side))
    s.images = torch.from_numpy(np.clip(np.rint(pix), 0, 255).astype(np.uint8)).view(-1, 1, side, side)
    s.mean, s.std = (0.4,), (0.3,)
    return s


@pytest.mark.parametrize("classifier", ["nearest-support", "nearest-prototype"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_evaluate_summary_matches_an_independent_computation(classifier, distance):
    s = class_images()
    w = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    n_shot, episodes = 2, 40
    ep = sample_episodes(s, 5, n_shot, 3, episodes, seed=0)
    r = evaluate(lambda x: x.flatten(1) @ w, s, ep, n_shot, classifier, distance, progress=False, batch_size=7)

    # the reference: embed in float64 from the raw pixels, classify each episode with loops
    x64 = (s.images.double().flatten(1) / 255 - 0.4) / 0.3
    emb64 = x64 @ w.double()
    want = np.array([naive_accuracy(emb64, e, n_shot, classifier, distance) for e in ep])
    assert 0.3 < want.mean() < 0.95, "the fixture is neither trivial nor hopeless"
    np.testing.assert_allclose(r["per_episode"], want, atol=1e-6)
    assert r["episodes"] == episodes
    assert r["mean"] == pytest.approx(want.mean(), abs=1e-6)  # per-episode values are float32
    sd = math.sqrt(sum((a - want.mean()) ** 2 for a in want) / (episodes - 1))
    assert r["ci95"] == pytest.approx(1.96 * sd / math.sqrt(episodes), rel=1e-4)
    lo, hi = stats.t.interval(0.95, episodes - 1, loc=want.mean(), scale=stats.sem(want))
    assert r["t_ci95"] == pytest.approx((hi - lo) / 2, rel=1e-4)

    # precomputed embeddings give the same report without calling the encoder
    def never(x):
        raise AssertionError("the encoder must not run when emb is given")

    again = evaluate(never, s, ep, n_shot, classifier, distance, emb=(x64 @ w.double()).float())
    assert again["per_episode"] == pytest.approx(r["per_episode"], abs=1e-6)


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
