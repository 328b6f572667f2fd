"""Training configuration: TOML files in `experiments/`, overridden by `--set key=value`.

A `Config` is checked whenever it is made (`oneshot.checks`); a built-in loss's settings are
filled and checked by `oneshot.lossparams`."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .checks import check
from .errors import ConfigError, OneshotError
from .lossparams import BUILTIN_PARAMS, SHORT_FORM, full_params


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
    # the loss's settings: a built-in's are those of `lossparams.BUILTIN_PARAMS` (margin, triplet
    # mining, contrastive pos_weight, the distance inside the loss; their values `LOSS_CHOICES`);
    # a pml: or user loss: its keyword arguments
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
        self.loss_params = full_params(self.loss, self.loss_params)
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
