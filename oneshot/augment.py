"""Augmentation on float tensors, batched and seeded: no per-image Python loop.

Random draws come from a CPU generator (the same stream on every device); the images may
live on any device and stay there.

`affine`: a random rotation, scale and translation per image (Omniglot-style strokes);
`natural`: random crop with padding, horizontal flip and brightness/contrast jitter (photos);
`resized-crop`: torchvision's `RandomResizedCrop` (area 8-100 %, aspect ratio 3/4-4/3, ten tries
then the whole image) resized back to the input size, and a horizontal flip: SimpleShot's and
most ImageNet recipes' training augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ConfigError

KINDS = ("none", "affine", "natural", "resized-crop")


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def affine(x: torch.Tensor, g: torch.Generator, degrees: float = 10.0, scale: float = 0.1,
           shift: float = 0.1) -> torch.Tensor:
    """x [B, C, H, W] -> same shape; rotation in +-degrees, scale 1+-scale, shift +-shift of the size."""
    b = x.shape[0]
    angle = _u(b, -degrees, degrees, g) * math.pi / 180
    s = 1 / _u(b, 1 - scale, 1 + scale, g)
    tx, ty = _u(b, -2 * shift, 2 * shift, g), _u(b, -2 * shift, 2 * shift, g)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def natural(x: torch.Tensor, g: torch.Generator, pad: int = 8, jitter: float = 0.4) -> torch.Tensor:
    """x [B, C, H, W] (normalised) -> same shape; crop with padding, h-flip, brightness/contrast."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (oy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1)
    cols = (ox.view(b, 1) + torch.arange(w)).view(b, 1, 1, w)
    flip = torch.rand(b, generator=g) < 0.5
    cols = torch.where(flip.view(b, 1, 1, 1), cols.flip(-1), cols)
    bi = torch.arange(b).view(b, 1, 1, 1)
    ci = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    out = padded[bi.to(x.device), ci.to(x.device), rows.to(x.device), cols.to(x.device)]
    bright = _u(b, -jitter, jitter, g).view(b, 1, 1, 1).to(x.device)
    contrast = _u(b, 1 - jitter, 1 + jitter, g).view(b, 1, 1, 1).to(x.device)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * contrast + mean + bright


def crop_boxes(b: int, h: int, w: int, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
               tries: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes for b images of h x w -> float [b, 4] (top, left, height, width).

    Per image, up to `tries` draws of an area fraction (uniform in `scale`) and an aspect ratio
    (log-uniform in `ratio`); the first box that fits is kept, else the whole image (torchvision's
    fallback for a ratio inside `ratio`). Its position is uniform among those that fit."""
    area = h * w * _u(b * tries, *scale, g).view(b, tries)
    aspect = torch.exp(_u(b * tries, math.log(ratio[0]), math.log(ratio[1]), g)).view(b, tries)
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.int().argmax(1, keepdim=True)
    found = fits.any(1)
    cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.tensor(float(w)))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.tensor(float(h)))
    top = torch.floor(torch.rand(b, generator=g) * (h - ch + 1))
    left = torch.floor(torch.rand(b, generator=g) * (w - cw + 1))
    return torch.stack([top, left, ch, cw], 1)


def resized_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x [B, C, H, W] -> same shape: a random resized crop of each image (`crop_boxes`), resized
    bilinearly as torchvision resizes the cropped image (samples clamped to the crop's own
    pixels), flipped horizontally with probability 1/2."""
    b, _, h, w = x.shape
    top, left, ch, cw = crop_boxes(b, h, w, g).unbind(1)
    flip = torch.rand(b, generator=g) < 0.5

    def axis(start, size, n, total):  # output pixel centres -> input coordinates, in [-1, 1]: [b, n]
        pix = start[:, None] + (torch.arange(n) + 0.5) * (size / n)[:, None] - 0.5
        pix = torch.minimum(torch.maximum(pix, start[:, None]), (start + size - 1)[:, None])
        return (2 * pix + 1) / total - 1

    gx = axis(left, cw, w, w)
    gx = torch.where(flip[:, None], gx.flip(1), gx)
    gy = axis(top, ch, h, h)
    grid = torch.stack([gx[:, None, :].expand(b, h, w), gy[:, :, None].expand(b, h, w)], -1)
    return F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """Apply augmentation `kind` (none, affine, natural, resized-crop) to a float batch [B, C, H, W]."""
    if kind == "none":
        return x
    if kind == "affine":
        return affine(x, g)
    if kind == "natural":
        return natural(x, g)
    if kind == "resized-crop":
        return resized_crop(x, g)
    raise ConfigError(f"unknown augmentation {kind!r}; choose one of {', '.join(KINDS)}")
