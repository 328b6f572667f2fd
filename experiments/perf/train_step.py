"""Training images/s of the Conv-4 step: oneshot's step against a plain PyTorch loop.

Both train a Conv-4 with batch-hard triplet loss (m = 0.5, L2-normalised embeddings) on
32x4 Omniglot batches at 28x28 with Adam, for the same number of steps, in one process,
alternating rounds so that machine load hits both alike.
- plain: what one writes first: the textbook [conv, BN, ReLU, max-pool] x 4 in the default
  (NCHW) memory layout, the same batches and loss.
- oneshot: `oneshot.step.step_loss` on the model of `oneshot.registry.build_model`, placed by
  `oneshot.step.place` (channels-last; each block pools before its ReLU), in fp32 and in the
  precision that `precision = "auto"` picks here (bf16 where the CPU has it natively).
Prints `name: figure` lines.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import torch
from torch import nn

from oneshot import losses
from oneshot.config import Config
from oneshot.data.load import load_split
from oneshot.data.episodes import generator, sample_batch
from oneshot.memory import keep_freed_memory
from oneshot.registry import build_model
from oneshot.step import place, resolved, step_loss

STEPS, ROUNDS = 40, 3
CFG = Config(loss="triplet", loss_params={"mining": "hard", "margin": 0.5}, batch_classes=32, batch_shots=4, normalize=True)
AUTO = resolved(dataclasses.replace(CFG, precision="auto"))


class PlainConv4(nn.Module):
    def __init__(self):
        super().__init__()
        layers = []
        for c_in in (1, 64, 64, 64):
            layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x):
        return nn.functional.normalize(self.net(x), dim=-1)


def plain_steps(split, state, steps: int) -> int:
    model, opt = state
    g = generator(0)
    for _ in range(steps):
        idx = sample_batch(split, CFG.batch_classes, CFG.batch_shots, g)
        labels = split.labels[idx]
        loss = losses.triplet(model(split.to_float(split.images[idx])), labels, CFG.loss_params["margin"], "euclidean", "hard")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * CFG.batch_classes * CFG.batch_shots


def oneshot_steps(cfg: Config, split, state, steps: int) -> int:
    model, opt = state
    g, n = generator(0), 0
    for _ in range(steps):
        loss, n_images = step_loss(cfg, split, model, None, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += n_images
    return n


def rate(fn, split, state, steps: int) -> float:
    t0 = time.perf_counter()
    n = fn(split, state, steps)
    return n / (time.perf_counter() - t0)


def main() -> None:
    keep_freed_memory()  # as every `oneshot` command does; process-wide, so both loops get it
    split = load_split("omniglot", "vinyals", "train")
    torch.manual_seed(0)
    plain = PlainConv4()
    runs = {"plain": (plain_steps, (plain, torch.optim.Adam(plain.parameters(), CFG.lr)))}
    for name, cfg in {"oneshot": CFG, "auto": AUTO}.items():
        if name == "auto" and AUTO.precision == "fp32":
            continue  # auto picks fp32 here: the same step as "oneshot"
        torch.manual_seed(0)
        model, _ = build_model(cfg, 1)
        place(cfg, model, None)
        runs[name] = (partial(oneshot_steps, cfg), (model, torch.optim.Adam(model.parameters(), cfg.lr)))
    for fn, state in runs.values():
        rate(fn, split, state, 3)  # warm-up
    rates = {k: [] for k in runs}
    for _ in range(ROUNDS):
        for k, (fn, state) in runs.items():
            rates[k].append(rate(fn, split, state, STEPS))
    best = {k: max(v) for k, v in rates.items()}
    best.setdefault("auto", best["oneshot"])
    how = f"({torch.get_num_threads()} threads, best of {ROUNDS} rounds of {STEPS} steps)"
    print(f"conv4 train step, plain PyTorch (NCHW, conv-BN-ReLU-pool), 28x28: {best['plain']:.0f} images/s")
    print(f"conv4 train step, oneshot (channels-last, pool before ReLU), fp32, 28x28: {best['oneshot']:.0f} images/s")
    print(f"conv4 train step, oneshot, precision auto -> {AUTO.precision}, 28x28: {best['auto']:.0f} images/s")
    print(f"train step speed-up vs plain PyTorch loop, fp32: {best['oneshot'] / best['plain']:.2f}x {how}")
    print(f"train step speed-up vs plain PyTorch loop, auto ({AUTO.precision}): {best['auto'] / best['plain']:.2f}x {how}")


if __name__ == "__main__":
    main()
