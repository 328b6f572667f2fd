"""Datasets as decoded uint8 tensors: find them under a data root, verify, decode once, split.

A `Split` is what every later stage consumes: images `[M, C, H, W]` uint8, integer labels
`[M]`, and optionally the group (alphabet) of each class and fixed episodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import DataError

DEFAULT_ROOT = Path("data")


@dataclass
class Split:
    """One split of one dataset under one protocol.

    images: uint8 [M, C, H, W]; labels: int64 [M] in [0, n_classes);
    groups: int64 [n_classes] (e.g. the alphabet of each class) or None;
    episodes: fixed episodes int64 [E, N, K+Q] (indices into images) or None;
    mean, std: per-channel statistics (0-1 scale) used to turn pixels into encoder input.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    groups: torch.Tensor | None = None
    group_names: list[str] = field(default_factory=list)
    episodes: torch.Tensor | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    _items: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of each class: indices padded with -1 [n_classes, max_items], counts [n_classes]."""
        if self._items is None:
            self._items = self._class_items()
        return self._items

    def _class_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.bincount(self.labels, minlength=self.n_classes)
        order = torch.argsort(self.labels, stable=True)
        table = torch.full((self.n_classes, int(counts.max())), -1, dtype=torch.long)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(len(order)) - starts[self.labels[order]]
        table[self.labels[order], pos] = order
        return table, counts

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> normalised float32 [B, C, H, W]."""
        x = images.float().div_(255)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std


def data_root(arg: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `$ONESHOT_DATA`, else `./data`."""
    if arg:
        return Path(arg).expanduser()
    env = os.environ.get("ONESHOT_DATA")
    return Path(env).expanduser() if env else DEFAULT_ROOT


DATASETS = ("omniglot", "miniimagenet")


def load_split(
    dataset: str,
    protocol: str | None,
    split: str,
    root: str | os.PathLike | None = None,
    size: int | None = None,
) -> Split:
    """Load one split by name: `omniglot` (protocols vinyals, lake, lake-within, lake-20runs),
    `miniimagenet`, `folder:PATH`, or `l2l:NAME` (learn2learn's files, see `oneshot.l2l`)."""
    if dataset == "omniglot":
        from .omniglot import load_omniglot

        return load_omniglot(data_root(root), protocol or "vinyals", split, size or 28)
    if dataset == "miniimagenet":
        from .miniimagenet import load_miniimagenet

        return load_miniimagenet(data_root(root), split, size or 84)
    if dataset.startswith("folder:"):
        from .imagefolder import load_folder

        return load_folder(Path(dataset[len("folder:"):]).expanduser(), split, size or 84)
    if dataset.startswith("l2l:"):
        from .l2l import load_l2l_split

        return load_l2l_split(dataset[len("l2l:"):], split, data_root(root), size)
    raise DataError(f"unknown dataset {dataset!r}; choose omniglot, miniimagenet, folder:PATH or l2l:NAME")
