"""Download datasets into a data root: verified, with progress bars, written atomically.

Each file goes to a hidden temporary file next to its destination (`.<name>.part-XXXX`), is
checked (size against Content-Length, MD5 where known, structure always) and only then
renamed into place, so a partial or corrupt download never looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
import sys
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from ..errors import DataError, OneshotError

TIMEOUT = 60  # seconds, per connect/read
CHUNK = 1 << 16
_LAKE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
_SNELL = ("https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
          "data/omniglot/splits/vinyals")

# dataset -> {path relative to <root>/<dataset>: canonical URL}
SOURCES: dict[str, dict[str, str]] = {
    "omniglot": {
        **{f"{z}.zip": f"{_LAKE}/{z}.zip"
           for z in ("images_background", "images_evaluation", "all_runs")},
        **{f"vinyals_split/{s}.txt": f"{_SNELL}/{s}.txt"
           for s in ("train", "val", "test", "trainval")},
    },
}
# (dataset, relative path) -> MD5 of the canonical file
MD5: dict[tuple[str, str], str] = {
    ("omniglot", "images_background.zip"): "68d2efa1b9178cc56df9314c21c6e718",
    ("omniglot", "images_evaluation.zip"): "6b91aef0f799c5bb55b94e3f2daec811",
}
MINIIMAGENET_HELP = """\
miniImageNet cannot be downloaded automatically: its images come from ImageNet and must be
obtained under ImageNet's terms of access (non-commercial research and education).
Place it in {folder} as either
  train.zip, val.zip, test.zip  (<split>/<wnid>/<file>.jpg) with train.csv, val.csv, test.csv
                                (Ravi & Larochelle split: header `filename,label`), or
  images/<file>.jpg plus the three CSVs (Ravi's original layout), or
  mini-imagenet-cache-{{train,validation,test}}.pkl  (learn2learn's caches)."""

_SPLIT_LINE = re.compile(r"^[^/\s]+/character\d+/rot\d{3}$")


def verify(path: Path, md5: str | None = None, name: str | None = None) -> None:
    """Raise DataError unless `path` has the given MD5 (if any) and a sound structure.

    `name` (default: the path's own) picks the check by suffix: `.zip` or `.txt`."""
    name = name or path.name
    suffix = Path(name).suffix
    if md5 is not None:
        h = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != md5:
            raise DataError(f"{name}: MD5 {h.hexdigest()} does not match the expected {md5}")
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise DataError(f"{name}: not a readable zip archive ({e})") from None
        except (zlib.error, NotImplementedError, RuntimeError) as e:  # damaged/odd member
            raise DataError(f"{name}: damaged zip archive ({e})") from None
        if bad is not None:
            raise DataError(f"{name}: member {bad} fails its CRC check")
    elif suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: not UTF-8 text ({e})") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise DataError(f"{name}: empty split file")
        bad = next((ln for ln in lines if not _SPLIT_LINE.match(ln)), None)
        if bad is not None:
            raise DataError(f"{name}: unexpected line {bad[:80]!r} "
                            "(want Alphabet/characterNN/rotDDD)")


def _download(url: str, dest: Path, md5: str | None) -> None:
    """Fetch `url` into `dest` via a verified temporary file; raise OneshotError on failure."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent)
    except OSError as e:
        raise OneshotError(f"cannot write into {dest.parent} ({e}); "
                           "is the data root writable?") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None, leave=False) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        if total is not None and got != total:
            raise DataError(f"truncated download: got {got} of {total} bytes")
        verify(tmp, md5, dest.name)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise OneshotError(f"{dest.name}: {url} answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise OneshotError(f"{dest.name}: cannot reach {url} ({e.reason})") from None
    except DataError as e:
        raise DataError(f"{url} -> {e}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise OneshotError(f"{dest.name}: download from {url} failed "
                           f"({type(e).__name__}: {e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def fetch(dataset: str, root: Path, base_url: str | None = None,
          force: bool = False) -> list[Path]:
    """Download `dataset` into `root/<dataset>/`; return the paths of all its files.

    Files already present that pass the structural checks are kept unless `force`.
    `base_url` replaces every source's URL: file X comes from `{base_url}/{dataset}/{X}`.
    """
    root = Path(root).expanduser()
    if dataset == "miniimagenet":
        raise OneshotError(MINIIMAGENET_HELP.format(folder=root / "miniimagenet"))
    if dataset not in SOURCES:
        raise OneshotError(f"cannot fetch {dataset!r}; choose one of: "
                           f"{', '.join(sorted(SOURCES))} (miniimagenet must be placed by hand)")
    if not root.is_dir():
        raise OneshotError(f"data root {root} does not exist or is not a folder; create it first")
    paths = []
    for rel, url in SOURCES[dataset].items():
        dest = root / dataset / rel
        md5 = MD5.get((dataset, rel))
        if base_url is not None:
            url = f"{base_url.rstrip('/')}/{dataset}/{rel}"
        if dest.is_file() and not force:
            try:
                verify(dest)
                paths.append(dest)
                continue
            except DataError as e:
                print(f"re-downloading {dest}: {e}", file=sys.stderr)
        _download(url, dest, md5)
        paths.append(dest)
    return paths
