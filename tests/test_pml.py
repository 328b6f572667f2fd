"""pytorch-metric-learning (the pml extra): oneshot's losses against PML's on the same batches,
PML losses and miners by name, and every loss of the zoo preset taking a training step."""

import dataclasses
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import pytorch_metric_learning  # noqa: F401 - installed by `make install`; a missing install must fail loudly
from pytorch_metric_learning import distances, losses as pml_losses, miners, reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

import tiny

from oneshot import losses, miners as oneshot_miners
from oneshot.distances import pairwise
from oneshot.study import presets
from oneshot.config import Config
from oneshot.data.load import load_split
from oneshot.data.episodes import generator
from oneshot.errors import ConfigError
from oneshot.pml import MinedLoss
from oneshot.registry import build_loss
from oneshot.registry import build_model

SEEDS = [0, 1, 2]
RAW = distances.LpDistance(normalize_embeddings=False)  # plain Euclidean, as oneshot's "euclidean"
# the PML config that is oneshot's batch-hard triplet loss
BATCH_HARD = dict(loss="pml:TripletMarginLoss",
                  loss_params={"distance": {"class": "pml:LpDistance", "normalize_embeddings": False},
                               "reducer": {"class": "pml:MeanReducer"}},
                  miner="pml:BatchHardMiner",
                  miner_params={"distance": {"class": "pml:LpDistance", "normalize_embeddings": False}})


