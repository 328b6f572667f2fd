"""Each loss against a naive loop over hand-listed pairs / triplets (float64 reference).

The reference computes its distances itself, in plain Python floats, so it shares no code
with `oneshot.distances` (which the losses use)."""

import math

import pytest
import torch

from oneshot.losses import KochHead, contrastive, koch, proto, triplet

TOL = dict(rtol=1e-5, atol=1e-5)
SEEDS = [0, 1, 2]
MINING = ["all", "hard", "semihard"]


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """KochHead initialisation and the edge-case inputs draw from torch's global generator."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        yield


def batch(seed, p=4, k=3, dim=6, scale=0.4):
    """Random float32 embeddings [p*k, dim] and shuffled labels of a P x K batch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    return torch.randn(p * k, dim, generator=g) * scale, labels


def clustered(seed, offset):
    """batch(seed) with each class moved by `offset` along its own axis: some pairs and triplets
    are then satisfied and some are not."""
    emb, labels = batch(seed)
    return emb + offset * torch.nn.functional.one_hot(labels, emb.shape[1]), labels


def ref_dist(a, b, metric):
    """Distance between two vectors given as lists of Python floats (float64)."""
    if metric == "sqeuclidean":
        return math.fsum((x - y) ** 2 for x, y in zip(a, b))
    if metric == "euclidean":
        return math.sqrt(math.fsum((x - y) ** 2 for x, y in zip(a, b)))
    if metric == "cosine":
        dot = math.fsum(x * y for x, y in zip(a, b))
        return 1 - dot / (math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b)))
    raise AssertionError(metric)


def dist(emb, i, j, metric):
    return ref_dist(emb[i].tolist(), emb[j].tolist(), metric)


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def check(loss, expected):
    torch.testing.assert_close(loss.double(), torch.tensor(expected, dtype=torch.float64), **TOL)


def assert_connected_zero_or_finite(emb, loss):
    assert loss.grad_fn is not None
    assert torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, emb)
    assert torch.isfinite(grad).all()
    return grad


# ---- naive references ----

def naive_contrastive(emb, labels, margin, metric, pos_weight):
    if pos_weight == "hard":
        b = len(labels)
        hp, hn = [], []
        for a in range(b):
            dp = [dist(emb, a, p, metric) for p in range(b) if p != a and labels[p] == labels[a]]
            dn = [dist(emb, a, n, metric) for n in range(b) if labels[n] != labels[a]]
            if dp:
                hp.append(0.5 * max(dp) ** 2)
            if dn:
                hn.append(0.5 * max(0.0, margin - min(dn)) ** 2)
        return mean(hp) + mean(hn)
    pos, neg = [], []
    b = len(labels)
    for i in range(b):
        for j in range(i + 1, b):
            d = dist(emb, i, j, metric)
            if labels[i] == labels[j]:
                pos.append(0.5 * d**2)
            else:
                neg.append(0.5 * max(0.0, margin - d) ** 2)
    if pos_weight == "active":
        return mean(pos) + mean([n for n in neg if n > 0])
    return mean(pos + neg) if pos_weight == "mean" else mean(pos) + mean(neg)


def naive_triplet_terms(emb, labels, margin, metric, mining):
    """Every term the mining rule keeps, zeros included."""
    b = len(labels)
    d = [[dist(emb, i, j, metric) for j in range(b)] for i in range(b)]
    lab = labels.tolist()
    terms = []
    for a in range(b):
        ps = [p for p in range(b) if p != a and lab[p] == lab[a]]
        ns = [n for n in range(b) if lab[n] != lab[a]]
        if mining == "all":
            terms += [max(0.0, d[a][p] - d[a][n] + margin) for p in ps for n in ns]
        elif mining == "hard":
            if ps and ns:
                hp, hn = max(d[a][p] for p in ps), min(d[a][n] for n in ns)
                terms.append(max(0.0, hp - hn + margin))
        elif mining == "semihard":
            if not ns:
                continue
            for p in ps:
                farther = [d[a][n] for n in ns if d[a][n] > d[a][p]]
                chosen = min(farther) if farther else max(d[a][n] for n in ns)
                terms.append(max(0.0, d[a][p] - chosen + margin))
    return terms


def naive_triplet(emb, labels, margin, metric, mining):
    terms = naive_triplet_terms(emb, labels, margin, metric, mining)
    return mean([t for t in terms if t > 0] if mining == "all" else terms)


def naive_hardest(emb, labels, metric):
    """Mean over anchors of the farthest positive's and of the closest negative's distance."""
    b, lab = len(labels), labels.tolist()
    hp, hn = [], []
    for a in range(b):
        dp = [dist(emb, a, p, metric) for p in range(b) if p != a and lab[p] == lab[a]]
        dn = [dist(emb, a, n, metric) for n in range(b) if lab[n] != lab[a]]
        hp += [max(dp)] if dp else []
        hn += [min(dn)] if dn else []
    return mean(hp), mean(hn)


