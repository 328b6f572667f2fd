"""oneshot.distances against scipy's cdist (float64), broadcasting, paired vs pairwise, gradients."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from oneshot.distances import METRICS, paired, pairwise


def points(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pairwise_matches_scipy_cdist(metric, dtype):
    x, y = points(0, 7, 5), points(1, 9, 5)
    got = pairwise(x.to(dtype), y.to(dtype), metric)
    assert got.shape == (7, 9) and got.dtype == dtype
    want = cdist(x.numpy(), y.numpy(), metric)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)


def test_known_values():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    torch.testing.assert_close(pairwise(x, y, "sqeuclidean"), torch.tensor([[25.0, 1.0], [0.0, 32.0], [20.0, 4.0]]))
    torch.testing.assert_close(pairwise(x, y, "euclidean"), torch.tensor([[5.0, 1.0], [0.0, 32.0 ** 0.5], [20.0 ** 0.5, 2.0]]),
                               atol=1e-5, rtol=1e-6)
    # cosine distance: same direction 0, orthogonal 1, opposite 2
    torch.testing.assert_close(pairwise(x[1:], y, "cosine"), torch.tensor([[0.0, 1.6], [0.4, 2.0]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_leading_batch_dims_broadcast(metric):
    x, y = points(2, 2, 1, 4, 3), points(3, 5, 6, 3)  # [2, 1, n, d] with [5, m, d] -> [2, 5, n, m]
    got = pairwise(x, y, metric)
    assert got.shape == (2, 5, 4, 6)
    for a in range(2):
        for b in range(5):
            np.testing.assert_allclose(got[a, b].numpy(), cdist(x[a, 0].numpy(), y[b].numpy(), metric),
                                       rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_paired_is_the_diagonal_of_pairwise(metric):
    x, y = points(4, 8, 5), points(5, 8, 5)
    got = paired(x, y, metric)
    assert got.shape == (8,)
    torch.testing.assert_close(got, pairwise(x, y, metric).diagonal(), rtol=1e-10, atol=1e-10)
    want = [cdist(x[i : i + 1].numpy(), y[i : i + 1].numpy(), metric)[0, 0] for i in range(8)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_distances_are_non_negative_and_near_zero_on_identical_points(metric):
    # nearly equal float32 vectors: ||x||^2 + ||y||^2 - 2xy cancels and can round below 0
    x = points(6, 20, 8).float()
    y = x + 1e-4 * points(7, 20, 8).float()
    floor = -1e-6 if metric == "cosine" else 0.0  # 1 - cos is only rounded, not clamped
    assert float(pairwise(x, y, metric).min()) >= floor
    assert float(paired(x, y, metric).min()) >= floor
    self_d = pairwise(x, x, metric).diagonal()
    assert float(self_d.abs().max()) < (2e-3 if metric == "euclidean" else 1e-5)


@pytest.mark.parametrize("fn", [pairwise, paired])
def test_euclidean_gradient_is_finite_on_identical_points(fn):
    x = points(8, 4, 3).mul(4).round().requires_grad_(True)  # exact: the expansion gives 0
    y = x.detach().clone().requires_grad_(True)
    d = fn(x, y, "euclidean")
    assert float((d.diagonal() if d.dim() == 2 else d).detach().max()) < 1e-5
    gx, gy = torch.autograd.grad(d.sum(), (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # off the diagonal the gradient is the usual unit vector (x - y) / ||x - y||
    if fn is pairwise:
        xs = points(9, 3, 3).requires_grad_(True)
        ys = points(10, 2, 3)
        (g,) = torch.autograd.grad(pairwise(xs, ys, "euclidean").sum(), xs)
        want = sum((xs.detach() - ys[j]) / (xs.detach() - ys[j]).norm(dim=1, keepdim=True) for j in range(2))
        torch.testing.assert_close(g, want)


@pytest.mark.parametrize("fn", [pairwise, paired])
def test_unknown_metric_raises(fn):
    x = points(11, 3, 2)
    with pytest.raises(ValueError, match="manhattan"):
        fn(x, x, "manhattan")
