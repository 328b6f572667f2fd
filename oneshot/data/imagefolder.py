"""`folder:` datasets: an image tree `<split>/<class>/<image>` or `<class>/<image>` (a seeded
class split), decoded once by `decode` and returned as `Split`s (images uint8 [M, C, size, size]).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import torch

from .cache import cache_key, cached_arrays, fingerprint
from .decode import FORMAT, GREY_MODES, SPLITS, Catalogue, Files, check_size, decode_split, hidden, train_stats
from .split import Split
from ..errors import DataError


def assign_splits(classes: list[str], seed: int = 0,
                  fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)) -> dict[str, list[str]]:
    """Seeded class split {train, val, test: sorted class names}.

    Sort the names, permute them with `torch.randperm` on a `torch.Generator` seeded by `seed`,
    and cut the permutation into train, val, test of sizes proportional to `fractions` (largest
    remainder rounding, ties to the earlier split). With 3 or more classes every split gets at
    least one class, taken from the largest split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise DataError(f"split fractions must be three non-negative numbers (train, val, test); got {fractions}")
    names, n, total = sorted(classes), len(classes), float(sum(fractions))
    raw = [f / total * n for f in fractions]
    sizes = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (sizes[i] - raw[i], i))[: n - sum(sizes)]:
        sizes[i] += 1
    if n >= 3:
        for i in range(3):
            if sizes[i] == 0:
                sizes[max(range(3), key=lambda j: (sizes[j], -j))] -= 1
                sizes[i] += 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [names[i] for i in perm]
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": sorted(shuffled[:a]), "val": sorted(shuffled[a:b]), "test": sorted(shuffled[b:])}


def _layout(path: Path) -> dict[str, list[str]]:
    """{split folder: class folders}, or {"": class folders} for a tree without split folders."""
    if not path.is_dir():
        raise DataError(f"folder dataset {path} not found (or not a folder); expected <class>/<image> "
                        f"or <split>/<class>/<image>")

    def subdirs(p: Path) -> list[str]:
        return sorted(d.name for d in p.iterdir() if d.is_dir() and not hidden(d.name))

    top = subdirs(path)
    splits = [d for d in top if d in SPLITS]
    if not splits:
        return {"": top}
    other = [d for d in top if d not in SPLITS]
    if other:
        raise DataError(f"{path}: mixes split folders ({', '.join(splits)}) with other folders "
                        f"({', '.join(other[:3])}); use either <split>/<class>/<image> or <class>/<image>")
    return {s: subdirs(path / s) for s in splits}


def _class_files(files: Files, prefix: str, classes: list[str]) -> dict[str, list[str]]:
    """Files under `<prefix>/<class>/` (any depth) for each class, sorted."""
    depth = 1 if prefix else 0
    out: dict[str, list[str]] = {c: [] for c in classes}
    for name in files.names:
        parts = PurePosixPath(name).parts
        if (not prefix or parts[0] == prefix) and len(parts) > depth + 1 and parts[depth] in out:
            out[parts[depth]].append(name)
    return out


def _folder_catalogue(path: Path, prefix: str, classes: list[str]) -> Catalogue:
    files = Files(path)
    by_class = _class_files(files, prefix, classes)
    return Catalogue(files, classes, [by_class[c] for c in classes])


def _folder_channels(path: Path, layout: dict[str, list[str]]) -> int:
    """1 if every image of the dataset (all splits) has a greyscale mode, else 3."""
    files = Files(path)
    try:
        for prefix, classes in layout.items():
            for names in _class_files(files, prefix, classes).values():
                if any(files.mode(n) not in GREY_MODES for n in names):
                    return 3
        return 1
    finally:
        files.close()


def load_folder(path: Path, split: str, size: int = 84, seed: int = 0,
                fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)) -> Split:
    """One split of an image folder: images uint8 [M, C, size, size], groups None.

    Layout: `<split>/<class>/<image>` (split folders train, val, test) or `<class>/<image>`,
    whose classes are split by `assign_splits(classes, seed, fractions)`. Images may sit at any
    depth below their class folder; hidden files, Thumbs.db and desktop.ini are skipped, and any
    other file that is not a readable image is refused. Any size and mode: C is 1 when every
    image of the dataset has a greyscale mode (1, L, LA, I, I;16, F), else 3 (converted to RGB;
    alpha dropped, palette images count as colour); images are stretched to size x size.
    Classes keep all their images, however few: see `report_small_classes`. Statistics come
    from the train split (a tree with split folders but no train/ uses the split loaded)."""
    if split not in SPLITS + ("all",):
        raise DataError(f"folder datasets have splits {', '.join(SPLITS)} and all; got {split!r}")
    check_size(size)
    path = Path(path)
    layout = _layout(path)
    if split == "all" and "" not in layout:
        return _concat([load_folder(path, s, size, seed, fractions) for s in layout], f"folder:{path.name}/all")
    if split == "all":  # every class, e.g. to score a pretrained encoder; statistics from all of them
        prefix, classes, tprefix, tclasses = "", layout[""], "", layout[""]
    elif "" in layout:
        parts = assign_splits(layout[""], seed, fractions)
        prefix, classes, tprefix, tclasses = "", parts[split], "", parts["train"]
        if not classes:
            raise DataError(f"{path}: split {split!r} got no classes ({len(layout[''])} classes in all; "
                            f"a seeded split needs at least 3)")
    else:
        if split not in layout:
            raise DataError(f"{path}: no {split}/ folder (found {', '.join(sorted(layout))}/)")
        prefix, classes = split, layout[split]
        tprefix = "train" if "train" in layout else split
        tclasses = layout[tprefix]
        if not classes:
            raise DataError(f"{path / split}: no class folders")
    fp = fingerprint([path])
    channels = cached_arrays("folder-channels", cache_key(FORMAT, fp),
                             lambda: ({}, {"channels": _folder_channels(path, layout)}))[1]["channels"]

    def entry(pfx: str, cls: list[str], part: str) -> tuple[str, str]:
        return f"folder-{part}-{size}", cache_key(FORMAT, size, "folder", pfx, cls, fp, channels)

    images, labels, meta = decode_split(*entry(prefix, classes, split),
                                        lambda: _folder_catalogue(path, prefix, classes), size, channels, None)
    tentry = entry(tprefix, tclasses, tprefix or "train")
    stats = train_stats(f"folder-stats-{size}", tentry[1], tentry,
                        lambda: _folder_catalogue(path, tprefix, tclasses), size, channels, None)
    return Split(f"folder:{path.name}/{split}", images, labels, list(meta["classes"]), None, [], None,
                 tuple(stats["mean"]), tuple(stats["std"]))


def _concat(parts: list[Split], name: str) -> Split:
    """The splits of a tree with split folders as one split (class names prefixed by their split)."""
    offsets = [0]
    for p in parts[:-1]:
        offsets.append(offsets[-1] + p.n_classes)
    return Split(name, torch.cat([p.images for p in parts]), torch.cat([p.labels + o for p, o in zip(parts, offsets)]),
                 [f"{p.name.rsplit('/', 1)[-1]}/{c}" for p in parts for c in p.class_names], None, [], None,
                 parts[0].mean, parts[0].std)


def report_small_classes(split: Split, need: int) -> list[str]:
    """Names of the classes of `split` with fewer than `need` images (e.g. K shots + Q queries)."""
    counts = split.class_items()[1]
    return [name for name, c in zip(split.class_names, counts.tolist()) if c < need]
