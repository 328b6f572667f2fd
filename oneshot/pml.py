"""pytorch-metric-learning (PML, an optional extra): its classes by name, and losses with miners.

`loss = "pml:<LossClass>"` with `loss_params`, `miner = "pml:<MinerClass>"` with `miner_params`
(built in `oneshot.registry`). PML is imported when such a name is built, never at
`import oneshot`; without it, a `pml:` name raises ConfigError saying how to install it.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import torch
from torch import nn

from .errors import ConfigError

KINDS = ("losses", "miners", "distances", "reducers", "regularizers")
INSTALL = "pip install 'oneshot[pml]' (or: make install)"


def module(kind: str) -> ModuleType:
    """pytorch_metric_learning.<kind> (one of KINDS)."""
    try:
        return importlib.import_module(f"pytorch_metric_learning.{kind}")
    except ImportError as e:
        raise ConfigError(f"'pml:' names need pytorch-metric-learning, which cannot be imported ({e}); "
                          f"install it with: {INSTALL}") from e


def names(kind: str) -> list[str]:
    """The classes of pytorch_metric_learning.<kind> a config may name (base classes left out)."""
    return sorted(n for n, v in vars(module(kind)).items()
                  if inspect.isclass(v) and issubclass(v, nn.Module) and not n.startswith(("Base", "Generic")))


def lookup(name: str, kinds: tuple[str, ...] = KINDS) -> type:
    """The PML class `name`, looked for in `kinds` in turn (losses, miners, distances, ...)."""
    for kind in kinds:
        obj = getattr(module(kind), name, None)
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            return obj
    raise ConfigError(f"pytorch-metric-learning has no {' or '.join(kinds)} class {name!r}; "
                      f"choose one of {', '.join(names(kinds[0]))}")


class MinedLoss(nn.Module):
    """A PML-style loss on the pairs or triplets a miner picks in the batch:
    forward(emb, labels) = loss(emb, labels, miner(emb, labels)). The loss's parameters (and the
    miner's, if any) are this module's."""

    def __init__(self, loss: nn.Module, miner: nn.Module):
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """emb [B, D], labels [B] -> scalar."""
        return self.loss(emb, labels, self.miner(emb, labels))
