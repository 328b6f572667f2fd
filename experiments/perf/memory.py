"""What `oneshot.memory.keep_freed_memory` (called by every `oneshot` command) buys: training
images/s of the Conv-4 step at 84x84 (16x4 batches of random images, natural augmentation,
batch-hard triplet loss, Adam) with glibc's default malloc against the setting.

The setting is process-wide and cannot be undone, so each measurement runs in a fresh
process, alternating the two kinds; best of 3 each. Prints `name: figure` lines.
"""

from __future__ import annotations

import subprocess
import sys
import time

import torch

ROUNDS, STEPS, SIZE = 3, 12, 84


def child(keep: bool) -> None:
    """Print the images/s of STEPS oneshot training steps (after 2 warm-up steps)."""
    from augment import random_split  # the sibling script's random 84x84 images

    from oneshot.config import Config
    from oneshot.data.episodes import generator
    from oneshot.memory import keep_freed_memory
    from oneshot.registry import build_model
    from oneshot.step import place, step_loss

    if keep:
        keep_freed_memory()
    cfg = Config(dataset="miniimagenet", image_size=SIZE, loss="triplet", loss_params={"mining": "hard", "margin": 0.5},
                 batch_classes=16, batch_shots=4, augment="natural")
    split = random_split()
    model, head = build_model(cfg, 3)
    place(cfg, model, head)
    opt = torch.optim.Adam(model.parameters(), cfg.lr)
    g = generator(0)
    n, t0 = 0, 0.0
    for step in range(STEPS + 2):
        if step == 2:
            n, t0 = 0, time.perf_counter()
        loss, n_images = step_loss(cfg, split, model, head, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += n_images
    print(n / (time.perf_counter() - t0))


def main() -> None:
    rates = {"default": [], "keep": []}
    for _ in range(ROUNDS):
        for kind in rates:
            out = subprocess.run([sys.executable, __file__, "--child", kind], check=True, capture_output=True, text=True)
            rates[kind].append(float(out.stdout.split()[-1]))
    best = {k: max(v) for k, v in rates.items()}
    print(f"conv4 84x84 train step, glibc malloc defaults: {best['default']:.0f} images/s")
    print(f"conv4 84x84 train step, keep_freed_memory: {best['keep']:.0f} images/s")
    print(f"keep_freed_memory speed-up: {best['keep'] / best['default']:.2f}x "
          f"({torch.get_num_threads()} threads, best of {ROUNDS} processes of {STEPS} steps)")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(sys.argv[-1] == "keep")
    else:
        main()
