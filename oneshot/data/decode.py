"""Decode once: the files of a folder or a zip (`Files`), what one split holds (`Catalogue`),
decoded into a uint8 cache entry (`decode_split`: images uint8 [M, C, size, size], labels int64
[M]) with the normalisation statistics of the training split (`train_stats`). Used by
miniimagenet and imagefolder; omniglot reads its files through `Files`.

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

from .cache import cached_arrays
from ..errors import DataError

SPLITS = ("train", "val", "test")
FORMAT = 1  # bump when the decoded layout changes
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
JUNK = {"thumbs.db", "desktop.ini", "__macosx"}


def hidden(name: str) -> bool:
    """Whether a relative posix name is, or lies under, a hidden file or junk (`JUNK`)."""
    return any(p.startswith(".") or p.lower() in JUNK for p in PurePosixPath(name).parts)


class Files:
    """Files of a folder or a zip, by relative posix name (hidden files and junk skipped); decoded
    one at a time.

    A zip's files are named as its members; a folder's relative to the folder, or with
    `relative_to` (a folder above it) relative to that: `Files(root / "set", relative_to=root)`
    names the files of an extracted `set.zip` holding `set/...` as the zip does."""

    def __init__(self, path: Path, relative_to: Path | None = None):
        self.path, self._root = path, relative_to or path
        if path.is_dir():
            self._zip = None
            self.names = sorted(p.relative_to(self._root).as_posix() for p in path.rglob("*")
                                if p.is_file() and not hidden(p.relative_to(path).as_posix()))
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{path}: not a readable zip archive ({e}); the file is corrupt or truncated") from None
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith("/") and not hidden(n))

    def where(self, name: str) -> str:
        return str(self._root / name) if self._zip is None else f"{self.path}: member {name}"

    def _corrupt(self, name: str, e: BaseException) -> DataError:
        return DataError(f"{self.where(name)}: cannot read ({e}); the file is corrupt or truncated")

    def read(self, name: str) -> bytes:
        """The bytes of file `name`."""
        try:
            return (self._root / name).read_bytes() if self._zip is None else self._zip.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
            raise self._corrupt(name, e) from None

    def _open(self, name: str) -> Image.Image:
        data = self.read(name)
        try:
            return Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise DataError(f"{self.where(name)} is not a readable image ({e})") from None
        except (zlib.error, EOFError, OSError) as e:
            raise self._corrupt(name, e) from None

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
