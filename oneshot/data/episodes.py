"""Seeded N-way K-shot Q-query episodes as index tensors, and P x K training batches.

An episode set is an int64 tensor `[E, N, K+Q]` of indices into a split: row `[e, n]` holds
class n's K support items followed by its Q query items. Nothing is copied; images are
gathered by whoever needs them. Every draw comes from an explicit `torch.Generator`, so
the same seed gives the same episodes on any machine.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .split import Split

# Episodes are drawn in chunks so memory stays bounded for large E.
_CHUNK_ROWS = 1 << 20


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(int(seed))


def check_request(split: Split, n_way: int, n_shot: int, n_query: int, by_group: bool = False) -> None:
    """Raise ConfigError (a ValueError), saying what is possible, if the episodes cannot be drawn from `split`."""
    for name, v in (("n_way", n_way), ("n_shot", n_shot)):
        if v < 1:
            raise ConfigError(f"{name} must be at least 1, got {v}")
    if n_query < 1:
        raise ConfigError(f"n_query must be at least 1 (an episode needs at least one query to score), "
                          f"got {n_query}")
    _, counts = split.class_items()
    need = n_shot + n_query
    eligible = counts >= need
    if by_group:
        if split.groups is None:
            raise ConfigError(f"{split.name} has no groups to draw episodes within")
        per_group = torch.bincount(split.groups[eligible], minlength=len(split.group_names))
        if int(per_group.max()) < n_way:
            raise ConfigError(
                f"{n_way}-way within one group is impossible on {split.name}: the largest group has "
                f"{int(per_group.max())} classes with at least {need} items")
    elif int(eligible.sum()) < n_way:
        hint = ("; to score a folder on all its classes, use its split 'all' (oneshot eval --split all)"
                if split.name.startswith("folder:") and not split.name.endswith("/all") else "")
        raise ConfigError(
            f"{n_way}-way {n_shot}-shot {n_query}-query is impossible on {split.name}: "
            f"{int(eligible.sum())} of {split.n_classes} classes have at least {need} items "
            f"(the largest class has {int(counts.max())}){hint}")


def sample_episodes(
    split: Split, n_way: int, n_shot: int, n_query: int, n_episodes: int, seed: int, by_group: bool = False
) -> torch.Tensor:
    """Draw `n_episodes` episodes -> int64 [E, N, K+Q] indices into `split.images`.

    Classes are distinct within an episode and drawn uniformly among the classes with at
    least K+Q items; items are drawn uniformly without replacement within each class, so
    support and query are disjoint. With `by_group`, each episode first draws one group
    uniformly among the groups that have N eligible classes, then N classes inside it.
    """
    if n_episodes < 1:
        raise ConfigError(f"n_episodes must be at least 1, got {n_episodes}")
    check_request(split, n_way, n_shot, n_query, by_group)
    g = generator(seed)
    table, counts = split.class_items()
    need = n_shot + n_query
    eligible = counts >= need
    chunk = max(1, _CHUNK_ROWS // n_way)
    out = []
    for start in range(0, n_episodes, chunk):
        e = min(chunk, n_episodes - start)
        out.append(_draw(table, counts, eligible, split.groups if by_group else None, n_way, need, e, g))
    return torch.cat(out)


def _distinct(sizes: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n distinct positions per row, uniform without replacement in [0, sizes[r]) -> [R, n].

    Small pools: the n largest of uniform random keys (a uniform random subset). Large pools:
    a sequential draw, the k-th position uniform over the sizes[r] - k not yet taken, found by
    shifting a uniform index past the taken ones in increasing order; O(n^2) tensor ops over
    all rows at once, independent of the pool size.
    """
    width = int(sizes.max())
    if width <= 4 * n:
        keys = torch.rand(len(sizes), width, generator=g)
        keys.masked_fill_(torch.arange(width) >= sizes.unsqueeze(1), -1)
        return keys.topk(n, dim=1).indices
    chosen = torch.empty(len(sizes), 0, dtype=torch.long)
    for k in range(n):
        r = (torch.rand(len(sizes), dtype=torch.float64, generator=g) * (sizes - k)).long()
        for taken in chosen.sort(dim=1).values.unbind(1):
            r += (r >= taken).long()
        chosen = torch.cat([chosen, r.unsqueeze(1)], 1)
    return chosen


