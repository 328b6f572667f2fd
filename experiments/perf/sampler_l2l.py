"""oneshot against learn2learn on Omniglot, on this machine's CPU, in one run (a script, not a test).

1. Sampler: episodes/s of `sample_episodes` (one vectorised draw) + a per-episode gather of the
   images into a batch [N*(K+Q), 1, 28, 28] against learn2learn's TaskDataset (NWays, KShots,
   LoadData, RemapLabels, collated into a batch), Vinyals test split, 5-way 1+15 and 20-way
   5+15. Both read the same in-memory tensor of normalised float images, so both produce the
   same batch; an extra line times ours from the uint8 split with the float conversion.
2. Evaluator: 10,000 episodes 5-way 1-shot 15-query with a random-init Conv-4 (eval mode) on
   the Omniglot test set (images_evaluation, 13,180 images): `oneshot.evaluate.evaluate`
   (sample, embed the split once channels-last, score by indexing) against the loop a
   learn2learn user writes (per task: embed support and query, prototypes, nearest one),
   timed on `--loop-episodes` tasks and extrapolated per episode to 10,000.

Per-episode work is small tensor ops, which on a busy 2-core machine can run slower with two
threads than with one: each per-episode measurement (ours and learn2learn's) runs at the faster
of 1 and `--threads` threads, chosen on a short probe; the one-time embedding runs at `--threads`.
Prints `name: figure` lines, then one line per ratio. Needs ONESHOT_DATA (and ONESHOT_CACHE).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import time

import torch

from oneshot.data.load import load_split
from oneshot.data.split import Split
from oneshot.encoders import Conv4
from oneshot.data.episodes import sample_episodes
from oneshot.evaluate import embed_split, evaluate
from oneshot.data.l2l import FloatSplit, to_taskdataset

SETTINGS = ((5, 1, 15), (20, 5, 15))
EVAL_EPISODES = 10_000


def in_memory(split: Split) -> Split:
    """The split with its images read into memory (no memory-mapped pages to fault in while timing)."""
    return dataclasses.replace(split, images=split.images.clone())


def as_float(split: Split) -> FloatSplit:
    """The split's images normalised once: float32 [M, C, H, W], the items learn2learn loads."""
    return FloatSplit(split.name, split.to_float(split.images), split.labels, split.class_names)


def pick_threads(probe, threads: int) -> int:
    """Whichever of 1 and `threads` threads runs `probe()` faster; leaves torch set to it."""
    seconds = {}
    for th in sorted({1, threads}):
        torch.set_num_threads(th)
        start = time.perf_counter()
        probe()
        seconds[th] = time.perf_counter() - start
    best = min(seconds, key=seconds.get)
    torch.set_num_threads(best)
    return best


def at_best_threads(measure, probe: int, n: int, threads: int) -> tuple[float, int]:
    """`measure(n) -> units/s` run at whichever of 1 and `threads` threads is faster on `probe` units."""
    best = pick_threads(lambda: measure(probe), threads)
    return measure(n), best


def ours_rate(split: Split, n: int, k: int, q: int):
    """measure(E) -> episodes/s: one draw [E, N, K+Q], then each episode gathered into a float batch."""

    def measure(n_episodes: int) -> float:
        start = time.perf_counter()
        for ep in sample_episodes(split, n, k, q, n_episodes, seed=0):
            x = split.to_float(split.images.index_select(0, ep.flatten()))  # [N*(K+Q), C, H, W]
        assert x.shape[0] == n * (k + q) and x.dtype == torch.float32
        return n_episodes / (time.perf_counter() - start)

    return measure


def l2l_rate(fsplit: FloatSplit, n: int, k: int, q: int):
    """measure(T) -> tasks/s of learn2learn's TaskDataset, each task collated into (images, labels)."""
    taskset = to_taskdataset(fsplit, n, k, q)

    def measure(n_tasks: int) -> float:
        random.seed(0)
        start = time.perf_counter()
        for _ in range(n_tasks):
            x, y = taskset.sample()
        assert x.shape[0] == n * (k + q) and x.dtype == torch.float32
        return n_tasks / (time.perf_counter() - start)

    return measure


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


