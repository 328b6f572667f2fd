"""The miners (which pairs and triplets a loss scores) and the reductions against naive loops,
and the seams between them, the losses and the config: every setting a config accepts names a
rule, every default comes from `lossparams.BUILTIN_PARAMS`, and a loss is its miner, its terms and
its reduction and nothing else."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from oneshot import config, distances, losses, lossparams, miners, reduce
from oneshot.errors import ConfigError

SEEDS = [0, 1, 2]
TRIPLET_MINERS = (miners.all_triplets, miners.hard_triplets, miners.semihard_triplets)


def batch(seed, p=4, k=3, dim=6):
    """Random embeddings [p*k, dim], shuffled labels of a P x K batch, and their distances [B, B]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    emb = torch.randn(p * k, dim, generator=g)
    return emb, labels, torch.cdist(emb, emb)


def as_list(mined):
    return list(zip(*(t.tolist() for t in mined)))


# ---- naive miners: plain loops over the batch ----

def naive_hard(d, labels):
    """{anchor: (farthest positive or None, closest negative or None)}."""
    lab, out = labels.tolist(), {}
    for a in range(len(lab)):
        ps = [p for p in range(len(lab)) if p != a and lab[p] == lab[a]]
        ns = [n for n in range(len(lab)) if lab[n] != lab[a]]
        out[a] = (max(ps, key=lambda p: d[a, p]) if ps else None, min(ns, key=lambda n: d[a, n]) if ns else None)
    return out


def naive_semihard(d, labels):
    lab, out = labels.tolist(), []
    for a in range(len(lab)):
        ns = [n for n in range(len(lab)) if lab[n] != lab[a]]
        if not ns:
            continue
        for p in range(len(lab)):
            if p == a or lab[p] != lab[a]:
                continue
            farther = [n for n in ns if d[a, n] > d[a, p]]
            out.append((a, p, min(farther, key=lambda n: d[a, n]) if farther else max(ns, key=lambda n: d[a, n])))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_all_pairs_are_every_pair_once(seed):
    _, labels, d = batch(seed)
    lab = labels.tolist()
    assert as_list(miners.all_pairs(labels)) == [(i, j, lab[i] == lab[j])
                                                for i in range(len(lab)) for j in range(i + 1, len(lab))]
    assert as_list(miners.all_pairs(labels, d)) == as_list(miners.all_pairs(labels))  # d is not read


@pytest.mark.parametrize("seed", SEEDS)
def test_hard_pairs_are_each_anchors_farthest_positive_and_closest_negative(seed):
    _, labels, d = batch(seed)
    hard = naive_hard(d, labels)
    want = [(a, p, True) for a, (p, _) in hard.items() if p is not None]
    want += [(a, n, False) for a, (_, n) in hard.items() if n is not None]
    assert as_list(miners.hard_pairs(labels, d)) == want


@pytest.mark.parametrize("seed", SEEDS)
def test_triplet_miners_match_the_loops(seed):
    _, labels, d = batch(seed)
    lab = labels.tolist()
    b = range(len(lab))
    assert as_list(miners.all_triplets(labels)) == [(a, p, n) for a in b for p in b for n in b
                                                    if p != a and lab[p] == lab[a] and lab[n] != lab[a]]
    assert as_list(miners.hard_triplets(labels, d)) == [(a, p, n) for a, (p, n) in naive_hard(d, labels).items()
                                                        if p is not None and n is not None]
    assert as_list(miners.semihard_triplets(labels, d)) == naive_semihard(d, labels)


def test_semihard_falls_back_to_the_farthest_negative():
    d = torch.tensor([[0.0, 1.0, 0.5, 1.2, 1.4], [1.0, 0.0, 0.5, 0.2, 0.4], [0.5, 0.5, 0.0, 0.7, 0.9],
                      [1.2, 0.2, 0.7, 0.0, 0.2], [1.4, 0.4, 0.9, 0.2, 0.0]])  # points 0, 1, 0.5, 1.2, 1.4
    labels = torch.tensor([0, 0, 1, 2, 3])
    # (0, 1): the closest negative beyond 1 is 3 (at 1.2); (1, 0): none beyond 1, the farthest is 2 (0.5)
    assert as_list(miners.semihard_triplets(labels, d)) == [(0, 1, 3), (1, 0, 2)]


