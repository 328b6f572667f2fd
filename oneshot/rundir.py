"""A run directory's files and their rules.

`config.json` holds the full resolved config, `run.json` the run's record (seed, commit, versions,
device, wall time, status), `curve.csv` the training curve, `best.pt` the best validation
checkpoint (with its config), `best@N.pt` the best one kept by N training images, `last.pt`
everything needed to resume, `tb/` TensorBoard events. Every file is written atomically. A
directory is the same run when its stored config has the same identity (`Config.identity`): it
may be resumed or finished on another device.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .checkpoint import checkpoint_or_none, load_checkpoint
from .config import Config, from_dict
from .errors import OneshotError, TrainingError
from .provenance import atomic_write_text

# A row per validation point: the step, its validation accuracy, and the training window that
# ended there (means over its steps, `progress.Window`; grad_norm: of its last step). A mined loss
# adds the fraction of its pairs or triplets with a non-zero loss and its mean hardest positive
# and negative distances; NaN where a loss has none (and in rows written before they were kept).
CURVE = ["step", "loss", "val_acc", "images_per_s", "lr", "emb_norm", "grad_norm", "active", "hardest_pos",
         "hardest_neg"]
_EVENTS_OFF_SAID = []


class RunDir:
    """The files of one run directory (`path`), read and written by their rules."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"

    def check(self, cfg: Config, resume: bool) -> None:
        """Refuse to resume into a directory that holds a run of another config."""
        stored = self.path / "config.json"
        if resume and stored.exists() and stored_identity(stored) != cfg.identity():
            raise TrainingError(f"{self.path} holds a run with a different config; use another --out, "
                              f"or --restart to overwrite it")

    def best_lost(self, cfg: Config, resume: bool) -> bool:
        """Whether a best.pt is there but cannot be read (it is set aside, and the run trained again
        from step 0, so it ends with the weights a fresh run gives)."""
        return resume and self.best.exists() and checkpoint_or_none(self.best, cfg.name) is None

    def finished(self) -> dict | None:
        """The record of a finished run (run.json with `curve`: curve.csv's text), else None."""
        if not self.best.exists() or self.status() != "finished":
            return None
        return json.loads((self.path / "run.json").read_text()) | {"curve": (self.path / "curve.csv").read_text()}

    def resume_step(self, cfg: Config) -> int:
        """The step a resumed run of `cfg` starts from: last.pt's when this directory holds a run
        of the same config and its last.pt can be read, else 0 (a run stopped early: `cfg.steps`).
        Reads only: an unreadable file is left where it is for the run to set aside."""
        stored = self.path / "config.json"
        if not self.last.exists() or not stored.exists() or stored_identity(stored) != cfg.identity():
            return 0
        try:
            state = load_checkpoint(self.last)
        except OneshotError:  # CheckpointError included
            return 0
        return cfg.steps if state.get("stopped") else min(int(state.get("step", 0)), cfg.steps)

    def status(self) -> str | None:
        """The status in run.json (None when it is missing or unreadable)."""
        try:
            return json.loads((self.path / "run.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return None

    def create(self, cfg: Config, resume: bool) -> None:
        """Make the directory and store the config; without `resume`, the last run's files go."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in ("last.pt", "best.pt", "curve.csv", "run.json"):
                (self.path / name).unlink(missing_ok=True)
        atomic_write_text(self.path / "config.json", json.dumps(cfg.to_dict(), indent=2))

    def write_record(self, record: dict) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(record, indent=2))

    def write_curve(self, curve: list[dict]) -> None:
        atomic_write_text(self.path / "curve.csv", curve_text(curve))

    def events(self, start: int):
        """A TensorBoard writer for `tb/` (events after `start`, the step the run resumes from, are
        dropped: they are trained again), or None when the tensorboard package is missing (said
        once per process)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not _EVENTS_OFF_SAID:
                print("oneshot: TensorBoard events off: the tensorboard package is not installed "
                      "(pip install 'oneshot[tensorboard]')", file=sys.stderr, flush=True)
                _EVENTS_OFF_SAID.append(True)
            return None
        return SummaryWriter(str(self.path / "tb"), purge_step=start or None)


def log_scalars(writer, step: int, values: dict) -> None:
    """Write the finite ones of `values` ({tag: number}) to a TensorBoard writer (None: nothing)."""
    if writer is None:
        return
    for tag, value in values.items():
        if math.isfinite(value):
            writer.add_scalar(tag, value, step)


def stored_identity(path: Path) -> dict | None:
    """The identity of the config stored in a JSON file (None when it is not a valid config)."""
    try:
        return from_dict(json.loads(Path(path).read_text())).identity()
    except (OSError, ValueError, OneshotError):
        return None


def curve_text(curve: list[dict]) -> str:
    """The rows of a training curve as curve.csv's text."""
    lines = [",".join(CURVE)] + [",".join(f"{row.get(c, math.nan):.6g}" for c in CURVE) for row in curve]
    return "\n".join(lines) + "\n"
