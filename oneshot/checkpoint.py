"""Checkpoints: writing and reading `best.pt`, `last.pt` and the budget snapshots `best@N.pt` of a
run directory, putting a `last.pt` back into a model and optimiser, and the trained encoder (and
Koch head) of a run. Every file is written atomically; a file that cannot be read raises
CheckpointError naming it (or, when a run resumes, is moved aside to `<file>.corrupt`).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch
from torch import nn

from .config import Config, from_dict
from .encoders import Siamese
from .errors import OneshotError
from .provenance import atomic_write
from .registry import build_siamese


class CheckpointError(OneshotError):
    """A checkpoint file cannot be read (cut short by an interrupted copy, overwritten)."""


def save(path: Path, obj) -> None:
    """torch.save `obj` to `path`, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint with every tensor on the CPU; `load_state_dict` then copies the model and
    optimiser state to wherever their parameters live, and the generator state (which only a
    CPU byte tensor may set) stays where it must be. A file that is not a checkpoint (cut short,
    overwritten) raises CheckpointError naming it."""
    try:
        data = Path(path).read_bytes()  # a failing disk is an OSError here; a damaged file is not
    except OSError as e:
        raise OneshotError(f"cannot read {path}: [Errno {e.errno}] {e.strerror}") from e
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # torch reports a damaged file in many ways (zip, pickle, EOF, OSError)
        raise CheckpointError(f"{path} is unreadable (cut short or corrupt: "
                              f"{(str(e).strip().splitlines() or [type(e).__name__])[0].split('. ')[0]})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is unreadable (cut short or corrupt: not a checkpoint)")
    return state


def checkpoint_or_none(path: Path, name: str) -> dict | None:
    """The checkpoint at `path`; None when there is none or it cannot be read. An unreadable one
    is moved aside to `<file>.corrupt` (kept, not deleted) with a one-line warning."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        print(f"oneshot: warning: {e}; moved it to {aside.name}, {name} trains again from step 0",
              file=sys.stderr, flush=True)
        return None


def restore(state: dict, model: Siamese, criterion: nn.Module | None, opt, sched, g: torch.Generator) -> None:
    """Put a `last.pt` state back into a model and optimiser on any device."""
    model.load_state_dict(state["model"])
    if criterion is not None and state.get("loss") is not None:
        criterion.load_state_dict(state["loss"])
    elif criterion is not None and state.get("head") is not None:  # written when Koch's head was apart
        criterion.head.load_state_dict(state["head"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    g.set_state(state["rng"])


def snapshot_path(run_dir: Path, images: int) -> Path:
    """The best checkpoint a run had kept when it had seen `images` training images."""
    return Path(run_dir) / f"best@{images}.pt"


def copy_file(src: Path, dst: Path) -> None:
    atomic_write(dst, src.read_bytes())


def load_encoder(run_dir: str | Path, device: str = "cpu", checkpoint: str = "best.pt") -> tuple[Siamese, Config]:
    """The best checkpoint of a run directory (or another `checkpoint` of it, e.g. a snapshot
    `best@N.pt`) -> (encoder in eval mode, its config). The encoder is rebuilt from the stored
    config (`encoder`, `encoder_params`: a user's class is imported again); the loss is not
    needed and not built."""
    path = Path(run_dir) / checkpoint
    if not path.exists():
        raise OneshotError(f"no trained encoder in {run_dir}: {path.name} is missing "
                           f"(train one with: oneshot train --config ... --out {run_dir})")
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; train it again with: oneshot train --config ... --out {run_dir}") from e
    cfg = from_dict(state["config"])
    model = build_siamese(cfg, state["in_channels"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def load_koch_head(run_dir: str | Path, dim: int) -> nn.Module:
    """The similarity head a Koch run trained beside its encoder (from `best.pt`), in eval mode:
    head.similarity(e1 [n, dim], e2 [n, dim]) -> [n]."""
    from .losses import KochLoss

    state = load_checkpoint(Path(run_dir) / "best.pt")
    if state["config"]["loss"] != "koch" or state.get("loss") is None:
        raise OneshotError(f"{run_dir} was trained with loss {state['config']['loss']!r}, not 'koch': "
                           "it has no Koch head")
    loss = KochLoss(dim)
    loss.load_state_dict(state["loss"])
    return loss.head.eval()
