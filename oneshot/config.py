"""Training configuration: TOML files in `experiments/`, overridden by `--set key=value`."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError, OneshotError


PRECISIONS = ("fp32", "bf16", "auto")
# Every loss reads its settings from `loss_params`. A built-in's loss_params hold exactly its
# settings below, the defaults filled in; a `pml:` or user loss gets its loss_params as given.
# The one source of the built-ins' defaults: oneshot.losses takes its functions' defaults from here.
BUILTIN_PARAMS = {
    "contrastive": {"margin": 0.5, "pos_weight": "balanced", "distance": "euclidean"},
    "triplet": {"margin": 0.5, "mining": "hard", "distance": "euclidean"},
    "koch": {},
    "proto": {"distance": "euclidean"},  # ProtoNet's own is "sqeuclidean"
    "softmax": {"head": "linear", "scale": 10.0},  # cross-entropy through a head over the training classes
}
# The built-ins' settings may also be written at the top level of a config or preset (the form of
# records before version 3, and of margin grids); `from_dict` folds them into loss_params.
SHORT_FORM = ("margin", "mining", "pos_weight", "distance")
# The keys only some losses read, and which; a `pml:` or user loss also reads its miner.
LOSS_KEYS = {"support_shots", "loss_params", "miner", "miner_params"}
READ_BY_LOSS = {"contrastive": ("loss_params",), "triplet": ("loss_params",), "koch": ("loss_params",),
                "proto": ("loss_params", "support_shots"), "softmax": ("loss_params",)}
PLUGIN_LOSS_KEYS = ("loss_params", "miner", "miner_params")
# Where and in which memory layout a run is computed: provenance, recorded but not identity.
HOW_KEYS = ("device", "channels_last")


@dataclass
class Config:
    """Everything that defines a training run (saved whole with every checkpoint)."""

    name: str = "run"
    dataset: str = "omniglot"
    protocol: str = "vinyals"
    train_split: str = "train"
    val_split: str = "val"           # "none": no validation, keep the last checkpoint
    image_size: int = 28
    encoder: str = "conv4"          # conv4 | koch | pixels | resnet12 | "package.module:Class"
    encoder_params: dict = field(default_factory=dict)  # keyword arguments of the encoder
    normalize: bool = True          # L2-normalise embeddings (distances in [0, 2])
    loss: str = "triplet"           # contrastive | triplet | koch | proto | softmax | "pml:<LossClass>" | "package.module:name"
    # the loss's settings (BUILTIN_PARAMS for a built-in: margin; triplet mining all | hard |
    # semihard; contrastive pos_weight balanced | mean | active | hard; the distance inside the
    # loss); a pml: or user loss: its keyword arguments
    loss_params: dict = field(default_factory=dict)
    miner: str = "none"             # "pml:<MinerClass>" or "package.module:Class" (pml: losses)
    miner_params: dict = field(default_factory=dict)
    steps: int = 1500
    batch_classes: int = 32         # P
    batch_shots: int = 4            # K images per class (proto: S support + K-S queries)
    support_shots: int = 0          # proto: S support images per class of a batch; 0: K-1 (one query)
    batch_size: int = 0             # > 0: batches of this many images drawn uniformly, without replacement
                                    # within an epoch of the training split (softmax); 0: P x K batches
    optimizer: str = "adam"         # adam | sgd (with `momentum`)
    momentum: float = 0.9           # sgd only
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"        # cosine (decay to 0 over `steps`) | step (x lr_decay every lr_decay_every
                                    # steps) | multistep (x lr_decay at each of `milestones`)
    lr_decay_every: int = 2000      # step schedule: steps between two decays (Snell: 20 epochs of 100 episodes)
    lr_decay: float = 0.5           # step and multistep schedules: the factor of each decay
    milestones: list = field(default_factory=list)  # multistep: steps (ints) or fractions of `steps` (0 < f < 1)
    patience: int = 0               # stop after this many validations without a new best; 0: train all `steps`
    snapshot_images: list = field(default_factory=list)  # images seen at which the best checkpoint so far is kept
    augment: str = "none"           # none | affine | natural | resized-crop
    # fine-tuning: the identity of the trained run whose best encoder this run starts from ({}: from
    # scratch). A preset names a configuration of its study (same seed); `oneshot train --init-from DIR`
    # a run directory. Part of the run's identity, so a new source is a new run.
    init_from: dict = field(default_factory=dict)
    seed: int = 0
    val_every: int = 500
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    val_episodes: int = 500
    val_classifier: str = "nearest-support"  # how validation episodes are scored (oneshot.evaluate)
    val_distance: str = "euclidean"
    precision: str = "fp32"         # fp32 | bf16 | auto (bf16 where the device has it natively)
    device: str = "cpu"             # how a run is run, not what it is: see HOW_KEYS
    channels_last: bool = True

    def __post_init__(self):
        self.loss_params = _loss_params(self.loss, self.loss_params)
        check(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def n_support(self) -> int:
        """Support images per class of a prototypical batch (the rest are queries)."""
        return self.support_shots or self.batch_shots - 1

    @property
    def batch_images(self) -> int:
        """Images in one training batch: `batch_size`, else P x K."""
        return self.batch_size or self.batch_classes * self.batch_shots

    @property
    def milestone_steps(self) -> list[int]:
        """The multistep schedule's milestones in steps (a fraction f of the run: step floor(f * steps))."""
        return [m if isinstance(m, int) else int(m * self.steps) for m in self.milestones]

    @property
    def snapshot_budgets(self) -> list[int]:
        """The `snapshot_images` a run keeps: those within its cap of steps x batch images."""
        return [n for n in self.snapshot_images if n <= self.steps * self.batch_images]

    def lr_factor(self, step: int) -> float:
        """The learning rate at `step` as a fraction of `lr`, under `schedule`."""
        if self.schedule == "step":
            return self.lr_decay ** (step // self.lr_decay_every)
        if self.schedule == "multistep":
            return self.lr_decay ** sum(step >= m for m in self.milestone_steps)
        return 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))

    def identity(self) -> dict:
        """The keys that make the experiment, those this run reads: two configs with equal
        identities give the same numbers (on the same kind of device), so a record made under one
        is valid for the other. Left out: how it is run (HOW_KEYS) and the keys its loss, schedule
        and validation never read (`unread_keys`), so changing one of those retrains nothing."""
        unread = set(HOW_KEYS) | self.unread_keys()
        return {k: v for k, v in self.to_dict().items() if k not in unread}

    def unread_keys(self) -> set[str]:
        """The config keys this run never reads: the other losses' settings, the step schedule's
        keys under cosine decay, and the validation episodes' shape without a validation split."""
        unread = LOSS_KEYS - set(READ_BY_LOSS.get(self.loss, PLUGIN_LOSS_KEYS))
        if self.schedule != "step":
            unread |= {"lr_decay_every"}
        if self.schedule == "cosine":
            unread |= {"lr_decay"}
        if self.schedule != "multistep":
            unread |= {"milestones"}
        if self.optimizer != "sgd":
            unread |= {"momentum"}
        if self.batch_size:
            unread |= {"batch_classes", "batch_shots", "support_shots"}
        if self.val_split == "none":
            unread |= {"val_ways", "val_shots", "val_queries", "val_episodes", "patience", "val_classifier",
                       "val_distance"}
        return unread

    def with_overrides(self, pairs: list[str]) -> "Config":
        """Apply `key=value` strings; values are parsed as JSON, else kept as strings.
        `loss_params.margin=0.1` sets one entry of a dict-valued key (`a.b.c=...` a nested one)."""
        known = {f.name: f.type for f in fields(self)}
        out = self.to_dict()
        given: set[str] = set()  # the loss_params entries these overrides set
        short: list[str] = []
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if key in SHORT_FORM:  # margin=0.3: loss_params.margin=0.3, for a built-in loss
                short.append(pair)
                key = f"loss_params.{key}"
            key, dot, sub = key.partition(".")
            if not sep or key not in known or (dot and not isinstance(out[key], dict)):
                tables = ", ".join(k for k, v in out.items() if isinstance(v, dict))
                raise OneshotError(f"--set {pair!r}: expected key=value with key one of {', '.join(known)} "
                                   f"(or table.name=value for a table: {tables})")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if dot:  # loss_params.distance.p=1: into nested tables, made where missing
                if key == "loss_params":
                    given.add(sub.split(".")[0])
                table = out[key] = dict(out[key])
                *path, last = sub.split(".")
                for name in path:
                    table[name] = dict(table[name]) if isinstance(table.get(name), dict) else {}
                    table = table[name]
                table[last] = value
            else:
                out[key] = value
                if key == "loss_params" and isinstance(value, dict):
                    given |= set(value)
        if short and out["loss"] not in BUILTIN_PARAMS:
            raise OneshotError(f"--set {short[0]!r}: loss {out['loss']!r} takes its settings in loss_params; "
                               f"write --set loss_params.{short[0]}")
        if self.loss in BUILTIN_PARAMS and out["loss"] not in BUILTIN_PARAMS:  # the built-in's settings go
            out["loss_params"] = {k: v for k, v in out["loss_params"].items() if k in given}
        return from_dict(out)


