"""Training configuration: TOML files in `experiments/`, overridden by `--set key=value`."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import OneshotError


PRECISIONS = ("fp32", "bf16", "auto")
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
    loss: str = "triplet"           # contrastive | triplet | koch | proto | "pml:<LossClass>" | "package.module:name"
    loss_params: dict = field(default_factory=dict)     # keyword arguments of a pml: or user loss
    miner: str = "none"             # "pml:<MinerClass>" or "package.module:Class" (pml: losses)
    miner_params: dict = field(default_factory=dict)
    margin: float = 0.5
    mining: str = "hard"            # triplet: all | hard | semihard
    pos_weight: str = "balanced"    # contrastive: balanced | mean | active | hard
    distance: str = "euclidean"     # distance inside the loss (proto: as ProtoNet, "sqeuclidean")
    steps: int = 1500
    batch_classes: int = 32         # P
    batch_shots: int = 4            # K (proto: K-1 support + 1 query per class)
    lr: float = 1e-3
    weight_decay: float = 0.0
    augment: str = "none"           # none | affine | natural
    seed: int = 0
    val_every: int = 500
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    val_episodes: int = 500
    precision: str = "fp32"         # fp32 | bf16 | auto (bf16 where the device has it natively)
    device: str = "cpu"             # how a run is run, not what it is: see HOW_KEYS
    channels_last: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The keys that make the experiment: two configs with equal identities give the same
        numbers (on the same kind of device), so a record made under one is valid for the other."""
        return {k: v for k, v in self.to_dict().items() if k not in HOW_KEYS}

    def with_overrides(self, pairs: list[str]) -> "Config":
        """Apply `key=value` strings; values are parsed as JSON, else kept as strings.
        `loss_params.margin=0.1` sets one entry of a dict-valued key (`a.b.c=...` a nested one)."""
        known = {f.name: f.type for f in fields(self)}
        out = self.to_dict()
        for pair in pairs:
            key, sep, raw = pair.partition("=")
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
                table = out[key] = dict(out[key])
                *path, last = sub.split(".")
                for name in path:
                    table[name] = dict(table[name]) if isinstance(table.get(name), dict) else {}
                    table = table[name]
                table[last] = value
            else:
                out[key] = value
        return from_dict(out)


def from_dict(d: dict) -> Config:
    """Build a Config, refusing unknown keys and coercing numbers to the declared types."""
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