def naive_koch(emb, labels, head):
    w, bias = head.fc.weight[0].double(), head.fc.bias.double().item()
    pos, neg = [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            z = ((emb[i].double() - emb[j].double()).abs() @ w).item() + bias
            s = 1 / (1 + math.exp(-z))
            if labels[i] == labels[j]:
                pos.append(-math.log(s))
            else:
                neg.append(-math.log(1 - s))
    return mean(pos) + mean(neg)


def naive_proto(emb, labels, n_support, metric):
    lab = labels.tolist()
    rows = emb.tolist()
    classes = sorted(set(lab))
    members = {c: [i for i in range(len(lab)) if lab[i] == c] for c in classes}
    protos = [[math.fsum(rows[i][d] for i in members[c][:n_support]) / n_support for d in range(len(rows[0]))]
              for c in classes]
    losses = []
    for t, c in enumerate(classes):
        for q in members[c][n_support:]:
            logits = [-ref_dist(rows[q], protos[k], metric) for k in range(len(classes))]
            losses.append(-logits[t] + math.log(math.fsum(math.exp(x) for x in logits)))
    return mean(losses)


def test_reference_distances_are_right():
    a, b = [3.0, 4.0], [0.0, 0.0]
    assert ref_dist(a, b, "euclidean") == 5.0 and ref_dist(a, b, "sqeuclidean") == 25.0
    assert ref_dist([1.0, 0.0], [0.0, 2.0], "cosine") == 1.0
    assert ref_dist([1.0, 1.0], [-2.0, -2.0], "cosine") == pytest.approx(2.0)


# ---- agreement with the naive loops ----

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("pos_weight", ["balanced", "mean", "active", "hard"])
def test_contrastive_matches_loop(seed, metric, pos_weight):
    emb, labels = batch(seed)
    expected = naive_contrastive(emb, labels, 1.0, metric, pos_weight)
    check(contrastive(emb, labels, 1.0, metric, pos_weight), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("mining", MINING)
def test_triplet_matches_loop(seed, metric, mining):
    emb, labels = batch(seed)
    margin = 0.5
    expected = naive_triplet(emb, labels, margin, metric, mining)
    assert expected > 0  # the inputs exercise the loss
    check(triplet(emb, labels, margin, metric, mining), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mining", MINING)
def test_triplet_stats_match_loop(seed, mining):
    emb, labels = clustered(seed, 0.8)
    stats = {}
    loss = triplet(emb, labels, 0.1, "euclidean", mining, stats=stats)
    terms = naive_triplet_terms(emb, labels, 0.1, "euclidean", mining)
    assert 0 < sum(t > 0 for t in terms) < len(terms)  # the inputs exercise the fraction
    assert stats["active"].item() == pytest.approx(sum(t > 0 for t in terms) / len(terms))
    hp, hn = naive_hardest(emb, labels, "euclidean")
    assert (stats["hardest_pos"].item(), stats["hardest_neg"].item()) == pytest.approx((hp, hn), rel=1e-5)
    assert all(not v.requires_grad for v in stats.values())
    check(loss, naive_triplet(emb, labels, 0.1, "euclidean", mining))  # the stats change nothing


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pos_weight", ["balanced", "hard"])
def test_contrastive_stats_match_loop(seed, pos_weight):
    emb, labels = clustered(seed, 0.6)
    stats = {}
    contrastive(emb, labels, 1.0, "euclidean", pos_weight, stats=stats)
    b, lab = len(labels), labels.tolist()
    if pos_weight == "hard":  # per anchor its closest negative
        negs = [min(dist(emb, a, n, "euclidean") for n in range(b) if lab[n] != lab[a]) for a in range(b)]
    else:
        negs = [dist(emb, i, j, "euclidean") for i in range(b) for j in range(i + 1, b) if lab[i] != lab[j]]
    inside = sum(d < 1.0 for d in negs) / len(negs)
    assert 0 < inside < 1 and stats["active"].item() == pytest.approx(inside)
    hp, hn = naive_hardest(emb, labels, "euclidean")
    assert (stats["hardest_pos"].item(), stats["hardest_neg"].item()) == pytest.approx((hp, hn), rel=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_koch_matches_loop(seed):
    emb, labels = batch(seed)
    torch.manual_seed(seed)
    head = KochHead(emb.shape[1])
    check(koch(emb, labels, head), naive_koch(emb, labels, head))
    e1, e2 = emb[:2], emb[2:4]
    torch.testing.assert_close(head.similarity(e1, e2), torch.sigmoid(head(e1, e2)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("n_support", [1, 2])
def test_proto_matches_loop(seed, metric, n_support):
    emb, labels = batch(seed, p=4, k=4)
    check(proto(emb, labels, n_support, metric), naive_proto(emb, labels, n_support, metric))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("rule", [("contrastive", w) for w in ("balanced", "mean", "active", "hard")]
                         + [("triplet", m) for m in MINING])
def test_gradients_are_the_derivatives_of_the_values(metric, rule):
    """Finite differences (float64) agree with autograd through miner, terms and reduction, for
    every setting: with the values checked against the loops above, the gradients are right too."""
    emb, labels = batch(0)
    fn = {"contrastive": contrastive, "triplet": triplet}[rule[0]]
    x = emb.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda e: fn(e, labels, 0.8, metric, rule[1]), (x,))


def test_semihard_picks_closest_negative_beyond_positive():
    # anchor 0 at the origin; positive at 1; negatives at 0.5 (hard), 1.2 and 1.4 (semi-hard)
    emb = torch.tensor([[0.0], [1.0], [0.5], [1.2], [1.4]])
    labels = torch.tensor([0, 0, 1, 2, 3])
    loss = triplet(emb, labels, margin=0.5, mining="semihard")
    # pair (0,1): chosen 1.2 -> loss 0.3; pair (1,0): negatives of 1 lie at 0.5, 0.2, 0.4,
    # none farther than 1, so the farthest (0.5) -> loss 1.0
    check(loss, (0.3 + 1.0) / 2)


# ---- edge cases ----

@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("mining", MINING)
def test_triplet_without_valid_triplet_is_connected_zero(metric, mining):
    emb = torch.randn(5, 4, requires_grad=True)
    for labels in (torch.arange(5), torch.zeros(5, dtype=torch.long)):  # no positive / one class
        loss = triplet(emb, labels, metric=metric, mining=mining)
        assert loss.item() == 0
        assert_connected_zero_or_finite(emb, loss)


def test_pair_losses_without_positive_pair():
    emb, labels = torch.randn(5, 4, requires_grad=True), torch.arange(5)
    loss = contrastive(emb, labels, margin=10.0)  # only the negative term is left
    check(loss, naive_contrastive(emb.detach(), labels, 10.0, "euclidean", "balanced"))
    assert_connected_zero_or_finite(emb, loss)
    far = contrastive(emb * 100, labels, margin=1.0)  # negatives beyond the margin
    assert far.item() == 0
    assert_connected_zero_or_finite(emb, far)
    head = KochHead(4)
    assert_connected_zero_or_finite(emb, koch(emb, labels, head))
    lone = proto(emb, labels, n_support=1)  # no queries
    assert lone.item() == 0
    assert_connected_zero_or_finite(emb, lone)


def test_single_class_and_tiny_batches():
    emb = torch.randn(4, 3, requires_grad=True)
    one = torch.zeros(4, dtype=torch.long)
    assert_connected_zero_or_finite(emb, contrastive(emb, one))
    assert_connected_zero_or_finite(emb, koch(emb, one, KochHead(3)))
    assert proto(emb, one, n_support=2).item() == pytest.approx(0.0)  # one prototype: CE is 0
    single = emb[:1]
    for loss in (
        contrastive(single, one[:1]),
        triplet(single, one[:1]),
        koch(single, one[:1], KochHead(3)),
    ):
        assert loss.item() == 0
        assert_connected_zero_or_finite(emb, loss)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_all_satisfied_gives_zero_with_finite_grads(metric):
    # each class is one point repeated (coincident embeddings), classes far apart
    centres = torch.eye(4) * 5
    labels = torch.arange(4).repeat_interleave(3)
    emb = centres[labels].clone().requires_grad_(True)
    margin = 0.5
    for mining in MINING:
        loss = triplet(emb, labels, margin, metric, mining)
        assert loss.item() == 0
        assert_connected_zero_or_finite(emb, loss)
    loss = contrastive(emb, labels, margin, metric)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert_connected_zero_or_finite(emb, loss)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_collapsed_embeddings_give_finite_losses_and_grads(metric):
    emb = torch.ones(6, 4).requires_grad_(True)  # every embedding identical
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    losses = [triplet(emb, labels, 0.3, metric, m) for m in MINING]
    losses += [contrastive(emb, labels, 1.0, metric, w) for w in ("balanced", "mean")]
    losses += [koch(emb, labels, KochHead(4)), proto(emb, labels, 1, metric)]
    for loss in losses:
        assert_connected_zero_or_finite(emb, loss)
    check(losses[1], 0.3)  # batch-hard: D(a,p) = D(a,n) = 0 -> margin


def test_bad_arguments():
    emb, labels = batch(0)
    with pytest.raises(ValueError, match="mining"):
        triplet(emb, labels, mining="easy")
    with pytest.raises(ValueError, match="pos_weight"):
        contrastive(emb, labels, pos_weight="sum")
    with pytest.raises(ValueError, match="n_support"):
        proto(emb, labels, n_support=4)  # classes have 3 items
    # unknown loss names: tests/test_registry.py