SCHEDULES = ("cosine", "step", "multistep")
AUGMENTS = ("none", "affine", "natural", "resized-crop")
OPTIMIZERS = ("adam", "sgd")
VAL_CLASSIFIERS = ("nearest-support", "nearest-prototype")  # oneshot.evaluate.CLASSIFIERS
VAL_DISTANCES = ("euclidean", "sqeuclidean", "cosine")
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
PAIR_LOSSES = ("contrastive", "triplet", "koch")


def _range_text(lo, hi, closed: bool) -> str:
    low = f"{'>=' if closed else '>'} {lo}"
    return low if hi is None else f"{low} and <= {hi}"


def check(cfg: Config) -> None:
    """Raise ConfigError naming the key, its value and what is allowed, for a config no run can use."""
    for key, (lo, hi, closed) in RANGES.items():
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # wrong types are from_dict's to report
        ok = math.isfinite(v) and (v >= lo if closed else v > lo) and (hi is None or v <= hi)
        if not ok:
            raise ConfigError(f"config key {key!r} = {v!r} is out of range: it must be {_range_text(lo, hi, closed)}")
    for key, allowed in (("precision", PRECISIONS), ("schedule", SCHEDULES), ("augment", AUGMENTS),
                         ("optimizer", OPTIMIZERS), ("val_classifier", VAL_CLASSIFIERS),
                         ("val_distance", VAL_DISTANCES)):
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


