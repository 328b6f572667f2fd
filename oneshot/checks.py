"""What makes a training config one a run can use: the range of each number, the values each
choice may take, and the rules between keys (milestones within the run, a batch a loss can use,
an image an encoder can read, a fine-tuning source of the same encoder and images).

`check` runs whenever a `Config` is made, so a bad config is refused with one line naming the
key before anything is written or trained.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields

from .augment import KINDS
from .distances import METRICS
from .errors import ConfigError
from .evaluate import CLASSIFIERS
from .precision import PRECISIONS

SCHEDULES = ("cosine", "step", "multistep")
OPTIMIZERS = ("adam", "sgd")
# key -> (lowest, highest, whether the lowest itself is allowed); None: no bound on that side
RANGES = {
    "image_size": (1, None, True), "steps": (1, None, True), "batch_classes": (2, None, True),
    "batch_shots": (1, None, True), "support_shots": (0, None, True), "batch_size": (0, None, True),
    "momentum": (0, 1, True), "lr": (0, None, False),
    "weight_decay": (0, None, True), "lr_decay_every": (1, None, True), "lr_decay": (0, 1, False),
    "patience": (0, None, True), "seed": (0, None, True), "val_every": (1, None, True),
    "val_ways": (2, None, True), "val_shots": (1, None, True), "val_queries": (1, None, True),
    "val_episodes": (1, None, True),
}
# key -> the values it may take
CHOICES = {"precision": PRECISIONS, "schedule": SCHEDULES, "augment": KINDS, "optimizer": OPTIMIZERS,
           "val_classifier": CLASSIFIERS, "val_distance": METRICS}
PAIR_LOSSES = ("contrastive", "triplet", "koch")
# The smallest input side of each built-in encoder (a user's encoder is checked when it is built,
# before a run directory is made).
MIN_IMAGE_SIZE = {"conv4": ("Conv4", 16), "resnet12": ("ResNet12", 16), "koch": ("Koch", 53)}
# What a fine-tuning source must share with the run that starts from its encoder.
SOURCE_MUST_MATCH = ("dataset", "protocol", "train_split", "image_size", "encoder", "encoder_params")


def check(cfg) -> None:
    """Raise ConfigError naming the key, its value and what is allowed, for a config (a
    `config.Config`) no run can use."""
    for key, (lo, hi, closed) in RANGES.items():
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # wrong types are from_dict's to report
        ok = math.isfinite(v) and (v >= lo if closed else v > lo) and (hi is None or v <= hi)
        if not ok:
            raise ConfigError(f"config key {key!r} = {v!r} is out of range: it must be {_range_text(lo, hi, closed)}")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key {key!r} = {getattr(cfg, key)!r}: choose one of {', '.join(allowed)}")
    _check_milestones(cfg)
    _check_source(cfg)
    _check_image_size(cfg)
    if cfg.batch_size and cfg.loss in (*PAIR_LOSSES, "proto"):
        raise ConfigError(f"loss {cfg.loss!r} needs P x K batches (classes with several images each): "
                          f"leave batch_size = 0, got {cfg.batch_size}")
    snaps = cfg.snapshot_images
    if not isinstance(snaps, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                 for n in snaps):
        raise ConfigError(f"config key 'snapshot_images' = {snaps!r}: it must be a list of image counts > 0")
    if cfg.loss in PAIR_LOSSES and cfg.batch_shots < 2:
        raise ConfigError(f"loss {cfg.loss!r} forms same-class pairs inside a batch: batch_shots must be >= 2, "
                          f"got {cfg.batch_shots}")
    if cfg.loss == "proto" and not 1 <= cfg.n_support < cfg.batch_shots:
        raise ConfigError(f"loss 'proto': a batch of {cfg.batch_shots} images per class with support_shots="
                          f"{cfg.support_shots} leaves no query; need 1 <= support_shots < batch_shots "
                          f"(or support_shots = 0 for batch_shots - 1 supports and one query, batch_shots >= 2)")


def _range_text(lo, hi, closed: bool) -> str:
    low = f"{'>=' if closed else '>'} {lo}"
    return low if hi is None else f"{low} and <= {hi}"


def _check_image_size(cfg) -> None:
    if cfg.encoder in MIN_IMAGE_SIZE and isinstance(cfg.image_size, int):
        name, least = MIN_IMAGE_SIZE[cfg.encoder]
        if cfg.image_size < least:
            raise ConfigError(f"config key 'image_size' = {cfg.image_size}: encoder {cfg.encoder!r} ({name}) needs "
                              f"inputs of at least {least}x{least}")


def _check_source(cfg) -> None:
    """A fine-tuning source trained the same encoder on the same images: one that did not is
    refused naming each key that differs, with the source's value and this run's."""
    src = cfg.init_from
    if not src:
        return
    if "name" not in src:
        raise ConfigError("init_from must be a run's config (its identity), with its name")
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(cfg)}
    differ = [f"{k} (source {src.get(k, defaults[k])!r}, this run {getattr(cfg, k)!r})"
              for k in SOURCE_MUST_MATCH if src.get(k, defaults[k]) != getattr(cfg, k)]
    if differ:
        raise ConfigError(f"init_from: the source run {src['name']!r} differs in {_listed(differ)}: fine-tune "
                          f"only from a run with the same {_listed(SOURCE_MUST_MATCH)}")


def _listed(items) -> str:
    """The items in prose: "a", "a and b", "a, b and c"."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


def _check_milestones(cfg) -> None:
    """Milestones: steps (ints >= 1) or fractions of the run (0 < f < 1), increasing, within the run."""
    ms = cfg.milestones
    ok = isinstance(ms, list) and all(
        not isinstance(m, bool) and ((isinstance(m, int) and m >= 1) or (isinstance(m, float) and 0 < m < 1))
        for m in ms)
    if not ok:
        raise ConfigError(f"config key 'milestones' = {ms!r}: it must be a list of steps (integers >= 1) or "
                          "fractions of the run (0 < f < 1)")
    steps = cfg.milestone_steps
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"config key 'milestones' = {ms!r} is out of order: the milestones (in steps: "
                          f"{steps}) must increase")
    if steps and steps[-1] >= cfg.steps:
        raise ConfigError(f"config key 'milestones' = {ms!r} reaches past the run: every milestone must come "
                          f"before step {cfg.steps} (steps), got {steps[-1]}")
    if cfg.schedule == "multistep" and not steps:
        raise ConfigError("schedule 'multistep' needs milestones, e.g. milestones = [0.5, 0.75]")
