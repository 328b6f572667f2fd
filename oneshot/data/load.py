"""Datasets as decoded uint8 tensors: find them under a data root, verify, decode once, split.

A `Split` is what every later stage consumes: images `[M, C, H, W]` uint8, integer labels
`[M]`, and optionally the group (alphabet) of each class and fixed episodes.
"""

from __future__ import annotations

import os
from pathlib import Path


from ..errors import DataError
from .split import Split

DEFAULT_ROOT = Path("data")


def data_root(arg: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `$ONESHOT_DATA`, else `./data`."""
    if arg:
        return Path(arg).expanduser()
    env = os.environ.get("ONESHOT_DATA")
    return Path(env).expanduser() if env else DEFAULT_ROOT


DATASETS = ("omniglot", "miniimagenet")
# The protocols of each named dataset, the first being its default. Folder and learn2learn
# datasets have one split of their own, and their protocol is only a label.
PROTOCOLS = {"omniglot": ("vinyals", "lake", "lake-within", "lake-20runs"), "miniimagenet": ("ravi",)}
LAKE = ("lake", "lake-within", "lake-20runs")
DISPLAY = {"omniglot": "Omniglot", "miniimagenet": "miniImageNet"}


def check_protocol(dataset: str, protocol: str | None) -> str | None:
    """The protocol to use for `dataset` (its default when None); unknown ones are refused."""
    known = PROTOCOLS.get(dataset)
    if known is None:
        return protocol
    if protocol is None:
        return known[0]
    if protocol not in known:
        raise DataError(f"unknown {DISPLAY.get(dataset, dataset)} protocol {protocol!r}; choose one of {', '.join(known)}")
    return protocol


def check_scoring(dataset: str, trained_on: str, protocol: str) -> None:
    """Refuse to score an encoder on a protocol whose test classes it was trained on: the
    Vinyals train split holds 236 of the 659 characters of the Lake evaluation set."""
    if dataset == "omniglot" and protocol in LAKE and trained_on not in LAKE:
        raise DataError(f"an encoder trained on the Omniglot {trained_on!r} split has seen characters of "
                        f"the {protocol!r} test set; train on protocol 'lake' (images_background only) "
                        f"to score on {', '.join(LAKE)}")


def load_split(
    dataset: str,
    protocol: str | None,
    split: str,
    root: str | os.PathLike | None = None,
    size: int | None = None,
) -> Split:
    """Load one split by name: `omniglot` (protocols vinyals, lake, lake-within, lake-20runs),
    `miniimagenet` (protocol ravi), `folder:PATH`, or `l2l:NAME` (learn2learn's files, see
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
