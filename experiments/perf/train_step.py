"""Training images/s of the Conv-4 step: oneshot's loop against a plain PyTorch loop.

Both train the same Conv-4 with batch-hard triplet loss on 32x4 Omniglot batches at 28x28
for the same number of steps, in one process, alternating so that machine load hits both
alike. The plain loop is what one writes first: default (NCHW) memory layout, the same
loss. oneshot's loop is `oneshot.train`'s step: channels-last layout.
Prints `name: figure` lines.
"""

from __future__ import annotations

import time

import torch

from oneshot import losses
from oneshot.data import load_split
from oneshot.encoders import Conv4, Siamese
from oneshot.episodes import generator, sample_batch

STEPS, ROUNDS, P, K = 40, 3, 32, 4


def make(channels_last: bool):
    torch.manual_seed(0)
    model = Siamese(Conv4(1), normalize=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), 1e-3)


def run(model, opt, split, channels_last: bool, steps: int) -> float:
    g = generator(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx, labels = sample_batch(split, P, K, g)
        x = split.to_float(split.images[idx])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = losses.triplet(model(x), labels, 0.5, "euclidean", "hard")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * P * K / (time.perf_counter() - t0)


def main() -> None:
    split = load_split("omniglot", "vinyals", "train")
    plain, ours = make(False), make(True)
    run(*plain, split, False, 3)  # warm-up
    run(*ours, split, True, 3)
    rates = {"plain": [], "ours": []}
    for _ in range(ROUNDS):
        rates["plain"].append(run(*plain, split, False, STEPS))
        rates["ours"].append(run(*ours, split, True, STEPS))
    best = {k: max(v) for k, v in rates.items()}
    print(f"conv4 train step, plain PyTorch (NCHW), 28x28: {best['plain']:.0f} images/s")
    print(f"conv4 train step, oneshot (channels-last), 28x28: {best['ours']:.0f} images/s")
    print(f"train step speed-up vs plain PyTorch loop: {best['ours'] / best['plain']:.2f}x "
          f"({torch.get_num_threads()} threads, best of {ROUNDS} rounds of {STEPS} steps)")


if __name__ == "__main__":
    main()
