"""One plain training loop: P x K batches, a Siamese encoder, a loss, Adam with a cosine or step schedule.

A run directory holds `config.json` (the full resolved config), `run.json` (seed, commit,
versions, device, wall time, status), `curve.csv` (the training curve), `best.pt` (the best
validation checkpoint, with its config) and `last.pt` (everything needed to resume).
Every file is written atomically, so an interrupted run can be resumed or restarted; a
checkpoint that cannot be read (cut short by a copy) is moved aside to `<file>.corrupt` and
the run trained again from step 0, which gives the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
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
from .errors import OneshotError
from .evaluate import embed_split, score_episodes
from .provenance import atomic_write_text, provenance
from .registry import LossContext, build_loss, build_model

class TrainingError(OneshotError):
    """Training cannot go on (a NaN or infinite loss, an incompatible run directory)."""


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
              g: torch.Generator, batches: EpochBatches | None = None) -> tuple[torch.Tensor, int]:
    """Draw one batch (P x K, or `batch_size` images from `batches`, the run's epoch sampler),
    augment, embed -> (its loss, the number of images).

    The batch is gathered, normalised and augmented where `split.images` lives (move the split
    to the device once with `Split.to`); indices and random draws come from the CPU generator
    `g`, so every device sees the same stream. The encoder runs in `cfg.precision` (resolved),
    the loss in fp32, given the classes' indices in the split as labels."""
    if cfg.batch_size:
        idx = (batches or EpochBatches(len(split.labels), cfg.batch_size)).next(g)
    else:
        idx, _ = sample_batch(split, cfg.batch_classes, cfg.batch_shots, g)
    labels = split.labels[idx]
    dev = split.images.device
    x = augment(split.to_float(split.images[idx.to(dev, non_blocking=True)]), cfg.augment, g)
    x = x.to(cfg.device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast(cfg.precision, cfg.device):
        emb = model(x)
    return batch_loss(cfg, emb.float(), labels.to(cfg.device, non_blocking=True), criterion), len(idx)


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


def optimizer(cfg: Config, params: list) -> torch.optim.Optimizer:
    """The run's optimiser: Adam, or SGD with `momentum` (no Nesterov), each with `weight_decay`."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclasses.dataclass
class Trained:
    """What `train` trained: its run directory and its record (run.json: seed, commit, versions,
    device, wall time, where it stopped, best validation accuracy; `curve`: curve.csv's text)."""

    run_dir: Path
    record: dict


def train(cfg: Config, out: str | Path, data_root=None, resume: bool = True, progress: bool = True,
          init: str | Path | None = None) -> Trained:
    """Train `cfg` into run directory `out`; resume from `out/last.pt` when it matches. A run
    found finished is not trained again: its record is read back. A fine-tuning run
    (`cfg.init_from`) starts from the best encoder of the run directory `init`, whose config must
    be its source's.

    A run directory is the same run when its stored config has the same identity
    (`Config.identity`): it may be resumed or finished on another device."""
    cfg = resolved(cfg)
    source = source_encoder(cfg, init)  # refused before anything is written
    out = Path(out)
    cfg_path = out / "config.json"
    if resume and cfg_path.exists() and stored_identity(cfg_path) != cfg.identity():
        raise TrainingError(f"{out} holds a run with a different config; use another --out, "
                            f"or --restart to overwrite it")
    # A corrupt best.pt is set aside and the run trained again from step 0 (its last.pt unused),
    # so it ends with the weights a fresh run gives; a finished run needs a readable best.pt.
    best_lost = resume and (out / "best.pt").exists() and checkpoint_or_none(out / "best.pt", cfg.name) is None
    if resume and not best_lost and (out / "best.pt").exists() and _status(out) == "finished":
        return Trained(out, json.loads((out / "run.json").read_text()) | {"curve": (out / "curve.csv").read_text()})

    train_split = load_split(cfg.dataset, cfg.protocol, cfg.train_split, data_root, cfg.image_size).to(cfg.device)
    val_split = val_episodes = None
    if cfg.val_split != "none":  # "none": no validation split; the last checkpoint is kept
        val_split = load_split(cfg.dataset, cfg.protocol, cfg.val_split, data_root, cfg.image_size)
        val_episodes = sample_episodes(val_split, cfg.val_ways, cfg.val_shots, cfg.val_queries,
                                       cfg.val_episodes, seed=cfg.seed + 1)
        val_split = val_split.to(cfg.device)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # weight initialisation
        model, criterion = build_model(cfg, train_split.images.shape[1], train_split.n_classes)
    if source is not None:
        model.encoder.load_state_dict(source)
    # Everything that can refuse the run has run: only now is the run directory made.
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in ("last.pt", "best.pt", "curve.csv", "run.json"):
            (out / name).unlink(missing_ok=True)
    atomic_write_text(cfg_path, json.dumps(cfg.to_dict(), indent=2))
    params = list(model.parameters()) + list(criterion.parameters())  # the loss's own (Koch's head, ...)
    place(cfg, model, criterion)
    opt = optimizer(cfg, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
    scaler = precision.grad_scaler(cfg.precision, cfg.device)
    g = generator(cfg.seed)
    batches = EpochBatches(len(train_split.labels), cfg.batch_size) if cfg.batch_size else None
    start, best, best_step, waited, curve, elapsed = 0, -1.0, 0, 0, [], 0.0
    last = out / "last.pt"
    state = checkpoint_or_none(last, cfg.name) if resume and not best_lost else None
    if state is not None:
        restore(state, model, criterion, opt, sched, g)
        if batches is not None:
            batches.load_state_dict(state["batches"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, best, curve, elapsed = state["step"], state["best"], state["curve"], state["elapsed"]
        best_step, waited = state.get("best_step", 0), state.get("waited", 0)
        if state.get("stopped"):  # stopped early, then interrupted before the run was marked finished
            start = cfg.steps
    # a snapshot at N images: the first step whose batch reaches N images seen validates, and the
    # best checkpoint so far is kept as `best@N.pt` (what a run capped at N images would keep)
    snap_steps = {-(-n // cfg.batch_images): n for n in cfg.snapshot_budgets}

    record = {"status": "running", "seed": cfg.seed, "precision": cfg.precision, **provenance(cfg.device),
              "pixels_val_acc": validate(None, cfg, val_split, val_episodes) if val_split is not None else math.nan}
    atomic_write_text(out / "run.json", json.dumps(record, indent=2))
    t0 = time.perf_counter() - elapsed
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.name,
               disable=not progress, unit="step")
    events = event_writer(out, start)
    # The loss is summed on the device and read back (one host synchronisation) only when the
    # progress bar or a checkpoint needs it, every 20 steps and at validation points.
    window_t, window_imgs, loss_sum, loss_n = time.perf_counter(), 0, torch.zeros((), device=cfg.device), 0
    for step in bar:
        loss, n_images = step_loss(cfg, train_split, model, criterion, g, batches)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sched.step()
        loss_sum, loss_n, window_imgs = loss_sum + loss.detach(), loss_n + 1, window_imgs + n_images
        done = step + 1
        validating = done % cfg.val_every == 0 or done == cfg.steps or done in snap_steps
        if not (validating or done % 20 == 0):
            continue
        mean_loss = loss_sum.item() / loss_n
        if not math.isfinite(mean_loss):
            bar.close()
            raise TrainingError(f"{cfg.name}: the loss is {mean_loss} within steps {done - loss_n + 1}-{done}; "
                                "stopping (try a lower lr or a normalised embedding). Resuming restarts "
                                "from the last validation point.")
        rate = window_imgs / (time.perf_counter() - window_t)
        if events is not None:
            _log(events, done, {"train/loss": mean_loss, "train/images_per_s": rate, "train/lr": sched.get_last_lr()[0]})
        if not validating:
            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}")
            continue
        acc = validate(model, cfg, val_split, val_episodes) if val_split is not None else math.nan
        curve.append({"step": done, "loss": mean_loss, "val_acc": acc, "images_per_s": rate,
                      "lr": sched.get_last_lr()[0]})
        if events is not None:
            _log(events, done, {"val/accuracy": acc})
        if acc > best or val_split is None:
            best, best_step, waited = acc, done, 0
            save(out / "best.pt", {"config": cfg.to_dict(), "model": model.state_dict(), "step": done,
                                    "val_acc": acc, "in_channels": train_split.images.shape[1],
                                    "loss": criterion.state_dict()})
        else:
            waited += 1
        if done in snap_steps:
            copy_file(out / "best.pt", snapshot_path(out, snap_steps[done]))
        stopping = cfg.patience > 0 and waited >= cfg.patience
        save(last, {"model": model.state_dict(), "loss": criterion.state_dict(),
                     "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": g.get_state(),
                     "batches": batches.state_dict() if batches is not None else None,
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "step": done, "best": best, "best_step": best_step, "waited": waited,
                     "stopped": stopping, "curve": curve, "elapsed": time.perf_counter() - t0})
        _write_curve(out, curve)
        bar.set_postfix(loss=f"{mean_loss:.4f}", val=f"{acc:.4f}", img_s=f"{rate:.0f}")
        window_t, window_imgs, loss_sum, loss_n = time.perf_counter(), 0, torch.zeros((), device=cfg.device), 0
        if stopping:
            break
    bar.close()
    if events is not None:
        events.close()
    stopped = curve[-1]["step"] if curve else cfg.steps
    for n in cfg.snapshot_budgets:  # stopped early before N images: capped at N, it would have stopped here too
        if not snapshot_path(out, n).exists():
            copy_file(out / "best.pt", snapshot_path(out, n))
    record.update(status="finished", wall_time_s=round(time.perf_counter() - t0, 1), best_val_acc=best,
                  steps=cfg.steps, stopped_step=stopped, stopped_early=stopped < cfg.steps,
                  images_seen=stopped * cfg.batch_images, best_step=best_step,
                  best_images=best_step * cfg.batch_images,
                  # the training step's rate: the median over the windows between validations
                  images_per_s=round(statistics.median(r["images_per_s"] for r in curve), 1) if curve else math.nan)
    atomic_write_text(out / "run.json", json.dumps(record, indent=2))
    last.unlink(missing_ok=True)
    return Trained(out, record | {"curve": _curve_text(curve)})


_EVENTS_OFF_SAID = []


def event_writer(out: Path, start: int):
    """A TensorBoard writer for the run's `tb/` folder (events after `start`, the step it resumes
    from, are dropped: they are trained again), or None when the tensorboard package is missing
    (said once per process)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _EVENTS_OFF_SAID:
            print("oneshot: TensorBoard events off: the tensorboard package is not installed "
                  "(pip install 'oneshot[tensorboard]')", file=sys.stderr, flush=True)
            _EVENTS_OFF_SAID.append(True)
        return None
    return SummaryWriter(str(out / "tb"), purge_step=start or None)


def _log(writer, step: int, values: dict) -> None:
    for tag, value in values.items():
        if math.isfinite(value):
            writer.add_scalar(tag, value, step)


def _status(out: Path) -> str | None:
    """The status in a run directory's run.json (None when it is missing or unreadable)."""
    try:
        return json.loads((out / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def stored_identity(path: Path) -> dict | None:
    """The identity of the config stored in a JSON file (None when it is not a valid config)."""
    try:
        return from_dict(json.loads(Path(path).read_text())).identity()
    except (OSError, ValueError, OneshotError):
        return None


def _curve_text(curve: list[dict]) -> str:
    cols = ["step", "loss", "val_acc", "images_per_s", "lr"]
    lines = [",".join(cols)] + [",".join(f"{row[c]:.6g}" for c in cols) for row in curve]
    return "\n".join(lines) + "\n"


def _write_curve(out: Path, curve: list[dict]) -> None:
    atomic_write_text(out / "curve.csv", _curve_text(curve))
