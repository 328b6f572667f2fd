"""One driver per run: a claim in the run directory that every other driver sees and respects.

`claim(run_dir)` returns a `Claim` (a context manager that gives the run back) or None when a
live driver holds the run. The claim is `run.lock`, a JSON note of its holder (host, pid, start
time) whose modification time a thread of the holder refreshes every HEARTBEAT_S seconds (the
heartbeat). Notes are read and written under a short `filelock.FileLock` on `run.lock.guard`,
so two drivers never both claim a run. A note is stale, and taken over with a warning, when its
holder is a process of this host that no longer runs, or its heartbeat is older than STALE_S (a
node that died). Run directories must be on storage every driver sees (e.g. NFS, whose client
turns the guard's flock into a lock the server arbitrates).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import OneshotError
from ..provenance import atomic_write

LOCK_NAME, GUARD_NAME = "run.lock", "run.lock.guard"
HEARTBEAT_S = 30.0
STALE_S = 300.0
GUARD_TIMEOUT_S = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        note = json.loads(path.read_text())
        return note if isinstance(note, dict) else None
    except (OSError, ValueError):
        return None


def holder(run_dir: Path) -> str | None:
    """Who holds `run_dir`, in words ("host:pid, heartbeat 12 s ago"); None when nobody does."""
    path = Path(run_dir) / LOCK_NAME
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    note = _read(path) or {}
    return f"{note.get('host', '?')}:{note.get('pid', '?')}, heartbeat {age:.0f} s ago"


def stale(run_dir: Path) -> str | None:
    """Why the note in `run_dir` is stale (its holder is gone), or None while it is held."""
    path = Path(run_dir) / LOCK_NAME
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "no holder"
    note = _read(path)
    pid = (note or {}).get("pid")
    if not isinstance(pid, int) or pid <= 0:  # notes are written whole: not written by a driver
        return "the note is unreadable"
    if note.get("host") == socket.gethostname() and not _alive(pid):
        return f"process {pid} no longer runs on this host"
    if age > STALE_S:
        return f"no heartbeat for {age:.0f} s (more than {STALE_S:.0f} s)"
    return None


class Claim:
    """A claimed run directory; the heartbeat runs until `release()` (or the `with` block ends)."""

    def __init__(self, run_dir: Path, token: str):
        self.run_dir, self.token, self.lost = Path(run_dir), token, False
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"heartbeat {run_dir}")
        self._beat.start()

    def _mine(self) -> bool:
        return (_read(self.run_dir / LOCK_NAME) or {}).get("token") == self.token

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._mine():  # taken over: another driver judged this one dead
                self.lost = True
                print(f"oneshot: warning: another driver took over {self.run_dir / LOCK_NAME}",
                      file=sys.stderr, flush=True)
                return
            try:
                os.utime(self.run_dir / LOCK_NAME)
            except OSError:
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the note (when it is still this claim's)."""
        self._stop.set()
        self._beat.join()
        with _guard(self.run_dir):
            if self._mine():
                (self.run_dir / LOCK_NAME).unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _guard(run_dir: Path) -> FileLock:
    return FileLock(str(run_dir / GUARD_NAME), timeout=GUARD_TIMEOUT_S)


def claim(run_dir: Path) -> Claim | None:
    """Claim `run_dir` for this process; None when another live driver holds it. A stale note
    (see `stale`) is taken over with a one-line warning naming its holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    try:
        with _guard(run_dir):
            if path.exists():
                why = stale(run_dir)
                if why is None:
                    return None
                print(f"oneshot: warning: taking over {path} from {holder(run_dir)}: {why}",
                      file=sys.stderr, flush=True)
            token = uuid.uuid4().hex
            atomic_write(path, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    except Timeout as e:
        raise OneshotError(f"cannot lock {run_dir / GUARD_NAME} within {GUARD_TIMEOUT_S:.0f} s") from e
    return Claim(run_dir, token)
