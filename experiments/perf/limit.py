"""How far the Conv-4 training step is from this CPU's limit, at 28 and 84 px.

- step: images/s of `oneshot.step.step_loss` + backward + the optimiser step, in bf16 autocast and
  channels-last (what `precision = "auto"` picks on a CPU with native bf16): at 28x28 a 32x4
  triplet batch (the default study's shape) and at 84x84 SimpleShot's batch of 256 with random
  resized crops (the mini-reproduce preset's first stage), random images as in augment.py;
- peak: this CPU's bf16 matrix-multiply rate (a 2048^3 bf16 matmul, best of rounds), the ceiling
  any convolution here can reach;
- utilisation: the step's convolution FLOPs (forward, input and weight gradients: three times the
  forward's 2 * H * W * C_in * C_out * 9 per layer, less the first layer's input gradient) per
  second against that peak;
- split: `torch.profiler` over a few 84x84 steps, the self CPU time of convolutions (forward and
  backward) against batch norm, ReLU, pooling, the augmentation's grid sampling and the rest.
- variants (`--variants`): the 84x84 step with one thing changed (batch size, memory layout,
  precision), each against the preset's step timed in the same round, to see what could cut it.
Prints `name: figure` lines. `--quick` (or ONESHOT_PERF_QUICK=1) times fewer steps.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from augment import random_split  # the sibling script's random 84x84 images
from oneshot.config import from_dict
from oneshot.data.episodes import EpochBatches, generator
from oneshot.data.split import Split
from oneshot.memory import keep_freed_memory
from oneshot.precision import bf16_supported
from oneshot.optim import optimizer
from oneshot.registry import build_model
from oneshot.step import place, resolved, step_loss

QUICK = "--quick" in sys.argv or os.environ.get("ONESHOT_PERF_QUICK") == "1"
STEPS, ROUNDS = (3, 1) if QUICK else (10, 3)

SETUPS = {  # name -> (config, image size)
    "28px triplet 32x4": (dict(loss="triplet", loss_params={"mining": "hard", "margin": 0.2}, batch_classes=32,
                               batch_shots=4, precision="auto"), 28),
    "84px softmax 256 (SimpleShot)": (dict(loss="softmax", normalize=False, batch_size=256, optimizer="sgd", lr=0.1,
                                           weight_decay=1e-4, augment="resized-crop", precision="auto",
                                           image_size=84), 84),
}
VARIANTS = {  # name -> what changes in the 84x84 SimpleShot step
    "batch 128": dict(batch_size=128),
    "batch 512": dict(batch_size=512),
    "NCHW (channels_last off)": dict(channels_last=False),
    "fp32": dict(precision="fp32"),
}


def split_of(size: int) -> Split:
    if size == 84:
        return random_split()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64 * 20, 1, size, size), generator=g, dtype=torch.uint8)
    return Split("random-28", images, torch.arange(64).repeat_interleave(20), [str(c) for c in range(64)])


def conv_flops(size: int, channels: int, hidden: int = 64) -> float:
    """Training FLOPs of Conv-4's convolutions for one image of size x size."""
    total, c_in = 0.0, channels
    for layer in range(4):
        fwd = 2 * size * size * c_in * hidden * 9
        total += fwd * (2 if layer == 0 else 3)  # the first layer needs no input gradient
        c_in, size = hidden, size // 2
    return total


def make(name: str, changes: dict | None = None):
    keys, size = SETUPS[name]
    cfg = resolved(from_dict({**keys, **(changes or {})}))
    split = split_of(size)
    torch.manual_seed(0)
    model, loss = build_model(cfg, split.images.shape[1], split.n_classes)
    place(cfg, model, loss)
    opt = optimizer(cfg, list(model.parameters()) + list(loss.parameters()))
    batches = EpochBatches(len(split.labels), cfg.batch_size) if cfg.batch_size else None
    return cfg, split, model, loss, opt, batches


def steps(state, n: int, g) -> int:
    cfg, split, model, loss_fn, opt, batches = state
    images = 0
    for _ in range(n):
        loss, k = step_loss(cfg, split, model, loss_fn, g, batches)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        images += k
    return images


def peak_bf16(n: int = 2048) -> float:
    a = torch.randn(n, n).bfloat16()
    b = torch.randn(n, n).bfloat16()
    a @ b
    best = 0.0
    for _ in range(ROUNDS + 2):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def split_of_time(state) -> dict[str, float]:
    """Self CPU time (ms per step) of the step's operators, in groups."""
    from torch.profiler import ProfilerActivity, profile

    g = generator(1)
    steps(state, 1, g)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(state, STEPS // 2 or 1, g)
    groups = {"convolution": ("conv", "mkldnn_convolution"), "batch norm": ("batch_norm",),
              "ReLU": ("relu", "threshold"), "max-pool": ("max_pool", "pool"),
              "augmentation (grid sample)": ("grid_sampler",)}
    out = {k: 0.0 for k in (*groups, "other")}
    for e in prof.key_averages():
        key = e.key.lower()
        hit = next((k for k, words in groups.items() if any(w in key for w in words)), "other")
        out[hit] += e.self_cpu_time_total / 1000 / (STEPS // 2 or 1)
    return out


def rate_of(state, g) -> float:
    """Images/s of a step: the best of ROUNDS rounds of STEPS steps, after a warm-up."""
    steps(state, 2, g)
    best = 0.0
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        n = steps(state, STEPS, g)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def variants() -> None:
    """Each variant of the 84x84 step against the step as the preset trains it, measured in turn."""
    name = "84px softmax 256 (SimpleShot)"
    base = rate_of(make(name), generator(0))
    print(f"variant baseline, {name}: {base:.0f} images/s")
    for label, changes in VARIANTS.items():
        rate = rate_of(make(name, changes), generator(0))
        print(f"variant {label}: {rate:.0f} images/s, {rate / base:.2f}x the baseline")


def main() -> None:
    keep_freed_memory()  # as every `oneshot` command does
    threads = torch.get_num_threads()
    if not bf16_supported("cpu"):
        print("step against the limit: this CPU has no native bf16; nothing measured")
        return
    peak = peak_bf16()
    print(f"bf16 matmul peak, 2048^3, {threads} threads: {peak / 1e9:.0f} GFLOP/s")
    for name in SETUPS:
        state = make(name)
        rate = rate_of(state, generator(0))
        size = SETUPS[name][1]
        flops = conv_flops(size, state[1].images.shape[1]) * rate
        print(f"conv4 train step, {name}, bf16 channels-last: {rate:.0f} images/s "
              f"({threads} threads, best of {ROUNDS} rounds of {STEPS} steps)")
        print(f"conv4 train step, {name}: convolutions at {flops / 1e9:.0f} GFLOP/s, "
              f"{100 * flops / peak:.0f}% of the bf16 matmul peak")
        if size == 84:
            parts = split_of_time(state)
            total = sum(parts.values())
            print(f"conv4 train step, {name}, time per step: {total:.0f} ms, of which "
                  + ", ".join(f"{k} {v:.0f} ms ({100 * v / total:.0f}%)" for k, v in parts.items()))
    if "--variants" in sys.argv:
        variants()


if __name__ == "__main__":
    main()
