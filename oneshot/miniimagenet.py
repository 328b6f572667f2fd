"""miniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017) and any image folder,
decoded once into a uint8 cache and returned as `Split`s (images uint8 [M, C, size, size]).

miniImageNet lives in `<root>/miniimagenet/`; for each split the first of these forms found is read:
  (a) `<split>/<wnid>/<file>.jpg` or `<split>.zip` holding that tree (the processed release);
  (b) Ravi's flat `images/<file>.jpg` (or `images.zip`) plus `<split>.csv` (`filename,label`);
  (c) learn2learn's `mini-imagenet-cache-{train,validation,test}.pkl`.
All forms give the same `Split` for the same pixels: classes sorted by name, images sorted by
file name (pickle: by row) within a class. With `strict` the split must have the real structure
(`STRUCTURE`, 84x84 sources); folder datasets are never held to it.

Pixels: decoded with PIL to RGB (folders: see `load_folder`), stretched to size x size only
when the source differs (box filter when shrinking, bilinear when growing), stored channels
first. Normalisation (`Split.mean`, `Split.std`, 0-1 scale) always comes from the training
split, all of it: read from the train split's cache entry when there is one, else decoded
without being stored; integer sums make both ways give the same numbers, whichever split is
loaded first.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .cache import cache_key, cached_arrays, fingerprint
from .data import Split
from .errors import DataError

SPLITS = ("train", "val", "test")
STRUCTURE = {"train": (64, 600), "val": (16, 600), "test": (20, 600)}  # classes, images per class
NATIVE = 84
FORMAT = 1  # bump when the decoded layout changes
PICKLES = {"train": "train", "val": "validation", "test": "test"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
JUNK = {"thumbs.db", "desktop.ini", "__macosx"}
_PICKLE_OK = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "bytearray"),
}


def _hidden(name: str) -> bool:
    return any(p.startswith(".") or p.lower() in JUNK for p in PurePosixPath(name).parts)


class _Files:
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


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_OK:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


class _Rows:
    """learn2learn's pickle: image_data uint8 [N, H, W, 3] and class_dict name -> row indices.

    Pickle can run code on load, so only the user's own file under their data root is read,
    and through an unpickler that accepts nothing but containers and numpy arrays.
    """

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(512).lstrip()
            if not head:
                raise DataError(f"{path}: empty file, not a pickle")
            if head.startswith(b"<"):
                raise DataError(f"{path}: an HTML page (a failed download?), not a pickle; fetch it again")
            f.seek(0)
            try:
                obj = _SafeUnpickler(f).load()
            except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
                raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); "
                                f"the file is corrupt or truncated") from None
        data = obj.get("image_data") if isinstance(obj, dict) else None
        classes = obj.get("class_dict") if isinstance(obj, dict) else None
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3:
            raise DataError(f"{path}: expected a dict with 'image_data' uint8 [N, H, W, 3]")
        if not isinstance(classes, dict):
            raise DataError(f"{path}: expected a dict with 'class_dict' (class name -> row indices)")
        self.data = data
        self.classes = {}
        for name, rows in classes.items():
            rows = sorted(int(r) for r in rows)
            if rows and (rows[0] < 0 or rows[-1] >= len(data)):
                raise DataError(f"{path}: class {name!r} lists rows outside 0..{len(data) - 1}")
            self.classes[str(name)] = rows

    def where(self, row: int) -> str:
        return f"{self.path}: row {row}"

    def mode(self, row: int) -> str:
        return "RGB"

    def image(self, row: int) -> Image.Image:
        return Image.fromarray(self.data[row])

    def close(self) -> None:
        pass


class _Catalogue:
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


def _stats(name: str, key: str, train_entry: tuple[str, str], make_train, size: int, channels: int,
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


def _split(name: str, key: str, make, size: int, channels: int, native: int | None,
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


# --- miniImageNet -------------------------------------------------------------------------------


def _form(folder: Path, split: str) -> tuple[str, list[Path]]:
    """Which form holds `split` and the files it is made of (for the cache key)."""
    csv_path = folder / f"{split}.csv"
    extra = [csv_path] if csv_path.is_file() else []
    if (folder / split).is_dir():
        return "tree", [folder / split] + extra
    if (folder / f"{split}.zip").is_file():
        return "zip", [folder / f"{split}.zip"] + extra
    for images in (folder / "images", folder / "images.zip"):
        if csv_path.is_file() and images.exists():
            return "ravi", [csv_path, images]
    pkl = folder / f"mini-imagenet-cache-{PICKLES[split]}.pkl"
    if pkl.is_file():
        return "pickle", [pkl]
    raise DataError(f"miniImageNet split {split!r} not found in {folder}: looked for {split}.zip or {split}/, "
                    f"images/ with {split}.csv, and {pkl.name}")


def _read_csv(path: Path) -> list[tuple[str, str]]:
    """Rows (filename, label) of a Ravi split file."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path}: expected the header 'filename,label'")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != 2 or not row[0] or not row[1]:
            raise DataError(f"{path}:{n}: expected 'filename,label', got {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip()))
    return out


def _group(source, pairs: list[tuple[str, object, object]]) -> _Catalogue:
    """Catalogue from (class, sort key, ref) triples."""
    by_class: dict[str, list] = {}
    for cls, k, ref in pairs:
        by_class.setdefault(cls, []).append((k, ref))
    classes = sorted(by_class)
    return _Catalogue(source, classes, [[r for _, r in sorted(by_class[c], key=lambda t: t[0])] for c in classes])


def _mini_catalogue(folder: Path, split: str, form: str, paths: list[Path], strict: bool) -> _Catalogue:
    if form == "pickle":
        rows = _Rows(paths[0])
        return _Catalogue(rows, sorted(rows.classes), [rows.classes[c] for c in sorted(rows.classes)])
    if form == "ravi":
        src = _Files(paths[1])
        by_file = {PurePosixPath(n).name: n for n in src.names}
        pairs = []
        for file, label in _read_csv(paths[0]):
            if file not in by_file:
                raise DataError(f"{paths[0]}: {file} (class {label}) has no image in {paths[1]}")
            pairs.append((label, file, by_file[file]))
        return _group(src, pairs)
    src = _Files(paths[0])
    pairs = []
    for name in src.names:
        parts = PurePosixPath(name).parts
        if form == "zip" and parts[0] == split:
            parts = parts[1:]
        if len(parts) != 2:
            raise DataError(f"{src.where(name)}: unexpected entry; expected {split}/<wnid>/<file>.jpg")
        pairs.append((parts[0], parts[1], name))
    cat = _group(src, pairs)
    if strict and len(paths) > 1:  # the split file must list exactly the images present
        listed = set(_read_csv(paths[1]))
        present = {(f, c) for c, rs in zip(cat.classes, cat.items) for f in (PurePosixPath(r).name for r in rs)}
        if listed != present:
            diff = sorted(listed - present)[:1] or sorted(present - listed)[:1]
            side = "listed but missing" if diff[0] in listed else "present but not listed"
            raise DataError(f"{paths[0]} does not match {paths[1]}: {diff[0][0]} ({diff[0][1]}) is {side}")
    return cat


def _structure(where: Path, split: str):
    """A check that the split has STRUCTURE[split] classes x images."""

    def check(classes: list[str], counts: list[int]) -> None:
        n, k = STRUCTURE[split]
        if len(classes) != n or any(c != k for c in counts):
            lo, hi = (min(counts), max(counts)) if counts else (0, 0)
            raise DataError(f"{where}: {split} has {len(classes)} classes of {lo}-{hi} images, expected "
                            f"{n} classes x {k}; a wrong or incomplete copy of miniImageNet")

    return check


def load_miniimagenet(root: Path, split: str, size: int = 84, strict: bool = True) -> Split:
    """One miniImageNet split from `<root>/miniimagenet`: images uint8 [M, 3, size, size].

    `strict` (default) refuses anything but STRUCTURE[split] classes x images of NATIVE x NATIVE."""
    if split not in SPLITS:
        raise DataError(f"miniImageNet has splits {', '.join(SPLITS)}; got {split!r}")
    _check_size(size)
    folder = Path(root) / "miniimagenet"
    if not folder.is_dir():
        raise DataError(f"miniImageNet not found: no folder {folder} (data root {root}; set it with "
                        f"--data-root or ONESHOT_DATA)")
    native = NATIVE if strict else None
    prints: dict[Path, list] = {}

    def key(s: str, form: str, paths: list[Path]) -> str:
        for p in paths:
            if p not in prints:
                prints[p] = fingerprint([p])
        return cache_key(FORMAT, size, form, s, [prints[p] for p in paths])

    try:
        tform, tpaths = _form(folder, "train")
    except DataError as e:
        raise DataError(f"{e}\n(the train split gives the normalisation statistics of every split)") from None
    form, paths = _form(folder, split)
    check = _structure(paths[0], split) if strict else None
    images, labels, meta = _split(f"miniimagenet-{split}-{size}", key(split, form, paths),
                                  lambda: _mini_catalogue(folder, split, form, paths, strict),
                                  size, 3, native, check)
    if strict:  # the entry may have been built without strict
        check(meta["classes"], meta["counts"])
        if meta["source_sizes"] != [[NATIVE, NATIVE]]:
            raise DataError(f"{paths[0]}: images of sizes {meta['source_sizes']}, expected {NATIVE}x{NATIVE}")
    tkey = key("train", tform, tpaths)
    stats = _stats(f"miniimagenet-stats-{size}", tkey, (f"miniimagenet-train-{size}", tkey),
                   lambda: _mini_catalogue(folder, "train", tform, tpaths, strict), size, 3, native)
    return Split(f"miniimagenet/{split}", images, labels, list(meta["classes"]), None, [], None,
                 tuple(stats["mean"]), tuple(stats["std"]))


def _check_size(size: int) -> None:
    if not 4 <= size <= 512:
        raise DataError(f"image size {size} out of range; use 4..512 ({NATIVE} is miniImageNet's native size)")


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


def _class_files(files: _Files, prefix: str, classes: list[str]) -> dict[str, list[str]]:
    """Files under `<prefix>/<class>/` (any depth) for each class, sorted."""
    depth = 1 if prefix else 0
    out: dict[str, list[str]] = {c: [] for c in classes}
    for name in files.names:
        parts = PurePosixPath(name).parts
        if (not prefix or parts[0] == prefix) and len(parts) > depth + 1 and parts[depth] in out:
            out[parts[depth]].append(name)
    return out


def _folder_catalogue(path: Path, prefix: str, classes: list[str]) -> _Catalogue:
    files = _Files(path)
    by_class = _class_files(files, prefix, classes)
    return _Catalogue(files, classes, [by_class[c] for c in classes])


def _folder_channels(path: Path, layout: dict[str, list[str]]) -> int:
    """1 if every image of the dataset (all splits) has a greyscale mode, else 3."""
    files = _Files(path)
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
    if split not in SPLITS:
        raise DataError(f"folder datasets have splits {', '.join(SPLITS)}; got {split!r}")
    _check_size(size)
    path = Path(path)
    layout = _layout(path)
    if "" in layout:
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

    images, labels, meta = _split(*entry(prefix, classes, split), lambda: _folder_catalogue(path, prefix, classes),
                                  size, channels, None)
    tentry = entry(tprefix, tclasses, tprefix or "train")
    stats = _stats(f"folder-stats-{size}", tentry[1], tentry, lambda: _folder_catalogue(path, tprefix, tclasses),
                   size, channels, None)
    return Split(f"folder:{path.name}/{split}", images, labels, list(meta["classes"]), None, [], None,
                 tuple(stats["mean"]), tuple(stats["std"]))


def report_small_classes(split: Split, need: int) -> list[str]:
    """Names of the classes of `split` with fewer than `need` images (e.g. K shots + Q queries)."""
    counts = split.class_items()[1]
    return [name for name, c in zip(split.class_names, counts.tolist()) if c < need]


def check(root: Path) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) for each miniImageNet split under `root`, for `oneshot data check`."""
    out = []
    for split in SPLITS:
        try:
            s = load_miniimagenet(root, split)
            out.append((f"miniimagenet {split}", True, f"{s.n_classes} classes, {len(s.labels)} images"))
        except DataError as e:
            out.append((f"miniimagenet {split}", False, str(e).splitlines()[0]))
    return out
