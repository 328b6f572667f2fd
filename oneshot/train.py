"""One plain training loop: batches (P x K, or uniform), a Siamese encoder, a loss, an optimiser
and a schedule; validation on fixed episodes, the best checkpoint kept.

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

from . import precision
from .augment import augment
from .checkpoint import checkpoint_or_none, copy_file, load_checkpoint, restore, save, snapshot_path
from .config import Config, from_dict
from .data.load import load_split
from .data.split import Split
from .encoders import Siamese
from .data.episodes import EpochBatches, generator, sample_batch, sample_episodes
from .errors import TrainingError
from .evaluate import embed_split, score_episodes
from .provenance import provenance
from .optim import Stepper
from .registry import LossContext, build_loss, build_model
from .rundir import RunDir, curve_text, log_scalars


def batch_loss(cfg: Config, emb: torch.Tensor, labels: torch.Tensor, criterion: nn.Module | None) -> torch.Tensor:
    """The loss on a P x K batch: emb [P*K, D], labels [P*K] (classes of the training split) -> scalar.

    `criterion` is build_model's loss; None builds `cfg`'s loss here, for callers that keep only
    the encoder (a loss that owns parameters needs build_model's, whose parameters are trained)."""
    if criterion is None:
        criterion = build_loss(cfg, LossContext(embed=lambda: emb.shape[1]))
        if any(True for _ in criterion.parameters()):
            raise TrainingError(f"loss {cfg.loss!r} owns parameters: pass the loss module of build_model")
    return criterion(emb, labels)


def resolved(cfg: Config) -> Config:
    """`cfg` with its precision resolved for its device ("auto" -> "bf16" or "fp32")."""
    return dataclasses.replace(cfg, precision=precision.resolve(cfg.precision, cfg.device))


def place(cfg: Config, model: Siamese, criterion: nn.Module | None) -> None:
    """Move the model (and the loss's parameters) to the configured device and memory layout."""
    model.to(cfg.device)
    if criterion is not None:
        criterion.to(cfg.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)


def step_loss(cfg: Config, split: Split, model: Siamese, criterion: nn.Module | None,
              g: torch.Generator, batches: EpochBatches | None = None,
              stats: dict | None = None) -> tuple[torch.Tensor, int]:
    """Draw one batch (P x K, or `batch_size` images from `batches`, the run's epoch sampler),
    augment, embed -> (its loss, the number of images). Given `stats`, puts in it what the step
    computed anyway, as detached scalars on the device: "emb_norm", the mean norm of the
    encoder's outputs (before any normalisation), and the loss's own (`criterion.stats`: a mined
    loss's active fraction and hardest distances).

    The batch is gathered, normalised and augmented where `split.images` lives (move the split
    to the device once with `Split.to`); indices and random draws come from the CPU generator
    `g`, so every device sees the same stream. The encoder runs in `cfg.precision` (resolved),
    the loss in fp32, given the classes' indices in the split as labels."""
    if cfg.batch_size:
        idx = (batches or EpochBatches(len(split.labels), cfg.batch_size)).next(g)
    else:
        idx = sample_batch(split, cfg.batch_classes, cfg.batch_shots, g)
    labels = split.labels[idx]  # the classes of the split: a softmax head's outputs
    dev = split.images.device
    x = augment(split.to_float(split.images[idx.to(dev, non_blocking=True)]), cfg.augment, g)
    x = x.to(cfg.device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast(cfg.precision, cfg.device):
        raw, emb = model.raw_and_embedded(x)
    loss = batch_loss(cfg, emb.float(), labels.to(cfg.device, non_blocking=True), criterion)
    if stats is not None:
        stats["emb_norm"] = raw.detach().float().norm(dim=1).mean()
        stats.update(getattr(criterion, "stats", None) or {})
    return loss, len(idx)


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
    prog = _restore(rd, cfg, model, criterion, stepper, g, batches, resume and not best_lost)
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
            _save_last(rd, model, criterion, stepper, g, batches, prog)
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


def _restore(rd: RunDir, cfg: Config, model, criterion, stepper: Stepper, g: torch.Generator,
             batches: EpochBatches | None, resume: bool) -> Progress:
    """Where the run stands: from `last.pt` when resuming one, else at step 0."""
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


def _save_last(rd: RunDir, model, criterion, stepper: Stepper, g: torch.Generator, batches: EpochBatches | None,
               prog: Progress) -> None:
    save(rd.last, {"model": model.state_dict(), "loss": criterion.state_dict(),
                   "opt": stepper.opt.state_dict(), "sched": stepper.sched.state_dict(), "rng": g.get_state(),
                   "batches": batches.state_dict() if batches is not None else None,
                   "scaler": stepper.scaler.state_dict() if stepper.scaler is not None else None,
                   "step": prog.step, "best": prog.best, "best_step": prog.best_step, "waited": prog.waited,
                   "stopped": prog.stopped, "curve": prog.curve, "elapsed": prog.elapsed})


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
