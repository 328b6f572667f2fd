"""Image trees (a folder or a zip of one) decoded once into a uint8 cache and returned as
`Split`s (images uint8 [M, C, size, size]): the machinery behind miniImageNet and `load_folder`.

Pixels: decoded with PIL, stretched to size x size only when the source differs (box filter when
shrinking, bilinear when growing), stored channels first. Normalisation (`Split.mean`,
`Split.std`, 0-1 scale) comes from the whole training split: read from its cache entry when there
is one, else decoded without being stored; integer sums make both ways give the same numbers.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .cache import cache_key, cached_arrays, fingerprint
from .split import Split
from ..errors import DataError

SPLITS = ("train", "val", "test")
FORMAT = 1  # bump when the decoded layout changes
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
JUNK = {"thumbs.db", "desktop.ini", "__macosx"}


def _hidden(name: str) -> bool:
    return any(p.startswith(".") or p.lower() in JUNK for p in PurePosixPath(name).parts)


class Files:
    """Files of a folder or a zip, by relative posix name; decoded one at a time."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self._zip = None
            self.names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                                if p.is_file() and not _hidden(p.relative_to(path).as_posix()))
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{path}: not a readable zip archive ({e}); the file is corrupt or truncated") from None
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith("/") and not _hidden(n))

    def where(self, name: str) -> str:
        return str(self.path / name) if self._zip is None else f"{self.path}: member {name}"

    def _open(self, name: str) -> Image.Image:
        try:
            data = (self.path / name).read_bytes() if self._zip is None else self._zip.read(name)
            return Image.open(io.BytesIO(data))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, Image.DecompressionBombError) as e:
            if isinstance(e, (UnidentifiedImageError, Image.DecompressionBombError)):
                raise DataError(f"{self.where(name)} is not a readable image ({e})") from None
            raise DataError(f"{self.where(name)}: cannot read ({e}); the file is corrupt or truncated") from None

    def mode(self, name: str) -> str:
        """The image mode from the header alone."""
        return self._open(name).mode

    def image(self, name: str) -> Image.Image:
        im = self._open(name)
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{self.where(name)} is not a readable image ({e})") from None
        return im

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


class Catalogue:
    """What one split holds: `classes` sorted, `items[c]` the refs of class c, read from `source`."""

    def __init__(self, source, classes: list[str], items: list[list]):
        self.source, self.classes, self.items = source, classes, items

    @property
    def refs(self) -> list:
        return [r for rs in self.items for r in rs]

    @property
    def counts(self) -> list[int]:
        return [len(rs) for rs in self.items]


def _decode(source, refs: list, size: int, channels: int, native: int | None, desc: str):
    """Yield (uint8 [channels, size, size], source (w, h)) for each ref, with a progress bar.

    With `native`, a source image of another size is refused."""
    from tqdm import tqdm

    for ref in tqdm(refs, desc=desc, unit="img", leave=False):
        im = source.image(ref)
        if native is not None and im.size != (native, native):
            raise DataError(f"{source.where(ref)} is {im.size[0]}x{im.size[1]}, expected {native}x{native}")
        src_size = im.size
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (size, size):
            shrink = size <= min(im.size)
            im = im.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        yield (a[None] if channels == 1 else a.transpose(2, 0, 1)), src_size


class _Moments:
    """Exact per-channel pixel sums of uint8 batches [B, C, H, W] (integers: order-independent)."""

    def __init__(self, channels: int):
        self.s1, self.s2, self.n = [0] * channels, [0] * channels, 0

    def add(self, x: np.ndarray) -> None:
        for i in range(0, len(x), 256):
            b = x[i:i + 256].astype(np.int64)
            self.s1 = [t + int(v) for t, v in zip(self.s1, b.sum(axis=(0, 2, 3)))]
            self.s2 = [t + int(v) for t, v in zip(self.s2, np.square(b).sum(axis=(0, 2, 3)))]
            self.n += b.shape[0] * b.shape[2] * b.shape[3]

    def result(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (0-1 scale); a constant channel gets std 1."""
        n = max(self.n, 1)
        mean = [s / (n * 255) for s in self.s1]
        std = [math.sqrt((n * q - s * s) / (n * n * 255 * 255)) for s, q in zip(self.s1, self.s2)]
        return mean, [v if v > 1e-6 else 1.0 for v in std]


class _Absent(Exception):
    pass


def _peek(name: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of an existing cache entry, or None (never builds one)."""

    def absent():
        raise _Absent

    try:
        return cached_arrays(name, key, absent)[0]
    except _Absent:
        return None


def train_stats(name: str, key: str, train_entry: tuple[str, str], make_train, size: int, channels: int,
                native: int | None) -> dict:
    """Cached {mean, std} of the whole training split: from its cache entry `train_entry`
    (name, key) when that exists, else by decoding `make_train()` without storing it."""

    def build():
        m = _Moments(channels)
        arrays = _peek(*train_entry)
        if arrays is not None:
            m.add(arrays["images"])
        else:
            train = make_train()
            buf = np.empty((256, channels, size, size), dtype=np.uint8)
            k = 0
            try:
                for a, _ in _decode(train.source, train.refs, size, channels, native, "training statistics"):
                    buf[k], k = a, k + 1
                    if k == len(buf):
                        m.add(buf)
                        k = 0
            finally:
                train.source.close()
            m.add(buf[:k])
        mean, std = m.result()
        return {}, {"mean": mean, "std": std, "channels": channels}

    return cached_arrays(name, key, build)[1]


def decode_split(name: str, key: str, make, size: int, channels: int, native: int | None,
                 check=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Decode the catalogue `make()` once into the cache entry (name, key); images uint8
    [M, C, s, s] memory-mapped copy-on-write, labels int64 [M]. `make` runs only on a cache
    miss, and `check(classes, counts)` before decoding."""

    def build():
        cat = make()
        if check is not None:
            check(cat.classes, cat.counts)
        if sum(cat.counts) == 0:
            raise DataError(f"{cat.source.path}: no images in the classes of this split "
                            f"({', '.join(cat.classes[:5])}{', ...' if len(cat.classes) > 5 else ''})")
        imgs = np.empty((sum(cat.counts), channels, size, size), dtype=np.uint8)
        seen: set[tuple[int, int]] = set()
        try:
            for i, (a, src_size) in enumerate(_decode(cat.source, cat.refs, size, channels, native,
                                                      f"decoding {name} at {size}x{size}")):
                imgs[i] = a
                seen.add(src_size)
        finally:
            cat.source.close()
        labels = np.repeat(np.arange(len(cat.classes)), cat.counts).astype(np.int64)
        meta = {"classes": cat.classes, "counts": cat.counts, "source_sizes": sorted(seen), "size": size}
        return {"images": imgs, "labels": labels}, meta

    arrays, meta = cached_arrays(name, key, build)
    images = arrays["images"]
    if isinstance(images, np.memmap):  # copy-on-write: writeable for torch, still lazy and shared
        images = np.load(images.filename, mmap_mode="c")
    return torch.from_numpy(images), torch.from_numpy(np.array(arrays["labels"])), meta


def check_size(size: int) -> None:
    if not 4 <= size <= 512:
        raise DataError(f"image size {size} out of range; use 4..512 (84 is miniImageNet's native size)")


# --- image folders ------------------------------------------------------------------------------


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
        return sorted(d.name for d in p.iterdir() if d.is_dir() and not _hidden(d.name))

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
