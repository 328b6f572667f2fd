"""`Split`: what every stage after loading consumes (images, labels, groups, fixed episodes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


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

    def to(self, device: str | torch.device) -> "Split":
        """The same split with its images on `device` (moved once; labels stay on the CPU)."""
        return dataclasses.replace(self, images=self.images.to(device))

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> normalised float32 [B, C, H, W]."""
        x = images.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std
