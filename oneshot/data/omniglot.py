"""Omniglot (Lake et al. 2015): the canonical zips (or their extracted trees), verified,
decoded once into a uint8 cache, and split by protocol.

Files: read through `decode.Files`, so hidden files and junk (.DS_Store, __MACOSX, Thumbs.db)
are skipped, and an extracted tree is named as its zip: both give the same arrays.

Pixels: the PNGs are one-bit with black ink on white; we store ink as 255 on a 0 background
(so zero padding and rotation are neutral) and resize with PIL's box filter (area averaging).

Protocols:
- `vinyals`: Vinyals et al. 2016 split files; each character rotated by 0/90/180/270 degrees
  (counter-clockwise) is its own class. Splits train, val, test, trainval.
- `lake`: train on `images_background` (964 characters), test on `images_evaluation` (659).
- `lake-within`: the same split; episodes draw all classes from one alphabet (groups).
- `lake-20runs`: the 20 fixed 20-way 1-shot runs of `all_runs.zip` (split `test` only).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cache import cache_key, cached_arrays, fingerprint
from .decode import Files
from .protocols import check_protocol
from .split import Split
from ..errors import DataError

SETS = {"images_background": (964, 30), "images_evaluation": (659, 20)}
DRAWINGS = 20
NATIVE = 105
FORMAT = 1  # bump when the decoded layout changes
VINYALS_SPLITS = {"train": 4112, "val": 688, "test": 1692, "trainval": 4800}
FETCH_HINT = "oneshot data fetch omniglot"

_PNG = re.compile(r"^(?P<set>images_background|images_evaluation)/(?P<alphabet>[^/]+)/"
                  r"(?P<char>character\d+)/(?P<id>\d{4})_(?P<drawer>\d{2})\.png$")


def _files(folder: Path, stem: str, top: bool = True) -> Files:
    """The files of `<stem>.zip` or of its extracted tree `<stem>/`, named as in the zip (whose
    names start with `<stem>/` when `top`)."""
    if (folder / stem).is_dir():
        return Files(folder / stem, relative_to=folder if top else None)
    if (folder / f"{stem}.zip").is_file():
        return Files(folder / f"{stem}.zip")
    raise DataError(f"Omniglot file {stem}.zip not found in {folder} (nor an extracted {stem}/).\n"
                    f"Fetch it with: {FETCH_HINT} --data-root {folder.parent}")


def _image(files: Files, name: str, size: int) -> np.ndarray:
    """One drawing as uint8 [size, size]: a NATIVE x NATIVE source, ink 255 on 0, box-resized."""
    im = files.image(name)
    if im.size != (NATIVE, NATIVE):
        raise DataError(f"{files.where(name)} is {im.size[0]}x{im.size[1]}, expected {NATIVE}x{NATIVE}")
    im = Image.eval(im.convert("L"), lambda v: 255 - v)
    if size != NATIVE:
        im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.uint8)


def _decode_sets(folder: Path, size: int) -> tuple[dict[str, np.ndarray], dict]:
    """Decode both image sets into images [1623, 20, size, size] with per-character metadata."""
    from tqdm import tqdm

    chars: list[tuple[str, str, str]] = []
    files: list[list[str]] = []
    srcs: dict[str, Files] = {}
    for stem, (n_chars, n_alpha) in SETS.items():
        src = srcs[stem] = _files(folder, stem)
        by_char: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for name in src.names:
            m = _PNG.match(name)
            if m is None or m["set"] != stem:
                raise DataError(f"{src.path}: unexpected entry {name!r}; expected "
                                f"{stem}/<Alphabet>/characterNN/IIII_DD.png")
            by_char.setdefault((m["alphabet"], m["char"]), []).append((m["drawer"], name))
        alphabets = {a for a, _ in by_char}
        if len(by_char) != n_chars or len(alphabets) != n_alpha:
            raise DataError(f"{src.path}: found {len(by_char)} characters in {len(alphabets)} "
                            f"alphabets, expected {n_chars} in {n_alpha}; wrong or incomplete archive")
        for (alpha, char), items in sorted(by_char.items()):
            drawers = sorted(d for d, _ in items)
            if drawers != [f"{i:02d}" for i in range(1, DRAWINGS + 1)]:
                raise DataError(f"{src.path}: {alpha}/{char} has drawings {drawers}, "
                                f"expected {DRAWINGS} drawers 01-{DRAWINGS}")
            chars.append((stem, alpha, char))
            files.append([n for _, n in sorted(items)])
    images = np.zeros((len(chars), DRAWINGS, size, size), dtype=np.uint8)
    for c, names in enumerate(tqdm(files, desc=f"decoding Omniglot at {size}x{size}", unit="char", leave=False)):
        for d, name in enumerate(names):
            images[c, d] = _image(srcs[chars[c][0]], name, size)
    for src in srcs.values():
        src.close()
    meta = {"sets": [c[0] for c in chars], "alphabets": [c[1] for c in chars],
            "characters": [c[2] for c in chars], "size": size}
    return {"images": images}, meta


def _decode_runs(folder: Path, size: int) -> tuple[dict[str, np.ndarray], dict]:
    """Decode all_runs.zip: images [20 runs, 20 classes, 2 (train, test), size, size]."""
    src = _files(folder, "all_runs", top=False)
    runs = sorted({n.split("/")[0] for n in src.names if re.match(r"run\d\d/", n)})
    if len(runs) != 20:
        raise DataError(f"{src.path}: found {len(runs)} runs, expected 20")
    images = np.zeros((20, 20, 2, size, size), dtype=np.uint8)
    for r, run in enumerate(runs):
        try:
            lines = src.read(f"{run}/class_labels.txt").decode().split()
        except UnicodeDecodeError:
            raise DataError(f"{src.path}: {run}/class_labels.txt is not text") from None
        pairs = list(zip(lines[0::2], lines[1::2]))
        classes = sorted({t for _, t in pairs})
        if len(pairs) != 20 or len(classes) != 20:
            raise DataError(f"{src.path}: {run}/class_labels.txt must pair 20 test items "
                            f"with 20 distinct training classes")
        for item, train in pairs:
            c = classes.index(train)
            images[r, c, 0] = _image(src, train, size)
            images[r, c, 1] = _image(src, item, size)
    src.close()
    return {"images": images}, {"runs": runs, "size": size}


def _characters(folder: Path, size: int):
    key = cache_key(FORMAT, size, fingerprint([folder / f"{s}.zip" for s in SETS]
                                              + [folder / s for s in SETS]))
    return cached_arrays(f"omniglot-{size}", key, lambda: _decode_sets(folder, size))


def _dataset_folder(root: Path) -> Path:
    folder = root / "omniglot"
    if not folder.is_dir():
        raise DataError(f"Omniglot not found: no folder {folder} (data root {root}; set it with "
                        f"--data-root or ONESHOT_DATA).\nFetch it with: {FETCH_HINT} --data-root {root}")
    return folder


def load_omniglot(root: Path, protocol: str = "vinyals", split: str = "test", size: int = 28) -> Split:
    """One Omniglot split under a protocol; images uint8 [M, 1, size, size]."""
    check_protocol("omniglot", protocol)
    if size < 4 or size > NATIVE:
        raise DataError(f"image size {size} out of range; use 4..{NATIVE} (28 is standard, {NATIVE} native)")
    folder = _dataset_folder(root)
    name = f"omniglot/{protocol}/{split}"
    if protocol == "lake-20runs":
        if split != "test":
            raise DataError("lake-20runs is a test protocol: its only split is 'test'")
        key = cache_key(FORMAT, size, fingerprint([folder / "all_runs.zip", folder / "all_runs"]))
        arrays, meta = cached_arrays(f"omniglot-runs-{size}", key, lambda: _decode_runs(folder, size))
        imgs = torch.from_numpy(np.array(arrays["images"]))  # [20, 20, 2, s, s]
        images = imgs.reshape(-1, 1, size, size)
        labels = torch.arange(400).repeat_interleave(2)
        episodes = torch.arange(800).view(20, 20, 2)
        names = [f"{run}/class{c + 1:02d}" for run in meta["runs"] for c in range(20)]
        groups = torch.arange(20).repeat_interleave(20)
        return Split(name, images, labels, names, groups, list(meta["runs"]), episodes)

    arrays, meta = _characters(folder, size)
    base = arrays["images"]
    if protocol in ("lake", "lake-within"):
        stem = {"train": "images_background", "test": "images_evaluation"}.get(split)
        if stem is None:
            raise DataError(f"the {protocol} protocol has splits 'train' (images_background) and "
                            f"'test' (images_evaluation); got {split!r}")
        chars = [i for i, s in enumerate(meta["sets"]) if s == stem]
        rotations = [0] * len(chars)
    else:
        chars, rotations = _vinyals_classes(folder, split, meta)
    alphabets = sorted({meta["alphabets"][c] for c in chars})
    alpha_id = {a: i for i, a in enumerate(alphabets)}
    images = torch.from_numpy(np.array(base[chars]))  # [C, 20, s, s]
    for k in (1, 2, 3):
        sel = [i for i, r in enumerate(rotations) if r == k]
        if sel:
            images[sel] = torch.rot90(images[sel], k, dims=(-2, -1))
    names = [f"{meta['alphabets'][c]}/{meta['characters'][c]}" + (f"/rot{r * 90:03d}" if protocol == "vinyals" else "")
             for c, r in zip(chars, rotations)]
    groups = torch.tensor([alpha_id[meta["alphabets"][c]] for c in chars])
    labels = torch.arange(len(chars)).repeat_interleave(DRAWINGS)
    return Split(name, images.reshape(-1, 1, size, size).contiguous(), labels, names, groups, alphabets)


def _vinyals_classes(folder: Path, split: str, meta: dict) -> tuple[list[int], list[int]]:
    if split not in VINYALS_SPLITS:
        raise DataError(f"the vinyals protocol has splits {', '.join(VINYALS_SPLITS)}; got {split!r}")
    path = folder / "vinyals_split" / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"Vinyals split file {path} not found.\nFetch it with: {FETCH_HINT} --data-root {folder.parent}")
    index = {(a, c): i for i, (a, c) in enumerate(zip(meta["alphabets"], meta["characters"]))}
    chars, rots = [], []
    for n, line in enumerate(path.read_text().split(), 1):
        m = re.fullmatch(r"([^/]+)/(character\d+)/rot(000|090|180|270)", line)
        if m is None or (m[1], m[2]) not in index:
            raise DataError(f"{path}:{n}: {line!r} is not an Omniglot class 'Alphabet/characterNN/rotDDD'")
        chars.append(index[(m[1], m[2])])
        rots.append(int(m[3]) // 90)
    if len(chars) != VINYALS_SPLITS[split]:
        raise DataError(f"{path}: {len(chars)} classes, expected {VINYALS_SPLITS[split]}")
    return chars, rots


def check(root: Path) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) for each part of Omniglot under `root`, for `oneshot data check`."""
    out = []
    for protocol, split in (("lake", "train"), ("lake", "test"), ("vinyals", "train"), ("vinyals", "val"),
                            ("vinyals", "test"), ("lake-20runs", "test")):
        try:
            s = load_omniglot(root, protocol, split)
            out.append((f"omniglot {protocol}/{split}", True, f"{s.n_classes} classes, {len(s.labels)} images"))
        except DataError as e:
            out.append((f"omniglot {protocol}/{split}", False, str(e).splitlines()[0]))
    return out