def test_hardest_ties_pick_the_first_item():
    d = torch.ones(4, 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert as_list(miners.hard_triplets(labels, d)) == [(0, 1, 3), (1, 0, 3), (2, 0, 3)]


def test_miners_read_no_gradient_and_return_empty_tensors_when_nothing_is_mined():
    emb = torch.randn(5, 3, requires_grad=True)
    d = distances.pairwise(emb, emb)
    for labels in (torch.arange(5), torch.zeros(5, dtype=torch.long), torch.zeros(1, dtype=torch.long)):
        dd = d[:len(labels), :len(labels)]
        for mine in (miners.all_pairs, miners.hard_pairs, *TRIPLET_MINERS):
            mined = mine(labels, dd)
            assert all(not t.requires_grad and t.dtype in (torch.long, torch.bool) for t in mined)
        for mine in TRIPLET_MINERS:
            assert len(mine(labels, dd).a) == 0
    assert len(miners.hard_pairs(torch.arange(5), d).a) == 5  # negatives only, one per anchor


# ---- reductions ----

def test_reductions_match_their_definitions():
    terms = torch.tensor([0.5, 0.0, 2.0, 0.0, 1.0, 3.0])
    same = torch.tensor([True, False, False, False, True, False])
    emb = torch.zeros(2, 2)
    assert reduce.mean(terms, emb).item() == pytest.approx(6.5 / 6)
    assert reduce.nonzero(terms, emb).item() == pytest.approx(6.5 / 4)
    assert reduce.pooled(terms, same, emb).item() == pytest.approx(6.5 / 6)
    assert reduce.balanced(terms, same, emb).item() == pytest.approx(1.5 / 2 + 5.0 / 4)
    assert reduce.active(terms, same, emb).item() == pytest.approx(1.5 / 2 + 5.0 / 2)


def test_reductions_of_nothing_are_a_connected_zero():
    emb = torch.randn(3, 2, requires_grad=True)
    empty, none = torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    zeros = torch.zeros(3)
    for value in (reduce.mean(empty, emb), reduce.nonzero(zeros, emb), reduce.balanced(empty, none, emb),
                  reduce.active(zeros, torch.zeros(3, dtype=torch.bool), emb), reduce.pooled(empty, none, emb)):
        assert value.item() == 0 and value.grad_fn is not None
        (grad,) = torch.autograd.grad(value, emb)
        assert torch.equal(grad, torch.zeros_like(emb))


# ---- the seams: a loss is its miner, its terms and its reduction ----

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_each_setting_is_its_miner_its_terms_and_its_reduction(seed, metric):
    emb, labels, _ = batch(seed)
    d = distances.pairwise(emb, emb, metric)
    for pos_weight, (mine, reduction) in lossparams.PAIR_RULES.items():
        pairs = mine(labels, d)
        assert torch.equal(losses.contrastive(emb, labels, 0.7, metric, pos_weight),
                           reduction(losses.contrastive_terms(d, pairs, 0.7), pairs.same, emb))
    for mining, (mine, reduction) in lossparams.TRIPLET_RULES.items():
        assert torch.equal(losses.triplet(emb, labels, 0.3, metric, mining),
                           reduction(losses.triplet_terms(d, mine(labels, d), 0.3), emb))
    # hard contrastive scores exactly the pairs of batch-hard triplets (every anchor has both here)
    a, p, n = miners.hard_triplets(labels, d)
    pairs = miners.hard_pairs(labels, d)
    assert torch.equal(pairs.a, torch.cat([a, a])) and torch.equal(pairs.b, torch.cat([p, n]))


def test_terms_are_the_formulas():
    d = torch.tensor([[0.0, 0.3, 0.9], [0.3, 0.0, 0.4], [0.9, 0.4, 0.0]])
    pairs = miners.Pairs(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]), torch.tensor([True, False, False]))
    torch.testing.assert_close(losses.contrastive_terms(d, pairs, 0.5),
                               torch.tensor([0.5 * 0.3**2, 0.0, 0.5 * 0.1**2]))
    t = miners.Triplets(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2]))
    torch.testing.assert_close(losses.triplet_terms(d, t, 0.5), torch.tensor([0.0, F.relu(torch.tensor(0.4))]))


# ---- one list of choices, one source of defaults ----

def test_every_choice_a_config_accepts_names_a_rule():
    choices = lossparams.LOSS_CHOICES
    assert choices["pos_weight"] == tuple(lossparams.PAIR_RULES)
    assert choices["mining"] == tuple(lossparams.TRIPLET_RULES)
    assert choices["distance"] is distances.METRICS
    assert {mine for mine, _ in lossparams.TRIPLET_RULES.values()} == set(TRIPLET_MINERS)
    assert not hasattr(config, "SOFTMAX_HEADS") and not hasattr(losses, "HEADS")  # one list: LOSS_CHOICES["head"]


@pytest.mark.parametrize("key, value", [("mining", "easy"), ("pos_weight", "sum"), ("distance", "manhattan"),
                                        ("head", "mlp")])
def test_a_choice_no_rule_names_is_refused_by_the_config(key, value):
    loss = {"mining": "triplet", "pos_weight": "contrastive", "head": "softmax"}.get(key, "proto")
    with pytest.raises(ConfigError, match=f"loss_params '{key}' = '{value}': choose one of "):
        config.Config(loss=loss, loss_params={key: value})


def test_the_loss_functions_defaults_are_the_builtins():
    for fn, name, keys in ((losses.contrastive, "contrastive", {"margin": "margin", "metric": "distance",
                                                                  "pos_weight": "pos_weight"}),
                           (losses.triplet, "triplet", {"margin": "margin", "metric": "distance", "mining": "mining"}),
                           (losses.proto, "proto", {"metric": "distance"}),
                           (losses.SoftmaxLoss, "softmax", {"head": "head", "scale": "scale"})):
        params = inspect.signature(fn).parameters
        defaults = lossparams.BUILTIN_PARAMS[name]
        assert {arg: params[arg].default for arg in keys} == {arg: defaults[key] for arg, key in keys.items()}, name
