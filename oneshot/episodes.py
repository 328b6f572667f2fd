"""Seeded N-way K-shot Q-query episodes as index tensors, and P x K training batches.

An episode set is an int64 tensor `[E, N, K+Q]` of indices into a split: row `[e, n]` holds
class n's K support items followed by its Q query items. Nothing is copied; images are
gathered by whoever needs them. Every draw comes from an explicit `torch.Generator`, so
the same seed gives the same episodes on any machine.
"""

from __future__ import annotations

import torch

from .data import Split

# Random keys are drawn in chunks of episodes so memory stays bounded for large E.
_CHUNK_KEYS = 1 << 24


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(int(seed))


def check_request(split: Split, n_way: int, n_shot: int, n_query: int, by_group: bool = False) -> None:
    """Raise ValueError, saying what is possible, if the episodes cannot be drawn from `split`."""
    for name, v in (("n_way", n_way), ("n_shot", n_shot)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if n_query < 0:
        raise ValueError(f"n_query must be non-negative, got {n_query}")
    _, counts = split.class_items()
    need = n_shot + n_query
    eligible = counts >= need
    if by_group:
        if split.groups is None:
            raise ValueError(f"{split.name} has no groups to draw episodes within")
        per_group = torch.bincount(split.groups[eligible], minlength=len(split.group_names))
        if int(per_group.max()) < n_way:
            raise ValueError(
                f"{n_way}-way within one group is impossible on {split.name}: the largest group has "
                f"{int(per_group.max())} classes with at least {need} items")
    elif int(eligible.sum()) < n_way:
        raise ValueError(
            f"{n_way}-way {n_shot}-shot {n_query}-query is impossible on {split.name}: "
            f"{int(eligible.sum())} of {split.n_classes} classes have at least {need} items "
            f"(the largest class has {int(counts.max())})")


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
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    check_request(split, n_way, n_shot, n_query, by_group)
    g = generator(seed)
    table, counts = split.class_items()
    need = n_shot + n_query
    eligible = counts >= need
    chunk = max(1, _CHUNK_KEYS // max(split.n_classes, n_way * table.shape[1]))
    out = []
    for start in range(0, n_episodes, chunk):
        e = min(chunk, n_episodes - start)
        out.append(_draw(table, counts, eligible, split.groups if by_group else None, n_way, need, e, g))
    return torch.cat(out)


def _draw(table, counts, eligible, groups, n_way, need, n_episodes, g):
    n_classes, max_items = table.shape
    keys = torch.rand(n_episodes, n_classes, generator=g)
    if groups is not None:
        per_group = torch.bincount(groups[eligible], minlength=int(groups.max()) + 1)
        ok_groups = torch.nonzero(per_group >= n_way).squeeze(1)
        pick = ok_groups[torch.randint(len(ok_groups), (n_episodes,), generator=g)]
        keys.masked_fill_((groups.unsqueeze(0) != pick.unsqueeze(1)) | ~eligible, -1)
    elif not bool(eligible.all()):
        keys.masked_fill_(~eligible, -1)
    classes = keys.topk(n_way, dim=1).indices  # [E, N]; uniform subset of the unmasked classes
    item_keys = torch.rand(n_episodes, n_way, max_items, generator=g)
    if bool((counts < max_items).any()):
        item_keys.masked_fill_(torch.arange(max_items) >= counts[classes].unsqueeze(-1), -1)
    slots = item_keys.topk(need, dim=2).indices  # [E, N, K+Q]; uniform items, no repeats
    return table[classes.unsqueeze(-1), slots]


def sample_batch(split: Split, n_classes: int, n_per_class: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One P x K training batch -> (indices [P*K], labels [P*K] in [0, P)), classes distinct."""
    table, counts = split.class_items()
    eligible = counts >= n_per_class
    if int(eligible.sum()) < n_classes:
        raise ValueError(f"a batch of {n_classes} classes x {n_per_class} items is impossible on "
                         f"{split.name}: only {int(eligible.sum())} classes have {n_per_class} items")
    idx = _draw(table, counts, eligible, None, n_classes, n_per_class, 1, g)[0]
    return idx.reshape(-1), torch.arange(n_classes).repeat_interleave(n_per_class)
