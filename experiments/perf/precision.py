"""bf16 against fp32 on this machine: oneshot's training step, and one run of the default study.

- step: `oneshot.step.step_loss` + backward + Adam on the model of `build_model`, placed by
  `place`, in fp32 and in bf16 (encoder under autocast, loss in fp32), in one process,
  alternating rounds, best of rounds: at 28x28 (Omniglot train, 32x4 batches) and at 84x84
  (16x4 batches, natural augmentation, the mini-cpu preset's shape; random images as in
  augment.py, so no miniImageNet decode is needed). Both use the config of the presets' first
  run, `contrastive-m0.5`.
- run: the wall time (`run.json`) of the default preset's `contrastive-m0.5` (Omniglot, 2,000
  steps, with its validation) trained by `oneshot.train.train` into a temporary directory, in
  fp32 then in bf16. `--quick` (or ONESHOT_PERF_QUICK=1) trains 200 steps instead.
On a CPU without native bf16 it says so and measures nothing. Prints `name: figure` lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from augment import random_split  # the sibling script's random 84x84 images
from train_step import oneshot_steps  # the sibling script's timed step loop
from oneshot.config import Config
from oneshot.data.load import load_split
from oneshot.memory import keep_freed_memory
from oneshot.precision import bf16_supported
from oneshot.study.presets import load_preset
from oneshot.registry import build_model
from oneshot.step import place, resolved
from oneshot.train import train

ROUNDS = 5
QUICK = "--quick" in sys.argv or os.environ.get("ONESHOT_PERF_QUICK") == "1"
RUN_STEPS = 200 if QUICK else None  # None: the preset's own 2,000


def preset_run(preset: str, name: str = "contrastive-m0.5") -> Config:
    """The first run (seed) of configuration `name` in a preset."""
    _, studies = load_preset(preset)
    return next(c for st in studies for c in st.runs if c.name == name)


def steps(cfg: Config, split, state, n: int) -> float:
    """Images/s of n training steps."""
    t0 = time.perf_counter()
    return oneshot_steps(cfg, split, state, n) / (time.perf_counter() - t0)


def step_rates(base: Config, split, n: int) -> dict[str, float]:
    """Best images/s of fp32 and bf16 over ROUNDS alternating rounds of n steps."""
    cfgs = {p: resolved(dataclasses.replace(base, precision=p)) for p in ("fp32", "bf16")}
    states = {}
    for p, cfg in cfgs.items():
        torch.manual_seed(0)
        model, _ = build_model(cfg, split.images.shape[1])
        place(cfg, model, None)
        states[p] = (model, torch.optim.Adam(model.parameters(), cfg.lr))
        steps(cfg, split, states[p], 3)  # warm-up
    rates = {p: [] for p in cfgs}
    for _ in range(ROUNDS):
        for p, cfg in cfgs.items():
            rates[p].append(steps(cfg, split, states[p], n))
    return {p: max(r) for p, r in rates.items()}


def run_wall_time(cfg: Config, precision: str) -> float:
    cfg = dataclasses.replace(cfg, precision=precision, steps=RUN_STEPS or cfg.steps)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp, progress=False)
        return json.loads((Path(tmp) / "run.json").read_text())["wall_time_s"]


def main() -> None:
    keep_freed_memory()  # as every `oneshot` command does
    if not bf16_supported("cpu"):
        print("bf16 vs fp32: not measured, this CPU has no native bf16 (oneDNN without bf16 kernels; "
              "precision 'auto' trains in fp32 here)")
        return
    threads = torch.get_num_threads()
    omniglot, mini = preset_run("default"), preset_run("mini-cpu")
    shapes = [("28x28", f"32x4 {omniglot.dataset}", omniglot, load_split(omniglot.dataset, omniglot.protocol, "train"), 30),
              ("84x84", "16x4 random images, natural augmentation", mini, random_split(), 10)]
    for size, what, cfg, split, n in shapes:
        best = step_rates(cfg, split, n)
        for p in ("fp32", "bf16"):
            print(f"conv4 train step, oneshot {p}, {size} ({what}): {best[p]:.0f} images/s")
        print(f"bf16 train step speed-up, {size}: {best['bf16'] / best['fp32']:.2f}x "
              f"({threads} threads, best of {ROUNDS} rounds of {n} steps)")
    n_steps = RUN_STEPS or omniglot.steps
    wall = {p: run_wall_time(omniglot, p) for p in ("fp32", "bf16")}
    for p in ("fp32", "bf16"):
        print(f"default-study run {omniglot.name} ({n_steps} steps, with validation), {p}: {wall[p]:.1f} s")
    print(f"bf16 run speed-up: {wall['fp32'] / wall['bf16']:.2f}x ({threads} threads, one run each"
          f"{', --quick' if QUICK else ''})")


if __name__ == "__main__":
    main()
