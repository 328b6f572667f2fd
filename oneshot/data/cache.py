"""The decode-once array cache: `$ONESHOT_CACHE` (default `~/.cache/oneshot`), atomic writes.

A cache entry is a folder of `.npy` arrays plus `meta.json`, named by a key that hashes
everything that made it (source file sizes and times, image size, format version), so a
changed source or size never reuses a stale entry. Entries are written to a temporary folder
and renamed into place, so an interrupted decode never leaves a half entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def cache_root() -> Path:
    """The cache folder: `$ONESHOT_CACHE`, else `~/.cache/oneshot`."""
    env = os.environ.get("ONESHOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "oneshot"


def fingerprint(paths: list[Path]) -> list:
    """A cheap identity of source files or trees: (name, size, mtime) of every file."""
    out = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    out.append([str(f.relative_to(p.parent)), st.st_size, st.st_mtime_ns])
        elif p.exists():
            st = p.stat()
            out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def cache_key(*parts) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load(folder: Path, mmap: bool) -> tuple[dict[str, np.ndarray], dict] | None:
    """A finished cache entry, or None when it is missing, partial or damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return {k: np.load(folder / f"{k}.npy", mmap_mode="r" if mmap else None) for k in meta["_arrays"]}, meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_arrays(
    name: str, key: str, build: Callable[[], tuple[dict[str, np.ndarray], dict]], mmap: bool = True
) -> tuple[dict[str, np.ndarray], dict]:
    """Load `<cache>/<name>-<key>/` or build it once with `build() -> (arrays, meta)`.

    Entries appear whole (written aside, then renamed); a partial or damaged one (copied in by
    hand, cut short) is built again and replaced."""
    folder = cache_root() / f"{name}-{key}"
    found = _load(folder, mmap)
    if found is not None:
        return found
    arrays, meta = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        for k, a in arrays.items():
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(a))
        (tmp / "meta.json").write_text(json.dumps({**meta, "_arrays": sorted(arrays)}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the entry first (as good as ours), or it is damaged
            if _load(folder, mmap) is None:
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _load(folder, mmap)
    if found is None:
        raise OSError(f"cache entry {folder} could not be written")
    return found
