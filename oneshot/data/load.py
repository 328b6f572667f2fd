"""Datasets as decoded uint8 tensors: find them under a data root, verify, decode once, split.

A `Split` is what every later stage consumes: images `[M, C, H, W]` uint8, integer labels
`[M]`, and optionally the group (alphabet) of each class and fixed episodes.
"""

from __future__ import annotations

import os
from pathlib import Path


from ..errors import DataError
from .protocols import check_protocol
from .split import Split

DEFAULT_ROOT = Path("data")


def data_root(arg: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `$ONESHOT_DATA`, else `./data`."""
    if arg:
        return Path(arg).expanduser()
    env = os.environ.get("ONESHOT_DATA")
    return Path(env).expanduser() if env else DEFAULT_ROOT


def load_split(
    dataset: str,
    protocol: str | None,
    split: str,
    root: str | os.PathLike | None = None,
    size: int | None = None,
) -> Split:
    """Load one split by name: `omniglot` or `miniimagenet` under one of its protocols
    (`data.protocols.PROTOCOLS`), `folder:PATH`, or `l2l:NAME` (learn2learn's files, see
    `oneshot.data.l2l`). A protocol of None means the dataset's default."""
    protocol = check_protocol(dataset, protocol)
    if dataset == "omniglot":
        from .omniglot import load_omniglot

        return load_omniglot(data_root(root), protocol, split, size or 28)
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