def loop_rate(model, fsplit: FloatSplit, layout, accuracies: list):
    """measure(E) -> episodes/s of the per-episode loop; appends each run's mean accuracy."""
    taskset = to_taskdataset(fsplit, 5, 1, 15)

    def measure(n_episodes: int) -> float:
        random.seed(0)
        loop_episode(model, taskset, 5, 1, layout)  # warm-up
        start = time.perf_counter()
        acc = [loop_episode(model, taskset, 5, 1, layout) for _ in range(n_episodes)]
        accuracies.append(sum(acc) / len(acc))
        return n_episodes / (time.perf_counter() - start)

    return measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ours-episodes", type=int, default=20_000)
    p.add_argument("--l2l-tasks", type=int, default=2_000)
    p.add_argument("--loop-episodes", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64,
                   help="embedding batch of the evaluator (64 is the fastest at 28x28 on a 2-core CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    split = in_memory(load_split("omniglot", "vinyals", "test", size=28))
    fsplit = as_float(split)
    ratios = []
    for n, k, q in SETTINGS:
        name = f"{n}-way {k}+{q}"
        ours, th_o = at_best_threads(ours_rate(fsplit, n, k, q), 1_000, args.ours_episodes, args.threads)
        theirs, th_l = at_best_threads(l2l_rate(fsplit, n, k, q), 100, args.l2l_tasks, args.threads)
        raw, th_r = at_best_threads(ours_rate(split, n, k, q), 1_000, args.ours_episodes, args.threads)
        print(f"oneshot sampler + gather, {name}: {ours:,.0f} episodes/s ({args.ours_episodes:,} episodes, "
              f"{th_o} thread(s))")
        print(f"learn2learn TaskDataset, {name}: {theirs:,.0f} episodes/s ({args.l2l_tasks:,} tasks, "
              f"{th_l} thread(s))")
        print(f"oneshot sampler + gather from uint8 + to_float, {name}: {raw:,.0f} episodes/s ({th_r} thread(s))")
        ratios.append(f"sampler vs learn2learn, {name}: {ours / theirs:.1f}x")

    split = in_memory(load_split("omniglot", "lake", "test", size=28))
    torch.manual_seed(0)
    model = Conv4(1).eval()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    kw = {"batch_size": args.batch_size, "progress": False}
    th = pick_threads(lambda: embed_split(model_cl, split, indices=torch.arange(2048), **kw), args.threads)
    start = time.perf_counter()
    episodes = sample_episodes(split, 5, 1, 15, EVAL_EPISODES, seed=0)
    res = evaluate(model_cl, split, episodes, 1, "nearest-prototype", **kw)
    ours_s = time.perf_counter() - start
    print(f"evaluator (sample, embed once, score), {EVAL_EPISODES:,} episodes 5-way 1+15 on {len(split.images):,} "
          f"images: {ours_s:.1f} s ({th} thread(s), batch {args.batch_size}, accuracy {100 * res['mean']:.1f}%)")
    torch.set_num_threads(args.threads)
    fsplit = as_float(split)
    for label, net, layout in (("as a user writes it", model, torch.contiguous_format),
                               ("channels-last too", model_cl, torch.channels_last)):
        acc: list[float] = []
        rate, th = at_best_threads(loop_rate(net, fsplit, layout, acc), 50, args.loop_episodes, args.threads)
        total = EVAL_EPISODES / rate
        print(f"per-episode loop ({label}): {1000 / rate:.1f} ms/episode over {args.loop_episodes} episodes "
              f"({th} thread(s)), {total:.0f} s extrapolated to {EVAL_EPISODES:,} (accuracy {100 * acc[-1]:.1f}%)")
        suffix = "" if net is model else " (loop also channels-last)"
        ratios.append(f"evaluator vs per-episode loop{suffix}, {EVAL_EPISODES:,} episodes: {total / ours_s:.1f}x")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
