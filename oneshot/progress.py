"""Where a training run stands: `Progress`, what last.pt keeps besides the weights, the
optimiser and the random state (`save_last` writes them all, `restore_progress` reads them back),
and `Window`, what the steps since the last report showed.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from .checkpoint import checkpoint_or_none, restore, save
from .config import Config
from .data.episodes import EpochBatches
from .errors import TrainingError
from .optim import Stepper
from .rundir import RunDir


@dataclasses.dataclass
class Progress:
    """Where a run stands, as last.pt keeps it besides the weights and the optimiser."""

    step: int = 0
    best: float = -1.0
    best_step: int = 0
    waited: int = 0
    curve: list = dataclasses.field(default_factory=list)
    elapsed: float = 0.0
    stopped: bool = False


class Window:
    """The steps since the last report: the loss and the step's statistics (`step_loss`'s
    `stats`) summed on the device and read back (one host synchronisation) only when reported,
    the images and the time they took."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t, self.images, self.sums, self.counts = time.perf_counter(), 0, {}, {}

    def add(self, loss: torch.Tensor, images: int, stats: dict) -> None:
        self.images += images
        for key, value in {"loss": loss.detach(), **stats}.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def read(self, name: str, done: int) -> dict:
        """The means over the window ending at step `done` ({"loss": ..., "emb_norm": ..., ...})
        and its "images_per_s"; a NaN or infinite loss stops the run."""
        keys = list(self.sums)
        means = {k: v / self.counts[k] for k, v in zip(keys, torch.stack([self.sums[k].float() for k in keys]).tolist())}
        if not math.isfinite(means["loss"]):
            n = self.counts["loss"]
            raise TrainingError(f"{name}: the loss is {means['loss']} within steps {done - n + 1}-{done}; stopping "
                                "(try a lower lr or a normalised embedding). Resuming restarts from the last "
                                "validation point.")
        return means | {"images_per_s": self.images / (time.perf_counter() - self.t)}


def restore_progress(rd: RunDir, cfg: Config, model, criterion, stepper: Stepper, g: torch.Generator,
                     batches: EpochBatches | None, resume: bool) -> Progress:
    """Where the run stands: from `last.pt` when resuming one (the model, loss, optimiser, schedule,
    scaler, generator and epoch sampler put back as they were), else at step 0."""
    state = checkpoint_or_none(rd.last, cfg.name) if resume else None
    if state is None:
        return Progress()
    restore(state, model, criterion, stepper.opt, stepper.sched, g)
    if batches is not None:
        batches.load_state_dict(state["batches"])
    if stepper.scaler is not None and state.get("scaler"):
        stepper.scaler.load_state_dict(state["scaler"])
    prog = Progress(state["step"], state["best"], state.get("best_step", 0), state.get("waited", 0),
                    state["curve"], state["elapsed"], bool(state.get("stopped")))
    if prog.stopped:  # stopped early, then interrupted before the run was marked finished
        prog.step = cfg.steps
    return prog


def save_last(rd: RunDir, model, criterion, stepper: Stepper, g: torch.Generator, batches: EpochBatches | None,
              prog: Progress) -> None:
    """Write `last.pt`: everything `restore_progress` needs to go on from `prog`."""
    save(rd.last, {"model": model.state_dict(), "loss": criterion.state_dict(),
                   "opt": stepper.opt.state_dict(), "sched": stepper.sched.state_dict(), "rng": g.get_state(),
                   "batches": batches.state_dict() if batches is not None else None,
                   "scaler": stepper.scaler.state_dict() if stepper.scaler is not None else None,
                   "step": prog.step, "best": prog.best, "best_step": prog.best_step, "waited": prog.waited,
                   "stopped": prog.stopped, "curve": prog.curve, "elapsed": prog.elapsed})
