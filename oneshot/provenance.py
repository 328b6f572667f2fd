"""What a record needs to say how it was made: commit, versions, machine, time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path


def git_commit() -> str:
    """The repository's HEAD commit, with `-dirty` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty and head else "")


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
        "argv": sys.argv,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
