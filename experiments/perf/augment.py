"""Cost of `augment="natural"` in the Conv-4 training step at miniImageNet size (84x84).

The same step as `oneshot.step` (sample a 16x4 batch, normalise, augment, channels-last,
batch-hard triplet loss, Adam) with augmentation "natural" against "none", in one process,
alternating rounds so that machine load hits both alike; best of 3 rounds each. The source is
random uint8 images [N, 3, 84, 84] (no dataset needed); `--real` uses miniImageNet's train
split instead (through `load_split`, so from the cache when it is there).
Prints `name: figure` lines.
"""

from __future__ import annotations

import sys
import time

import torch

from oneshot import losses
from oneshot.augment import augment
from oneshot.data.load import load_split
from oneshot.data.split import Split
from oneshot.encoders import Conv4, Siamese
from oneshot.data.episodes import generator, sample_batch
from oneshot.memory import keep_freed_memory

STEPS, ROUNDS, P, K, SIZE = 10, 3, 16, 4, 84


def random_split(n_classes: int = 64, per_class: int = 20) -> Split:
    """Random uint8 images [n_classes * per_class, 3, 84, 84] with miniImageNet-like statistics."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_classes * per_class, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return Split("random-84", images, labels, [str(c) for c in range(n_classes)],
                 mean=(0.47, 0.45, 0.41), std=(0.28, 0.27, 0.29))


def make():
    torch.manual_seed(0)
    model = Siamese(Conv4(3), normalize=True).to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), 1e-3)


def run(model, opt, split: Split, kind: str, steps: int) -> float:
    """Images/s of `steps` training steps with augmentation `kind`."""
    g = generator(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = sample_batch(split, P, K, g)
        labels = split.labels[idx]
        x = augment(split.to_float(split.images[idx]), kind, g)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = losses.triplet(model(x), labels, 0.5, "euclidean", "hard")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * P * K / (time.perf_counter() - t0)


def augment_ms(split: Split, n: int = 20) -> float:
    """Milliseconds per 16x4 batch of `natural` alone (best of 3)."""
    g = generator(0)
    x = split.to_float(split.images[:P * K])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            augment(x, "natural", g)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1000


def main() -> None:
    keep_freed_memory()  # as every `oneshot` command does
    split = load_split("miniimagenet", None, "train", size=SIZE) if "--real" in sys.argv else random_split()
    models = {"none": make(), "natural": make()}
    for kind, (model, opt) in models.items():
        run(model, opt, split, kind, 2)  # warm-up
    rates = {"none": [], "natural": []}
    for _ in range(ROUNDS):
        for kind, (model, opt) in models.items():
            rates[kind].append(run(model, opt, split, kind, STEPS))
    best = {k: max(v) for k, v in rates.items()}
    src = split.name
    print(f"conv4 84x84 train step, no augmentation: {best['none']:.0f} images/s")
    print(f"conv4 84x84 train step, with natural augmentation: {best['natural']:.0f} images/s")
    print(f"natural augmentation alone, 16x4 batch at 84x84: {augment_ms(split):.1f} ms")
    print(f"augmentation overhead: {100 * (best['none'] / best['natural'] - 1):.1f}% "
          f"({src}, {torch.get_num_threads()} threads, best of {ROUNDS} rounds of {STEPS} steps of {P}x{K})")


if __name__ == "__main__":
    main()
