"""Verification: the seeded pair set, the ROC metrics and their intervals against independent
computations and known distributions, the Koch head as a scorer, and `oneshot eval --verification`."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from oneshot.cli import main
from oneshot.errors import ConfigError
from oneshot.losses import KochHead
from oneshot.verification import pair_scores, sample_pairs, verification_metrics


def test_pairs_are_balanced_seeded_and_never_an_image_with_itself():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 1 + [3] * 12)  # class 2 has one image: no same pair
    pairs, same = sample_pairs(labels, 4001, seed=3)
    assert pairs.shape == (4000, 2) and int(same.sum()) == 2000
    truth = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert torch.equal(truth, same)
    assert bool((pairs[:, 0] != pairs[:, 1]).all())
    assert not bool((labels[pairs[same][:, 0]] == 2).any())
    again, _ = sample_pairs(labels, 4001, seed=3)
    other, _ = sample_pairs(labels, 4001, seed=4)
    assert torch.equal(pairs, again) and not torch.equal(pairs, other)


def test_pairs_are_uniform_over_their_images():
    labels = torch.tensor([0] * 3 + [1] * 9 + [2] * 6)
    pairs, same = sample_pairs(labels, 36000, seed=0)
    # same pairs: the first image uniform over all 18; the second uniform over the rest of its class
    first = torch.bincount(pairs[same][:, 0], minlength=18).numpy()
    assert stats.chisquare(first).pvalue > 1e-3
    for img in (0, 5):
        partners = pairs[same][pairs[same][:, 0] == img][:, 1]
        members = torch.nonzero(labels == labels[img]).squeeze(1)
        counts = torch.bincount(partners, minlength=18).numpy()[members.numpy()]
        assert counts[members.numpy() == img].sum() == 0
        assert stats.chisquare(counts[members.numpy() != img]).pvalue > 1e-3
    # different pairs: the second image uniform over the images of other classes
    diff = pairs[~same]
    partners = diff[diff[:, 0] == 4][:, 1]  # image 4 is of class 1: 9 other-class images
    counts = torch.bincount(partners, minlength=18).numpy()
    assert counts[3:12].sum() == 0 and stats.chisquare(counts[np.r_[0:3, 12:18]]).pvalue > 1e-3


def test_impossible_pair_sets_are_refused():
    with pytest.raises(ConfigError, match="2 classes"):
        sample_pairs(torch.tensor([0, 1, 2]), 10, 0)
    with pytest.raises(ConfigError, match="at least 2 pairs"):
        sample_pairs(torch.tensor([0, 0, 1]), 1, 0)


def test_metrics_against_mann_whitney_and_the_binormal_model():
    d = 1.5  # same-pair scores N(d, 1), different-pair scores N(0, 1)
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(d, 1, 50_000), rng.normal(0, 1, 50_000)
    scores = np.r_[pos, neg]
    same = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    m = verification_metrics(scores, same, resamples=50)
    u = stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))
    assert m["roc_auc"]["value"] == pytest.approx(u, abs=1e-9)
    # binormal truth: AUC = Phi(d / sqrt 2), EER = Phi(-d / 2), TAR(far) = Phi(d + Phi^-1(far))
    assert m["roc_auc"]["value"] == pytest.approx(stats.norm.cdf(d / np.sqrt(2)), abs=0.005)
    assert m["eer"]["value"] == pytest.approx(stats.norm.cdf(-d / 2), abs=0.005)
    for far, tol in (("0.01", 0.02), ("0.001", 0.03)):
        truth = stats.norm.cdf(d + stats.norm.ppf(float(far)))
        assert m["tar_at_far"][far]["value"] == pytest.approx(truth, abs=tol)
    # the ROC kept for plots rises with the false accept rate and matches TAR at the listed points
    tar = np.asarray(m["roc"]["tar"])
    assert np.all(np.diff(tar) >= 0) and tar[-1] == 1.0


def test_separable_scores_give_a_perfect_roc():
    same = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    m = verification_metrics(np.r_[np.linspace(2, 3, 100), np.linspace(0, 1, 100)], same, resamples=20)
    assert m["roc_auc"]["value"] == 1.0 and m["eer"]["value"] == 0.0
    assert m["tar_at_far"]["0.001"]["value"] == 1.0


def test_auc_and_eer_intervals_cover_the_truth_about_95_percent_of_the_time():
    """200 simulated pair sets from the binormal model: the percentile-bootstrap intervals should
    hold the true AUC and EER in about 95% of them; accepted: 180-200 (a binomial(200, 0.95)
    count falls below 180 with probability < 0.1%)."""
    d, n = 1.0, 500
    auc_true, eer_true = stats.norm.cdf(d / np.sqrt(2)), stats.norm.cdf(-d / 2)
    rng = np.random.default_rng(1)
    hits = np.zeros(2, int)
    for i in range(200):
        scores = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
        same = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        m = verification_metrics(scores, same, resamples=200, seed=i)
        hits += [m["roc_auc"]["ci95"][0] <= auc_true <= m["roc_auc"]["ci95"][1],
                 m["eer"]["ci95"][0] <= eer_true <= m["eer"]["ci95"][1]]
    assert np.all(hits >= 180) and np.all(hits <= 200), hits


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        verification_metrics(np.array([0.1, np.nan, 0.3, 0.2]), np.array([1, 1, 0, 0], bool))


def test_scores_are_minus_the_distance_or_the_koch_heads_probability():
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    pairs = torch.tensor([[0, 1], [0, 2]])
    assert pair_scores(emb, pairs, "euclidean").tolist() == pytest.approx([-5.0, -1.0])
    head = KochHead(2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[-1.0, -2.0]]))
        head.fc.bias.fill_(0.5)
    expected = torch.sigmoid(torch.tensor([-1 * 3 - 2 * 4 + 0.5, -2 * 1 + 0.5])).double()
    assert pair_scores(emb, pairs, "koch-head", head) == pytest.approx(expected.numpy())
    with pytest.raises(ConfigError, match="koch"):
        pair_scores(emb, pairs, "koch-head")


def test_eval_verification_of_a_koch_run_scores_by_distance_and_by_its_head(small_omniglot, tmp_path, capsys,
                                                                           one_thread):
    from oneshot.config import Config
    from oneshot.train import train

    cfg = Config(steps=3, batch_classes=4, batch_shots=2, loss="koch", normalize=False, val_every=3,
                 val_ways=3, val_queries=2, val_episodes=4)
    train(cfg, tmp_path / "run", small_omniglot, progress=False)
    argv = ["eval", "--data-root", str(small_omniglot), "--encoder", str(tmp_path / "run"), "--ways", "3",
            "--queries", "2", "--episodes", "5", "--verification", "--pairs", "600"]
    assert main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for v in (r, r["koch_head"]):
        assert 0 <= v["roc_auc"] <= 1 and 0 <= v["eer"] <= 1 and set(v["tar_at_far"]) == {"0.001", "0.01"}
        assert v["verification"]["roc_auc"]["ci95"][0] <= v["roc_auc"] <= v["verification"]["roc_auc"]["ci95"][1]
    assert r["verification"]["pairs"] == {"same": 300, "different": 300}
    assert r["koch_head"]["roc_auc"] != r["roc_auc"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verification by euclidean (600 pairs): ROC AUC" in out and "verification by Koch head" in out


def test_without_scikit_learn_the_error_says_how_to_install_it(monkeypatch):
    import sys

    from oneshot.errors import OneshotError

    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` now fails
    with pytest.raises(OneshotError, match=r"pip install 'oneshot\[verification\]'"):
        verification_metrics(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0], bool))


def test_a_verification_request_is_checked_before_any_work(small_omniglot, capsys, monkeypatch):
    import oneshot.data.load

    def no_work(*a, **k):
        raise AssertionError("the split was loaded")

    monkeypatch.setattr(oneshot.data.load, "load_split", no_work)
    assert main(["eval", "--data-root", str(small_omniglot), "--verification", "--pairs", "1"]) == 2
    assert "--pairs 1: a verification set needs at least 2 pairs" in capsys.readouterr().err