# The smallest input side of each built-in encoder (a user's encoder is checked when it is built,
# before a run directory is made).
MIN_IMAGE_SIZE = {"conv4": ("Conv4", 16), "resnet12": ("ResNet12", 16), "koch": ("Koch", 53)}


def _check_image_size(cfg: Config) -> None:
    if cfg.encoder in MIN_IMAGE_SIZE and isinstance(cfg.image_size, int):
        name, least = MIN_IMAGE_SIZE[cfg.encoder]
        if cfg.image_size < least:
            raise ConfigError(f"config key 'image_size' = {cfg.image_size}: encoder {cfg.encoder!r} ({name}) needs "
                              f"inputs of at least {least}x{least}")


SOURCE_MUST_MATCH = ("dataset", "protocol", "train_split", "image_size", "encoder", "encoder_params")


def _check_source(cfg: Config) -> None:
    """A fine-tuning source trained the same encoder on the same images."""
    src = cfg.init_from
    if not src:
        return
    bad = [k for k in SOURCE_MUST_MATCH if src.get(k, getattr(Config, k, None)) != getattr(cfg, k)]
    if "name" not in src or bad:
        raise ConfigError(f"init_from: the source run {src.get('name', '?')!r} has "
                          + ", ".join(f"{k} {src.get(k)!r}" for k in bad) + f", this run has "
                          + ", ".join(f"{k} {getattr(cfg, k)!r}" for k in bad)
                          + ": fine-tune only from a run of the same encoder on the same dataset and split"
                          if bad else "init_from must be a run's config (its identity), with its name")


def _check_milestones(cfg: Config) -> None:
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


