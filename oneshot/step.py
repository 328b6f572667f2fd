"""One training step (`step_loss`): a batch drawn from the training split, augmented, embedded in
the run's precision and scored by the run's loss. `resolved` gives a config its device's
precision and `place` puts a model on its device, as the step expects them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import precision
from .augment import augment
from .config import Config
from .data.episodes import EpochBatches, sample_batch
from .data.split import Split
from .encoders import Siamese
from .errors import TrainingError
from .registry import LossContext, build_loss


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
