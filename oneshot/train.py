"""One plain training loop: batches (P x K, or uniform), a Siamese encoder, a loss, an optimiser
and a schedule; validation on fixed episodes, the best checkpoint kept. The step itself is
`oneshot.step`'s, the bookkeeping of where the run stands `oneshot.progress`'s.

It trains into a run directory (`oneshot.rundir` says what each file holds), so an interrupted
run can be resumed or restarted; a checkpoint that cannot be read (cut short by a copy) is moved
aside to `<file>.corrupt` and the run trained again from step 0, which gives the same weights.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import copy_file, load_checkpoint, save, snapshot_path
from .config import Config, from_dict
from .data.episodes import EpochBatches, generator, sample_episodes
from .data.load import load_split
from .data.split import Split
from .encoders import Siamese
from .errors import TrainingError
from .evaluate import embed_split, score_episodes
from .optim import Stepper
from .progress import Progress, Window, restore_progress, save_last
from .provenance import provenance
from .registry import build_model
from .rundir import RunDir, curve_text, log_scalars
from .step import place, resolved, step_loss

def validate(model: Siamese | None, cfg: Config, val: Split, episodes: torch.Tensor) -> float:
    """Mean accuracy on the fixed validation episodes, scored by `val_classifier` under
    `val_distance`; with `model` None, of the raw pixels (the bar a run must clear not to count
    as collapsed)."""
    if model is None:
        emb = embed_split(lambda x: x.flatten(1), val, device=val.images.device, progress=False)
    else:
        model.eval()
        emb = embed_split(model, val, device=cfg.device, progress=False, precision=cfg.precision)
        model.train()
    return float(score_episodes(emb, episodes, cfg.val_shots, cfg.val_classifier, cfg.val_distance).mean())


def source_encoder(cfg: Config, init: str | Path | None) -> dict | None:
    """The encoder weights a fine-tuning run starts from: those of `init`/best.pt, whose config
    must have the identity `cfg.init_from`; None for a run from scratch."""
    if not cfg.init_from:
        return None
    if init is None:
        raise TrainingError(f"{cfg.name} fine-tunes {cfg.init_from['name']!r}: give the run directory it starts "
                            "from (oneshot train --init-from DIR)")
    path = Path(init) / "best.pt"
    if not path.exists():
        raise TrainingError(f"{cfg.name} fine-tunes {cfg.init_from['name']!r}, which has no trained encoder yet: "
                            f"{path} is missing (train the source first)")
    state = load_checkpoint(path)

    def same_run(d: dict) -> dict:  # precision "auto" resolved as the source's run resolved it
        return resolved(dataclasses.replace(from_dict(d), device=cfg.device)).identity()

    if same_run(state["config"]) != same_run(cfg.init_from):
        raise TrainingError(f"{cfg.name} fine-tunes {cfg.init_from['name']!r}, but {path} holds another run "
                            f"({state['config'].get('name')!r} with a different config)")
    return {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}


@dataclasses.dataclass
class Trained:
    """What `train` trained: its run directory and its record (run.json: seed, commit, versions,
    device, wall time, where it stopped, best validation accuracy; `curve`: curve.csv's text)."""

    run_dir: Path
    record: dict


def train(cfg: Config, out: str | Path, data_root=None, resume: bool = True, progress: bool = True,
          init: str | Path | None = None, on_validate=None) -> Trained:
    """Train `cfg` into run directory `out`; resume from `out/last.pt` when it matches. A run
    found finished is not trained again: its record is read back. A fine-tuning run
    (`cfg.init_from`) starts from the best encoder of the run directory `init`, whose config must
    be its source's. `on_validate(step, val_acc)`, called at each validation, stops the run
    there (as patience would) when it returns True."""
    cfg = resolved(cfg)
    source = source_encoder(cfg, init)  # refused before anything is written
    rd = RunDir(out)
    rd.check(cfg, resume)
    best_lost = rd.best_lost(cfg, resume)
    finished = rd.finished() if resume and not best_lost else None
    if finished is not None:
        return Trained(rd.path, finished)
    train_split, val_split, val_episodes = _splits(cfg, data_root)
    model, criterion = _build(cfg, train_split, source)
    rd.create(cfg, resume)  # everything that can refuse the run has run: only now is the directory made
    place(cfg, model, criterion)
    stepper, g = Stepper(cfg, list(model.parameters()) + list(criterion.parameters())), generator(cfg.seed)
    batches = EpochBatches(len(train_split.labels), cfg.batch_size) if cfg.batch_size else None
    prog = restore_progress(rd, cfg, model, criterion, stepper, g, batches, resume and not best_lost)
    # a snapshot at N images: the first step whose batch reaches N images seen validates, and the
    # best checkpoint so far is kept as `best@N.pt` (what a run capped at N images would keep)
    snap_steps = {-(-n // cfg.batch_images): n for n in cfg.snapshot_budgets}
    record = {"status": "running", "seed": cfg.seed, "precision": cfg.precision, **provenance(cfg.device),
              "pixels_val_acc": validate(None, cfg, val_split, val_episodes) if val_split is not None else math.nan}
    rd.write_record(record)
    t0, window, events = time.perf_counter() - prog.elapsed, Window(), rd.events(prog.step)
    with tqdm(range(prog.step, cfg.steps), initial=prog.step, total=cfg.steps, desc=cfg.name,
              disable=not progress, unit="step") as bar:
        for step in bar:
            stats = {}
            loss, n_images = step_loss(cfg, train_split, model, criterion, g, batches, stats)
            stepper.step(loss)
            window.add(loss, n_images, stats)
            done = step + 1
            validating = done % cfg.val_every == 0 or done == cfg.steps or done in snap_steps
            if not (validating or done % 20 == 0):
                continue
            w = window.read(cfg.name, done) | {"lr": stepper.lr, "grad_norm": stepper.grad_norm()}
            mean_loss, rate = w["loss"], w["images_per_s"]
            log_scalars(events, done, {f"train/{k}": v for k, v in w.items()})
            if not validating:
                bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}")
                continue
            acc = validate(model, cfg, val_split, val_episodes) if val_split is not None else math.nan
            prog.curve.append({"step": done, "val_acc": acc} | w)
            log_scalars(events, done, {"val/accuracy": acc})
            if acc > prog.best or val_split is None:
                prog.best, prog.best_step, prog.waited = acc, done, 0
                save(rd.best, {"config": cfg.to_dict(), "model": model.state_dict(), "step": done, "val_acc": acc,
                               "in_channels": train_split.images.shape[1], "loss": criterion.state_dict()})
            else:
                prog.waited += 1
            if done in snap_steps:
                copy_file(rd.best, snapshot_path(rd.path, snap_steps[done]))
            prog.step, prog.elapsed = done, time.perf_counter() - t0
            prog.stopped = cfg.patience > 0 and prog.waited >= cfg.patience
            if on_validate is not None and on_validate(done, acc):
                prog.stopped = True
            save_last(rd, model, criterion, stepper, g, batches, prog)
            rd.write_curve(prog.curve)
            bar.set_postfix(loss=f"{mean_loss:.4f}", val=f"{acc:.4f}", img_s=f"{rate:.0f}")
            window.reset()
            if prog.stopped:
                break
    if events is not None:
        events.close()
    return Trained(rd.path, _finish(rd, cfg, record, prog, time.perf_counter() - t0))


def _splits(cfg: Config, data_root) -> tuple[Split, Split | None, torch.Tensor | None]:
    """The training split on the device; the validation split and its fixed episodes (none for
    `val_split = "none"`: the last checkpoint is kept)."""
    train_split = load_split(cfg.dataset, cfg.protocol, cfg.train_split, data_root, cfg.image_size).to(cfg.device)
    if cfg.val_split == "none":
        return train_split, None, None
    val_split = load_split(cfg.dataset, cfg.protocol, cfg.val_split, data_root, cfg.image_size)
    episodes = sample_episodes(val_split, cfg.val_ways, cfg.val_shots, cfg.val_queries, cfg.val_episodes,
                               seed=cfg.seed + 1)
    return train_split, val_split.to(cfg.device), episodes


def _build(cfg: Config, train_split: Split, source: dict | None) -> tuple[Siamese, nn.Module]:
    """The model and loss, initialised from the run's seed (and a fine-tune's source encoder)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # weight initialisation
        model, criterion = build_model(cfg, train_split.images.shape[1], train_split.n_classes)
    if source is not None:
        model.encoder.load_state_dict(source)
    return model, criterion


def _finish(rd: RunDir, cfg: Config, record: dict, prog: Progress, wall_s: float) -> dict:
    """Mark the run finished: its snapshots complete, its record written, last.pt gone -> the record."""
    stopped = prog.curve[-1]["step"] if prog.curve else cfg.steps
    for n in cfg.snapshot_budgets:  # stopped early before N images: capped at N, it would have stopped here too
        if not snapshot_path(rd.path, n).exists():
            copy_file(rd.best, snapshot_path(rd.path, n))
    record = record | dict(
        status="finished", wall_time_s=round(wall_s, 1), best_val_acc=prog.best, steps=cfg.steps,
        stopped_step=stopped, stopped_early=stopped < cfg.steps, images_seen=stopped * cfg.batch_images,
        best_step=prog.best_step, best_images=prog.best_step * cfg.batch_images,
        # the training step's rate: the median over the windows between validations
        images_per_s=round(statistics.median(r["images_per_s"] for r in prog.curve), 1) if prog.curve else math.nan)
    rd.write_record(record)
    rd.last.unlink(missing_ok=True)
    return record | {"curve": curve_text(prog.curve)}