def _draw(table, counts, eligible, groups, n_way, need, n_episodes, g):
    """Classes (uniform among the eligible, within one group if given), then items."""
    if groups is None:
        pool = torch.nonzero(eligible).squeeze(1).unsqueeze(0)  # [1, C_eligible]
        row = torch.zeros(n_episodes, dtype=torch.long)
        sizes = torch.full((n_episodes,), pool.shape[1])
    else:
        n_groups = int(groups.max()) + 1
        per_group = torch.bincount(groups[eligible], minlength=n_groups)
        pool = torch.full((n_groups, int(per_group.max())), -1, dtype=torch.long)
        for gid in torch.nonzero(per_group).squeeze(1).tolist():
            members = torch.nonzero(eligible & (groups == gid)).squeeze(1)
            pool[gid, : len(members)] = members
        ok_groups = torch.nonzero(per_group >= n_way).squeeze(1)
        row = ok_groups[torch.randint(len(ok_groups), (n_episodes,), generator=g)]
        sizes = per_group[row]
    classes = pool[row.unsqueeze(1), _distinct(sizes, n_way, g)]  # [E, N]
    slots = _distinct(counts[classes].flatten(), need, g).view(n_episodes, n_way, need)
    return table[classes.unsqueeze(-1), slots]  # [E, N, K+Q]


def test_episodes(split: Split, protocol: str, n_way: int, n_shot: int, n_query: int, n_episodes: int,
                  seed: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A protocol's test episodes on `split` -> (episodes [E, N, K+Q], (N, K, Q) as drawn).

    A split with fixed episodes (Lake's 20 runs: 20-way 1-shot 1-query) gives them whatever was
    asked; `lake-within` draws every episode's classes from one alphabet; any other protocol
    draws seeded episodes, refused up front when the split cannot give them."""
    if split.episodes is not None:
        return split.episodes, (int(split.episodes.shape[1]), 1, int(split.episodes.shape[2]) - 1)
    by_group = protocol == "lake-within"
    return sample_episodes(split, n_way, n_shot, n_query, n_episodes, seed, by_group=by_group), (n_way, n_shot, n_query)


def sample_batch(split: Split, n_classes: int, n_per_class: int, g: torch.Generator) -> torch.Tensor:
    """One P x K training batch -> indices [P*K] into the split, class by class (K of each of P
    distinct classes; their labels are `split.labels[indices]`)."""
    table, counts = split.class_items()
    eligible = counts >= n_per_class
    if int(eligible.sum()) < n_classes:
        raise ConfigError(f"a batch of {n_classes} classes x {n_per_class} items is impossible on "
                         f"{split.name}: only {int(eligible.sum())} classes have {n_per_class} items")
    idx = _draw(table, counts, eligible, None, n_classes, n_per_class, 1, g)[0]
    return idx.reshape(-1)


class EpochBatches:
    """Batches of `size` indices into a split of `n` items, drawn uniformly without replacement
    within an epoch: each epoch is a permutation drawn from the generator passed to `next`, cut
    into batches; a remainder smaller than a batch is left out of that epoch. Its state (the
    epoch's permutation and the position in it) goes into checkpoints, so a resumed run draws
    the same batches."""

    def __init__(self, n: int, size: int):
        if size > n:
            raise ConfigError(f"batch_size {size} is larger than the training split ({n} images)")
        self.n, self.size = n, size
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self, g: torch.Generator) -> torch.Tensor:
        """The next batch -> int64 [size] indices."""
        if self.perm is None or self.pos + self.size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=g), 0
        idx = self.perm[self.pos:self.pos + self.size]
        self.pos += self.size
        return idx

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]
