"""Embedding geometry of trained runs: has an encoder collapsed, and how?

For each run directory (`RUN` for its best checkpoint, `RUN:last.pt` for the weights of its
latest resumable state), embeds a seeded sample of a split (60 images of every class by default)
without augmentation and prints one line:
- the mean norm of the encoder's raw output;
- on the L2-normalised embeddings: the mean distance between images of the same class and of
  other classes, and the smallest distance to another class (a hardest negative);
- |mean unit embedding|^2: 1 when every image maps to the same direction, near 0 when the
  directions spread over the sphere;
- the participation ratio of the centred embeddings' spectrum (sum s^2)^2 / sum s^4: how many
  dimensions the spread really uses.

    .venv/bin/python experiments/diagnose/geometry.py --dataset miniimagenet --size 84 \\
        runs/mini-reproduce/miniimagenet-reproduce/simpleshot/seed0 \\
        runs/mini-reproduce/miniimagenet-reproduce/contrastive-hard-m0.5/seed0:last.pt
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from oneshot.checkpoint import load_checkpoint, load_encoder
from oneshot.data.load import load_split
from oneshot.evaluate import embed_split
from oneshot.precision import resolve


def sample(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` images of every class (fewer where a class has fewer), seeded."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks)


def geometry(raw: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """raw [M, D] encoder outputs, y [M] labels -> the statistics of the module docstring."""
    e = F.normalize(raw, dim=-1)
    d = torch.cdist(e, e)
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool)
    s2 = torch.linalg.svdvals(e - e.mean(0)) ** 2
    return {"raw_norm": raw.norm(dim=1).mean().item(), "same": d[same & off].mean().item(),
            "other": d[~same].mean().item(), "closest_other": d[~same].min().item(),
            "mean_dir": (e.mean(0).norm() ** 2).item(), "participation": (s2.sum() ** 2 / (s2 ** 2).sum()).item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directory, or RUN:last.pt")
    ap.add_argument("--dataset", default="miniimagenet")
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    split = load_split(args.dataset, args.protocol, args.split, size=args.size)
    idx = sample(split.labels, args.per_class, args.seed)
    for spec in args.runs:
        run, _, ck = spec.partition(":")
        model, cfg = load_encoder(run)
        if ck == "last.pt":
            model.load_state_dict(load_checkpoint(f"{run}/last.pt")["model"])
        with torch.no_grad():
            raw = embed_split(lambda x: model.encoder(x).flatten(1), split, indices=idx, progress=False,
                              precision=resolve(cfg.precision, "cpu"))
        g = geometry(raw, split.labels[idx])
        print(f"{spec}: raw norm {g['raw_norm']:.1f}; unit distances same class {g['same']:.3f}, other "
              f"{g['other']:.3f}, closest other {g['closest_other']:.3f}; |mean unit embedding|^2 "
              f"{g['mean_dir']:.3f}; participation ratio {g['participation']:.1f} of {raw.shape[1]}")


if __name__ == "__main__":
    main()