# The values a built-in's string settings may take (`oneshot.losses.PAIR_RULES` / `TRIPLET_RULES`
# say which miner and reduction each names; `oneshot.distances.METRICS`; `oneshot.losses.SoftmaxLoss`).
LOSS_CHOICES = {
    "mining": ("all", "hard", "semihard"),  # triplet: batch-all, batch-hard, semi-hard
    "pos_weight": ("balanced", "mean", "active", "hard"),  # contrastive: all pairs reduced three ways; hardest pairs
    "distance": VAL_DISTANCES,
    "head": ("linear", "cosine"),  # softmax
}


def _loss_params(loss: str, params: dict) -> dict:
    """A built-in's loss_params in full: its settings, the defaults filled in, a margin a float;
    the settings only other built-ins read are dropped (never read, never identity), any other
    key is refused. A `pml:` or user loss's params are returned as they are."""
    if loss not in BUILTIN_PARAMS or not isinstance(params, dict):
        return params
    own = BUILTIN_PARAMS[loss]
    unknown = sorted(set(params) - set(SHORT_FORM) - {k for b in BUILTIN_PARAMS.values() for k in b})
    if unknown:
        raise ConfigError(f"loss {loss!r} takes loss_params {', '.join(own) or '(none)'}, not {', '.join(unknown)}")
    out = own | {k: v for k, v in params.items() if k in own}
    if "margin" in out:
        m = out["margin"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
            raise ConfigError(f"loss_params 'margin' = {m!r} is out of range: it must be a number >= 0")
        out["margin"] = float(m)
    for key, allowed in LOSS_CHOICES.items():
        if key in out and not isinstance(out[key], str):
            raise ConfigError(f"loss_params {key!r} must be a string, got {out[key]!r}")
        if key in out and out[key] not in allowed:
            raise ConfigError(f"loss {loss!r}: loss_params {key!r} = {out[key]!r}: choose one of {', '.join(allowed)}")
    if "scale" in out:
        v = out["scale"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"loss_params 'scale' = {v!r} is out of range: it must be a number > 0")
        out["scale"] = float(v)
    return out


def migrate(d: dict) -> dict:
    """A config dict in today's form: the short-form keys (SHORT_FORM at the top level, as records
    before version 3 and presets write them) folded into loss_params for a built-in loss, which
    reads them there; dropped for a `pml:` or user loss, which never read them. Giving one setting
    both ways with two values is refused."""
    short = {k: d[k] for k in SHORT_FORM if k in d}
    if not short:
        return d
    out = {k: v for k, v in d.items() if k not in SHORT_FORM}
    if out.get("loss", Config.loss) in BUILTIN_PARAMS:
        params = out.get("loss_params", {})
        if not isinstance(params, dict):
            return out  # from_dict reports the type
        clash = sorted(k for k in short if k in params and params[k] != short[k])
        if clash:
            raise ConfigError(f"{', '.join(clash)} given twice, at the top level and in loss_params, with "
                              f"different values: write {clash[0]} once (loss_params.{clash[0]})")
        out["loss_params"] = short | params
    return out


def from_dict(d: dict) -> Config:
    """Build a Config, refusing unknown keys and coercing numbers to the declared types; the
    built-ins' short-form keys are folded into loss_params (`migrate`)."""
    d = migrate(d)
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise OneshotError(f"unknown config keys {unknown}; known keys: {', '.join(known)}")
    defaults = Config()
    clean = {}
    for k, v in d.items():
        want = type(getattr(defaults, k))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise OneshotError(f"config key {k!r} must be {want.__name__}, got {v!r}")
        if want is dict:
            v = _plain(k, v)
        clean[k] = v
    return Config(**clean)


def _plain(key: str, value, path: str = ""):
    """A copy of a dict-valued key, checked to hold only what JSON and TOML both write back
    (string keys; strings, numbers, booleans, lists and tables), so config.json, checkpoints
    and presets keep it exactly."""
    where = f"{key}{path}"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise OneshotError(f"config key {where!r}: table keys must be strings, got {list(value)}")
        return {k: _plain(key, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(key, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (str, int, float, bool)):
        return value
    raise OneshotError(f"config key {where!r}: {value!r} is not a string, number, boolean, list or table")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (or the defaults when path is None) and apply overrides."""
    base = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise OneshotError(f"config file {p} not found")
        try:
            base = from_dict(tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise OneshotError(f"{p}: not valid TOML ({e})") from None
    return base.with_overrides(list(overrides))
