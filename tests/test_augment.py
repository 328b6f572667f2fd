"""oneshot.augment: shapes, seeded determinism, identities, and what each transform may do."""

import math

import pytest
import torch
import torch.nn.functional as F

from oneshot.augment import KINDS, affine, augment, natural


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=6, c=1, s=28, seed=0) -> torch.Tensor:
    return torch.randn(b, c, s, s, generator=gen(seed))


def blob(b: int, s: int = 32, r: int = 3) -> torch.Tensor:
    """b copies of a bright square of side 2r centred in an s x s image [b, 1, s, s]."""
    x = torch.zeros(b, 1, s, s)
    x[:, :, s // 2 - r : s // 2 + r, s // 2 - r : s // 2 + r] = 1.0
    return x


def centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """x [B, 1, H, W] (non-negative) -> [B, 2] (row, col) in pixels."""
    h, w = x.shape[-2:]
    m = x[:, 0].clamp_min(0)
    total = m.sum((1, 2))
    rows = (m.sum(2) * torch.arange(h)).sum(1) / total
    cols = (m.sum(1) * torch.arange(w)).sum(1) / total
    return torch.stack([rows, cols], 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 3, 32, 32)])
def test_shape_and_dtype_are_kept(kind, shape):
    x = torch.randn(*shape, generator=gen(0))
    y = augment(x, kind, gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ["affine", "natural"])
def test_same_seed_same_output_other_seed_differs(kind):
    x = images(c=3, s=32)
    a, b = augment(x, kind, gen(7)), augment(x, kind, gen(7))
    assert torch.equal(a, b)
    assert not torch.allclose(a, augment(x, kind, gen(8)))
    assert not torch.allclose(a, x)


@pytest.mark.parametrize("kind", ["affine", "natural"])
def test_each_image_gets_its_own_transform(kind):
    x = images(b=1, c=1, s=32).expand(8, 1, 32, 32).contiguous()
    y = augment(x, kind, gen(3))
    flat = y.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


def test_none_is_the_identity():
    x = images()
    g = gen(0)
    y = augment(x, "none", g)
    assert torch.equal(y, x)
    assert torch.equal(g.get_state(), gen(0).get_state()), "'none' draws nothing from the generator"


def test_affine_with_zero_ranges_is_the_identity():
    x = images(c=3, s=20)
    y = affine(x, gen(0), degrees=0.0, scale=0.0, shift=0.0)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_affine_shift_moves_by_at_most_the_shift_range():
    s, shift = 32, 0.1
    x = blob(64, s)
    y = affine(x, gen(0), degrees=0.0, scale=0.0, shift=shift)
    assert y.sum((1, 2, 3)).sub(x.sum((1, 2, 3))).abs().max() < 1e-3, "a pure shift keeps the ink inside"
    moved = centre_of_mass(y) - centre_of_mass(x)
    assert moved.abs().max() <= shift * s + 0.05
    assert moved.abs().max() > 0.7 * shift * s, "the shift range is used"
    assert (moved > 0.5).any() and (moved < -0.5).any(), "shifts go both ways"


def test_affine_rotation_stays_within_the_angle_range():
    s, degrees = 41, 10.0
    x = torch.zeros(64, 1, s, s)
    x[:, :, s // 2 - 1 : s // 2 + 2, 4 : s - 4] = 1.0  # a horizontal bar through the centre
    y = affine(x, gen(1), degrees=degrees, scale=0.0, shift=0.0)
    # orientation of the bar from second moments around its centre of mass
    c = centre_of_mass(y)
    rr, cc = torch.meshgrid(torch.arange(s).float(), torch.arange(s).float(), indexing="ij")
    m = y[:, 0].clamp_min(0)
    dr, dc = rr - c[:, :1, None], cc - c[:, 1:, None]
    mu_rr, mu_cc, mu_rc = (m * dr * dr).sum((1, 2)), (m * dc * dc).sum((1, 2)), (m * dr * dc).sum((1, 2))
    angle = 0.5 * torch.atan2(2 * mu_rc, mu_cc - mu_rr) * 180 / math.pi
    assert angle.abs().max() <= degrees + 1.0
    assert angle.abs().max() > 0.6 * degrees, "the rotation range is used"
    assert (c - s // 2).abs().max() < 0.5, "a pure rotation keeps the centre"


def test_affine_scale_stays_within_the_scale_range():
    s, scale = 41, 0.2
    x = blob(64, s, r=6)
    y = affine(x, gen(2), degrees=0.0, scale=scale, shift=0.0)
    ratio = y.sum((1, 2, 3)) / x.sum((1, 2, 3))  # ink area scales as the square of the zoom
    assert ratio.min() >= (1 - scale) ** 2 - 0.05 and ratio.max() <= (1 + scale) ** 2 + 0.05
    assert ratio.max() - ratio.min() > 0.5 * ((1 + scale) ** 2 - (1 - scale) ** 2), "the scale range is used"


def crops(x: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of the reflect-padded x [C, H, W], as given and flipped left-right."""
    c, h, w = x.shape
    p = F.pad(x[None], (pad, pad, pad, pad), mode="reflect")[0]
    out = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = p[:, oy : oy + h, ox : ox + w]
            out += [crop, crop.flip(-1)]
    return out


def test_natural_without_jitter_is_a_padded_crop_possibly_flipped():
    pad = 3
    x = images(b=12, c=3, s=16, seed=4)
    y = natural(x, gen(5), pad=pad, jitter=0.0)
    for i in range(len(x)):
        assert any(torch.allclose(y[i], c, atol=1e-5) for c in crops(x[i], pad)), f"image {i} is no crop of its padded input"
    assert not all(torch.allclose(y[i], x[i], atol=1e-5) for i in range(len(x))), "some images are moved"


def test_natural_flips_about_half_and_keeps_channels_together():
    x = images(b=64, c=1, s=16, seed=6)
    x = torch.cat([x, 2 * x + 1, -x], 1)  # channels tied by known relations
    y = natural(x, gen(7), pad=0, jitter=0.0)  # no crop: only the flip is left
    flipped = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(64)]
    kept = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 <= sum(flipped) <= 48
    torch.testing.assert_close(y[:, 1], 2 * y[:, 0] + 1, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 2], -y[:, 0], atol=1e-5, rtol=0)


def test_natural_jitter_stays_within_its_range():
    jitter = 0.3
    x = images(b=64, c=3, s=16, seed=8)
    y = natural(x, gen(9), pad=0, jitter=jitter)
    base = natural(x, gen(9), pad=0, jitter=0.0)  # same draws for the flip, no jitter
    dm = y.mean((1, 2, 3)) - base.mean((1, 2, 3))  # brightness
    ds = y.std((1, 2, 3)) / base.std((1, 2, 3))  # contrast
    assert dm.abs().max() <= jitter + 1e-5 and dm.abs().max() > 0.5 * jitter
    assert ds.min() >= 1 - jitter - 1e-5 and ds.max() <= 1 + jitter + 1e-5
    assert ds.max() - ds.min() > jitter


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="cutout"):
        augment(images(), "cutout", gen(0))
