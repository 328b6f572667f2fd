"""miniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017) from `<root>/miniimagenet/`,
decoded once into the cache by `oneshot.data.decode`. For each split the first form found is read:
  (a) `<split>/<wnid>/<file>.jpg` or `<split>.zip` holding that tree (the processed release);
  (b) Ravi's flat `images/<file>.jpg` (or `images.zip`) plus `<split>.csv` (`filename,label`);
  (c) learn2learn's `mini-imagenet-cache-{train,validation,test}.pkl`.
All forms give the same `Split` for the same pixels: classes sorted by name, images sorted by
file name (pickle: by row) within a class. With `strict` the split must have the real structure
(`STRUCTURE`, 84x84 sources).
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .cache import cache_key, fingerprint
from .decode import FORMAT, SPLITS, Catalogue, Files, check_size, decode_split, train_stats
from .split import Split
from ..errors import DataError

STRUCTURE = {"train": (64, 600), "val": (16, 600), "test": (20, 600)}  # classes, images per class
NATIVE = 84
PICKLES = {"train": "train", "val": "validation", "test": "test"}
_PICKLE_OK = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "bytearray"),
}


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


def _group(source, pairs: list[tuple[str, object, object]]) -> Catalogue:
    """Catalogue from (class, sort key, ref) triples."""
    by_class: dict[str, list] = {}
    for cls, k, ref in pairs:
        by_class.setdefault(cls, []).append((k, ref))
    classes = sorted(by_class)
    return Catalogue(source, classes, [[r for _, r in sorted(by_class[c], key=lambda t: t[0])] for c in classes])


def _mini_catalogue(folder: Path, split: str, form: str, paths: list[Path], strict: bool) -> Catalogue:
    if form == "pickle":
        rows = _Rows(paths[0])
        return Catalogue(rows, sorted(rows.classes), [rows.classes[c] for c in sorted(rows.classes)])
    if form == "ravi":
        src = Files(paths[1])
        by_file = {PurePosixPath(n).name: n for n in src.names}
        pairs = []
        for file, label in _read_csv(paths[0]):
            if file not in by_file:
                raise DataError(f"{paths[0]}: {file} (class {label}) has no image in {paths[1]}")
            pairs.append((label, file, by_file[file]))
        return _group(src, pairs)
    src = Files(paths[0])
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
    check_size(size)
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
    images, labels, meta = decode_split(f"miniimagenet-{split}-{size}", key(split, form, paths),
                                        lambda: _mini_catalogue(folder, split, form, paths, strict),
                                        size, 3, native, check)
    if strict:  # the entry may have been built without strict
        check(meta["classes"], meta["counts"])
        if meta["source_sizes"] != [[NATIVE, NATIVE]]:
            raise DataError(f"{paths[0]}: images of sizes {meta['source_sizes']}, expected {NATIVE}x{NATIVE}")
    tkey = key("train", tform, tpaths)
    stats = train_stats(f"miniimagenet-stats-{size}", tkey, (f"miniimagenet-train-{size}", tkey),
                        lambda: _mini_catalogue(folder, "train", tform, tpaths, strict), size, 3, native)
    return Split(f"miniimagenet/{split}", images, labels, list(meta["classes"]), None, [], None,
                 tuple(stats["mean"]), tuple(stats["std"]))


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
