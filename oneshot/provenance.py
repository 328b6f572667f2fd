"""What a record needs to say how it was made: commit, versions, machine, time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from .errors import OneshotError


def git_commit(root: Path | None = None) -> str:
    """The repository's HEAD commit, with `-dirty` when tracked files other than those under
    `results/` differ from it (a benchmark rewrites its own committed records there)."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty and head else "")


def portable(args: list[str], roots: list[Path] | None = None) -> list[str]:
    """A command line as a record keeps it, without this machine's paths: an absolute path (alone
    or as `--key=path`) under one of `roots` (default: the repository and the working folder)
    becomes relative to it, any other keeps only its last part (`.../name`)."""
    roots = [Path(r) for r in (roots or [Path(__file__).resolve().parent.parent, Path.cwd()])]

    def one(text: str) -> str:
        if not text.startswith("/"):
            return text
        for root in roots:
            try:
                return Path(text).relative_to(root).as_posix() or "."
            except ValueError:
                continue
        return f".../{Path(text).name}"

    out = []
    for a in args:
        key, eq, value = a.partition("=")
        out.append(f"{key}={one(value)}" if eq and key.startswith("-") else one(a))
    return out


def provenance(device: str = "cpu") -> dict:
    """Commit, library versions, device and timestamp of the current process."""
    import numpy
    import torch

    from . import __version__

    return {
        "commit": git_commit(),
        "versions": {"oneshot": __version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": numpy.__version__},
        "device": device if device != "cpu" else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
        "platform": platform.platform(),
        "argv": portable(sys.argv),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_file(path: Path, data: bytes) -> None:
    """Write and flush `data` to disk (on a network filesystem a full disk may only show here)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one.

    Every file oneshot writes goes through here (checkpoints, records, tables, plots). A write
    that fails (a full disk) leaves the old file as it was and no temporary file, and raises an
    OneshotError naming the path and the errno."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{platform.node()}-{os.getpid()}")  # unique on shared storage
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(tmp, data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        why = f"[Errno {e.errno}] {e.strerror}" if e.errno else str(e)
        raise OneshotError(f"cannot write {path}: {why}") from e


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a text (UTF-8)."""
    atomic_write(path, text)