def batch(seed: int, normalize: bool, p: int = 6, k: int = 4, dim: int = 8, dtype=torch.float64):
    """A P x K batch: embeddings [P*K, dim] (unit norm when `normalize`), labels in class order."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(p * k, dim, generator=g, dtype=dtype)
    labels = torch.randperm(50, generator=g)[:p].repeat_interleave(k)  # class ids, not 0..P-1
    return (F.normalize(emb, dim=1) if normalize else emb), labels


def close(a, b, dtype=torch.float64):
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    return torch.allclose(torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype), rtol=tol, atol=tol)


# ---- triplet: oneshot's batch-hard = PML's TripletMarginLoss + BatchHardMiner ----

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
def test_batch_hard_triplet_equals_pml_triplet_margin_with_batch_hard_miner(seed, normalize, margin):
    """Same definition when PML's distance does not re-normalise (LpDistance(normalize_embeddings=
    False); on unit embeddings its default gives the same) and its reducer is MeanReducer: oneshot
    averages over every anchor, PML's default AvgNonZeroReducer over the anchors with a non-zero term."""
    emb, labels = batch(seed, normalize)
    emb_a, emb_b = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    ours = losses.triplet(emb_a, labels, margin, "euclidean", "hard")
    theirs = build_loss(Config(**{**BATCH_HARD, "loss_params": {**BATCH_HARD["loss_params"], "margin": margin}}))
    assert isinstance(theirs, MinedLoss)
    pml_value = theirs(emb_b, labels)
    assert close(ours, pml_value), (ours.item(), pml_value.item())
    (ours + pml_value).backward()
    assert torch.allclose(emb_a.grad, emb_b.grad, rtol=1e-8, atol=1e-10)
    direct = pml_losses.TripletMarginLoss(margin=margin, distance=RAW, reducer=reducers.MeanReducer())(
        emb, labels, miners.BatchHardMiner(distance=RAW)(emb, labels))
    assert close(ours, direct)
    if normalize:  # PML's default distance re-normalises: a no-op on unit embeddings
        default = pml_losses.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())(
            emb, labels, miners.BatchHardMiner()(emb, labels))
        assert close(ours, default)
    non_zero = pml_losses.TripletMarginLoss(margin=margin, distance=RAW)(  # default AvgNonZeroReducer
        emb, labels, miners.BatchHardMiner(distance=RAW)(emb, labels))
    hp = torch.cdist(emb, emb).masked_fill(labels[:, None] != labels[None], -1).amax(1)
    hn = torch.cdist(emb, emb).masked_fill(labels[:, None] == labels[None], math.inf).amin(1)
    terms = F.relu(hp - hn + margin)
    assert close(non_zero, terms[terms > 0].mean() if (terms > 0).any() else 0.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_all_triplet_equals_pml_triplet_margin_defaults_without_normalising(seed):
    """oneshot's batch-all (mean over the non-zero triplets) is PML's TripletMarginLoss with its
    default AvgNonZeroReducer and no miner (all triplets), distances not re-normalised."""
    emb, labels = batch(seed, normalize=False)
    for margin in (0.2, 1.0):
        assert close(losses.triplet(emb, labels, margin, "euclidean", "all"),
                     pml_losses.TripletMarginLoss(margin=margin, distance=RAW)(emb, labels))


def test_float32_batches_agree_to_float32_precision():
    emb, labels = batch(0, normalize=True, p=32, k=4, dim=64, dtype=torch.float32)
    assert close(losses.triplet(emb, labels, 0.2, "euclidean", "hard"),
                 build_loss(Config(**{**BATCH_HARD, "loss_params": {**BATCH_HARD["loss_params"], "margin": 0.2}}))(
                     emb, labels), torch.float32)


# ---- miners: oneshot's pick the pairs and triplets PML's pick ----

def rows(*tensors):
    return list(zip(*(t.tolist() for t in tensors)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_miners_pick_the_pairs_and_triplets_pmls_pick(seed, normalize):
    """Batch-hard = PML's BatchHardMiner (as triplets, and as its pairs by PML's convert_to_pairs);
    all triplets = PML's get_all_triplets_indices, in the same order; all pairs = PML's
    get_all_pairs_indices with each pair once (PML lists i->j and j->i)."""
    emb, labels = batch(seed, normalize)
    d = pairwise(emb, emb)
    hard = oneshot_miners.hard_triplets(labels, d)
    theirs = miners.BatchHardMiner(distance=RAW)(emb, labels)
    assert rows(*hard) == rows(*theirs)
    a1, p, a2, n = lmu.convert_to_pairs(theirs, labels)
    pairs = oneshot_miners.hard_pairs(labels, d)
    assert rows(pairs.a, pairs.b) == rows(a1, p) + rows(a2, n) and pairs.same.sum() == len(a1)
    assert rows(*oneshot_miners.all_triplets(labels)) == rows(*lmu.get_all_triplets_indices(labels))
    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    pairs = oneshot_miners.all_pairs(labels)
    assert sorted(rows(pairs.a[pairs.same], pairs.b[pairs.same])) == sorted(r for r in rows(a1, p) if r[0] < r[1])
    assert sorted(rows(pairs.a[~pairs.same], pairs.b[~pairs.same])) == sorted(r for r in rows(a2, n) if r[0] < r[1])


# ---- contrastive: per pair, oneshot's term is 1/2 (PML's term)^2 ----

def pml_contrastive_terms(emb, labels, margin, miner=None):
    """PML's per-pair contrastive terms (pos: relu(D - 0), neg: relu(margin - D)), unreduced."""
    loss = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=margin, distance=RAW,
                                      reducer=reducers.DoNothingReducer())
    out = loss(emb, labels, miner(emb, labels) if miner else None)
    return out["pos_loss"]["losses"], out["neg_loss"]["losses"]


def mean(x):
    return x.mean() if x.numel() else torch.zeros((), dtype=x.dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("margin", [0.5, 1.0, 1.5])
def test_contrastive_equals_pml_contrastive_after_squaring_each_term(seed, normalize, margin):
    """PML's ContrastiveLoss(pos_margin=0, neg_margin=m) has unsquared hinges, D and max(0, m - D);
    oneshot's (the brief's formula) is D^2 / 2 and max(0, m - D)^2 / 2. With the terms mapped by
    t -> t^2 / 2 the reductions match: pos_weight "balanced" = PML's MeanReducer (mean of the
    positive terms + mean of the negative terms; PML lists each pair twice, i->j and j->i, which
    leaves a mean unchanged), "active" = PML's default AvgNonZeroReducer (positive terms are never
    zero), "hard" = PML's BatchHardMiner + MeanReducer."""
    emb, labels = batch(seed, normalize)
    half_sq = lambda t: 0.5 * t.pow(2)  # noqa: E731
    pos, neg = pml_contrastive_terms(emb, labels, margin)
    assert len(pos) == 2 * 6 * 4 * 3 // 2 and len(neg) == 2 * (24 * 23 // 2 - 6 * 4 * 3 // 2)  # both orders
    assert close(losses.contrastive(emb, labels, margin, "euclidean", "balanced"),
                 mean(half_sq(pos)) + mean(half_sq(neg)))
    assert close(losses.contrastive(emb, labels, margin, "euclidean", "active"),
                 mean(half_sq(pos[pos > 0])) + mean(half_sq(neg[neg > 0])))
    pos, neg = pml_contrastive_terms(emb, labels, margin, miners.BatchHardMiner(distance=RAW))
    assert close(losses.contrastive(emb, labels, margin, "euclidean", "hard"), mean(half_sq(pos)) + mean(half_sq(neg)))
    # the unsquared sums themselves are PML's loss with the same reducer
    mean_reduced = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=margin, distance=RAW,
                                              reducer=reducers.MeanReducer())(emb, labels)
    pos, neg = pml_contrastive_terms(emb, labels, margin)
    assert close(mean_reduced, mean(pos) + mean(neg))


def test_pml_defaults_differ_from_oneshot_where_the_docs_say():
    emb, labels = batch(0, normalize=False)
    emb = 3 * emb  # far from unit norm
    # LpDistance re-normalises by default: unnormalised embeddings give another loss
    assert not close(pml_losses.TripletMarginLoss(margin=0.2)(emb, labels),
                     losses.triplet(emb, labels, 0.2, "euclidean", "all"))
    # PML's default ContrastiveLoss on unit embeddings is not oneshot's (unsquared hinges, non-zero mean)
    unit = F.normalize(emb, dim=1)
    assert not close(pml_losses.ContrastiveLoss(neg_margin=1.0)(unit, labels),
                     losses.contrastive(unit, labels, 1.0, "euclidean", "active"))


# ---- names, parameters, miners ----

def test_classification_losses_get_num_classes_and_embedding_size():
    cfg = Config(loss="pml:ArcFaceLoss", loss_params={"margin": 28.6, "scale": 64})
    model, loss = build_model(cfg, 1, num_classes=30)
    assert isinstance(loss, pml_losses.ArcFaceLoss) and loss.W.shape == (64, 30)  # Conv-4 at 28x28
    _, loss = build_model(Config(loss="pml:CosFaceLoss"), 1, num_classes=30)  # takes them through *args
    assert loss.W.shape == (64, 30)
    _, loss = build_model(Config(loss="pml:ProxyAnchorLoss", loss_params={"num_classes": 5}), 1, 30)
    assert loss.proxies.shape == (5, 64)
    _, loss = build_model(Config(loss="pml:MarginLoss"), 1, 30)  # optional there, supplied too: one beta
    assert loss.beta.tolist() == pytest.approx([1.2] * 30)       # per class (learned with learn_beta)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(cfg, 1)
    with torch.random.fork_rng():  # built under the trainer's seeded RNG: the same weights every time
        torch.manual_seed(0)
        a = build_model(cfg, 1, 30)[1].W.detach().clone()
        torch.manual_seed(0)
        assert torch.equal(a, build_model(cfg, 1, 30)[1].W)


def test_unknown_pml_names_and_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match=r"no losses class 'ArcLoss'; choose one of .*ArcFaceLoss"):
        build_loss(Config(loss="pml:ArcLoss"))
    with pytest.raises(ConfigError, match=r"no miners class 'HardMiner'; choose one of .*BatchHardMiner"):
        build_loss(Config(loss="pml:TripletMarginLoss", miner="pml:HardMiner"))
    with pytest.raises(ConfigError, match="cannot build it"):
        build_loss(Config(loss="pml:SupConLoss", loss_params={"temprature": 0.1}))
    with pytest.raises(ConfigError, match=r"no .*class 'LpDist'"):
        build_loss(Config(loss="pml:SupConLoss", loss_params={"distance": {"class": "pml:LpDist"}}))


def test_missing_pml_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning.losses", None)  # the import now fails
    with pytest.raises(ConfigError, match=r"pip install 'oneshot\[pml\]'.*make install"):
        build_loss(Config(loss="pml:SupConLoss"))


# ---- the zoo preset: every loss builds and takes a training step ----

def test_every_loss_of_the_zoo_takes_a_training_step(small_omniglot, one_thread):
    _, (zoo,) = presets.load_preset("zoo")
    configs = {c.name: c for c in zoo.runs}
    assert sum(c.loss.startswith("pml:") for c in configs.values()) >= 6
    assert {("contrastive", "hard", 0.5), ("triplet", "hard", 0.2)} <= {
        (c.loss, c.loss_params["pos_weight" if c.loss == "contrastive" else "mining"], c.loss_params["margin"])
        for c in configs.values() if c.loss in ("contrastive", "triplet")}
    split = load_split("omniglot", "vinyals", "train", small_omniglot, 28)
    for name, cfg in configs.items():
        cfg = dataclasses.replace(cfg, batch_classes=6, batch_shots=4)  # the fixture has 24 classes
        loss, n, encoder_moved, own_moved = tiny.training_step(cfg, split)
        assert n == 24 and loss.dim() == 0 and torch.isfinite(loss), name
        assert encoder_moved, f"{name}: the encoder did not move"
        assert own_moved in (True, None), f"{name}: the loss's parameters did not move"
