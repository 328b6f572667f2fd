"""oneshot against learn2learn on Omniglot, on this machine's CPU, in one run (a script, not a test).

1. Sampler: episodes/s of `sample_episodes` + a per-episode gather of float images
   [N*(K+Q), 1, 28, 28] against learn2learn's TaskDataset (NWays, KShots, LoadData,
   RemapLabels, collated into a batch), Vinyals test split, 5-way 1+15 and 20-way 5+15.
   learn2learn gets its best case: items already normalised float tensors in memory.
2. Evaluator: 10,000 episodes 5-way 1-shot 15-query with a random-init Conv-4 (eval mode) on
   the Omniglot test set (images_evaluation, 13,180 images): `oneshot.evaluate.evaluate`
   (sample, embed the split once channels-last, score by indexing) against the loop a
   learn2learn user writes (per task: embed support and query, prototypes, nearest one),
   timed on `--loop-episodes` tasks and extrapolated per episode to 10,000.

Prints `name: figure` lines, then one line per ratio. Needs ONESHOT_DATA (and ONESHOT_CACHE).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import time

import torch

from oneshot.data import Split, load_split
from oneshot.encoders import Conv4
from oneshot.episodes import sample_episodes
from oneshot.evaluate import evaluate
from oneshot.l2l import FloatSplit, to_taskdataset

SETTINGS = ((5, 1, 15), (20, 5, 15))
EVAL_EPISODES = 10_000


def in_memory(split: Split) -> Split:
    """The split with its images read into memory (no memory-mapped pages to fault in while timing)."""
    return dataclasses.replace(split, images=split.images.clone())


def as_float(split: Split) -> FloatSplit:
    """The split's images normalised once: float32 [M, C, H, W] items for learn2learn."""
    return FloatSplit(split.name, split.to_float(split.images), split.labels, split.class_names)


def ours_rate(split: Split, n: int, k: int, q: int, n_episodes: int) -> float:
    """Episodes/s: one vectorised draw [E, N, K+Q], then each episode gathered as float images."""
    start = time.perf_counter()
    for ep in sample_episodes(split, n, k, q, n_episodes, seed=0):
        x = split.to_float(split.images[ep.flatten()])  # [N*(K+Q), C, H, W]
    assert x.shape[0] == n * (k + q)
    return n_episodes / (time.perf_counter() - start)


def l2l_rate(fsplit: FloatSplit, n: int, k: int, q: int, n_tasks: int) -> float:
    """Tasks/s of learn2learn's TaskDataset, each task collated into (images, labels)."""
    taskset = to_taskdataset(fsplit, n, k, q)
    random.seed(0)
    taskset.sample()  # warm-up
    start = time.perf_counter()
    for _ in range(n_tasks):
        x, y = taskset.sample()
    assert x.shape[0] == n * (k + q)
    return n_tasks / (time.perf_counter() - start)


@torch.no_grad()
def loop_episode(model, taskset, n_way: int, n_shot: int, layout: torch.memory_format) -> float:
    """One task the way a learn2learn ProtoNet user scores it -> accuracy of its queries."""
    x, y = taskset.sample()
    order = torch.sort(y, stable=True).indices  # group the task by class
    x, y = x[order], y[order].view(n_way, -1)
    z = model(x.contiguous(memory_format=layout)).view(n_way, y.shape[1], -1)  # [N, K+Q, D]
    protos = z[:, :n_shot].mean(1)  # [N, D]
    query = z[:, n_shot:].flatten(0, 1)  # [N*Q, D]
    pred = y[:, 0][torch.cdist(query, protos).argmin(1)]
    return float((pred == y[:, n_shot:].flatten()).float().mean())


def loop_seconds_per_episode(model, fsplit: FloatSplit, n_episodes: int, layout) -> tuple[float, float]:
    """(seconds per episode, mean accuracy) of the per-episode loop over `n_episodes` tasks."""
    taskset = to_taskdataset(fsplit, 5, 1, 15)
    random.seed(0)
    for _ in range(5):  # warm-up
        loop_episode(model, taskset, 5, 1, layout)
    start = time.perf_counter()
    acc = [loop_episode(model, taskset, 5, 1, layout) for _ in range(n_episodes)]
    return (time.perf_counter() - start) / n_episodes, sum(acc) / len(acc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ours-episodes", type=int, default=20_000)
    p.add_argument("--l2l-tasks", type=int, default=2_000)
    p.add_argument("--loop-episodes", type=int, default=500)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}")

    split = in_memory(load_split("omniglot", "vinyals", "test", size=28))
    fsplit = as_float(split)
    ratios = []
    for n, k, q in SETTINGS:
        name = f"{n}-way {k}+{q}"
        ours = ours_rate(split, n, k, q, args.ours_episodes)
        theirs = l2l_rate(fsplit, n, k, q, args.l2l_tasks)
        print(f"oneshot sampler + gather, {name}: {ours:,.0f} episodes/s ({args.ours_episodes:,} episodes)")
        print(f"learn2learn TaskDataset, {name}: {theirs:,.0f} episodes/s ({args.l2l_tasks:,} tasks)")
        ratios.append(f"sampler vs learn2learn, {name}: {ours / theirs:.1f}x")

    split = in_memory(load_split("omniglot", "lake", "test", size=28))
    torch.manual_seed(0)
    model = Conv4(1).eval()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    model_cl(torch.zeros(64, 1, 28, 28).contiguous(memory_format=torch.channels_last))  # warm-up
    start = time.perf_counter()
    episodes = sample_episodes(split, 5, 1, 15, EVAL_EPISODES, seed=0)
    res = evaluate(model_cl, split, episodes, 1, "nearest-prototype", progress=False)
    ours_s = time.perf_counter() - start
    print(f"evaluator, {EVAL_EPISODES:,} episodes 5-way 1+15 on {len(split.images):,} images: {ours_s:.1f} s "
          f"(accuracy {100 * res['mean']:.1f}%)")
    fsplit = as_float(split)
    for label, net, layout in (("as a user writes it", model, torch.contiguous_format),
                               ("channels-last too", model_cl, torch.channels_last)):
        per_ep, acc = loop_seconds_per_episode(net, fsplit, args.loop_episodes, layout)
        total = per_ep * EVAL_EPISODES
        print(f"per-episode loop ({label}): {1000 * per_ep:.1f} ms/episode over {args.loop_episodes} episodes, "
              f"{total:.0f} s extrapolated to {EVAL_EPISODES:,} (accuracy {100 * acc:.1f}%)")
        suffix = "" if net is model else " (loop also channels-last)"
        ratios.append(f"evaluator vs per-episode loop{suffix}, {EVAL_EPISODES:,} episodes: {total / ours_s:.1f}x")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
