"""The named datasets' protocols, in one place: which exist, which is each dataset's default,
which have fixed test episodes, and which encoders may be scored on which."""

from __future__ import annotations

from ..errors import DataError

# The protocols of each named dataset, the first being its default. Folder and learn2learn
# datasets have one split of their own, and their protocol is only a label.
PROTOCOLS = {"omniglot": ("vinyals", "lake", "lake-within", "lake-20runs"), "miniimagenet": ("ravi",)}
LAKE = ("lake", "lake-within", "lake-20runs")
# Protocols whose test split is a fixed set of episodes, and the (ways, shots, queries) of their
# task: Lake's 20 runs are 20-way 1-shot with one query per class. Scored on that task whatever
# settings a study or `oneshot eval` asks for.
FIXED_TASKS = {"lake-20runs": (20, 1, 1)}
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


def fixed_task(protocol: str) -> tuple[int, int, int] | None:
    """(ways, shots, queries) of a protocol of fixed episodes (`FIXED_TASKS`), else None."""
    return FIXED_TASKS.get(protocol)


def check_scoring(dataset: str, trained_on: str, protocol: str) -> None:
    """Refuse to score an encoder on a protocol whose test classes it was trained on: the
    Vinyals train split holds 236 of the 659 characters of the Lake evaluation set."""
    if dataset == "omniglot" and protocol in LAKE and trained_on not in LAKE:
        raise DataError(f"an encoder trained on the Omniglot {trained_on!r} split has seen characters of "
                        f"the {protocol!r} test set; train on protocol 'lake' (images_background only) "
                        f"to score on {', '.join(LAKE)}")
