"""Feature transforms at test (SimpleShot, Wang et al. 2019), applied to embeddings before any
classifier or distance: `UN` (none), `L2N` (L2-normalised), `CL2N` (centred on the mean feature
of the run's training split, embedded once without augmentation, then L2-normalised)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .data.split import Split
from .errors import ConfigError
from .evaluate import embed_split

TRANSFORMS = ("UN", "L2N", "CL2N")


def check_transform(name: str) -> str:
    if name not in TRANSFORMS:
        raise ConfigError(f"unknown feature transform {name!r}; choose one of {', '.join(TRANSFORMS)}")
    return name


def transform(emb: torch.Tensor, name: str, mean: torch.Tensor | None = None) -> torch.Tensor:
    """emb [M, D] -> [M, D] under transform `name`; CL2N needs `mean` [D] (`base_mean`)."""
    check_transform(name)
    if name == "UN":
        return emb
    if name == "CL2N":
        if mean is None:
            raise ConfigError("transform CL2N needs the mean feature of the training split")
        emb = emb - mean
    return F.normalize(emb, dim=-1)


def base_mean(encode: Callable[[torch.Tensor], torch.Tensor], train: Split, **embed_kw) -> torch.Tensor:
    """The mean embedding [D] of every image of the training split `train`, without augmentation."""
    return embed_split(encode, train, **embed_kw).mean(0)


def transformed(emb: torch.Tensor, names, mean_of: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: transform(emb, name)} for each of `names`; `mean_of()` is called once, only for CL2N."""
    mean = mean_of() if "CL2N" in names else None
    return {name: transform(emb, name, mean) for name in names}
