"""The tuning table of a study (`[study.tune]`): which config keys each configuration searches,
over which ranges, with how many trials, at what budget, scored on which validation episodes.

    [study.tune]
    trials = 16                    # trials per configuration (a run's table may say otherwise)
    images = 128000                # training images of one trial (or `steps = N`)
    validations = 4                # validation points of a trial, each reported to the pruner
    val_episodes = 250             # validation episodes that score a trial (never test)
    pruner = "median"              # median | halving | none
    sampler_seed = 0               # TPE's seed; trial k samples with a seed made from it and k
    startup_trials = 10            # trials sampled at random before TPE models the others
    [study.tune.space]             # searched for every configuration of the study
    lr = { low = 1e-4, high = 1e-2, log = true }
    batch = { choices = ["32x4", "16x8"] }       # batch_classes x batch_shots together
    [study.tune.runs.triplet-hard-m0.2]          # one configuration's own keys (and trials)
    margin = { low = 0.05, high = 1.0 }

A key is a config key (`lr`, `weight_decay`, `augment`, ...), a built-in loss's setting in its short
form (`margin`), a dotted entry of a table key (`"loss_params.margin"`, `"encoder_params.width"`), or
`batch`. Every check runs once, when the preset is read: nothing trains before all pass.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from ..config import HOW_KEYS, Config
from ..lossparams import BUILTIN_PARAMS, SHORT_FORM
from ..errors import ConfigError, OneshotError

TUNE_KEYS = ("trials", "images", "steps", "validations", "val_episodes", "pruner", "sampler_seed",
             "startup_trials", "space", "runs")
PRUNERS = ("median", "halving", "none")
# What a search may not move: the configuration itself, its budget, and how it is validated and scored.
FIXED = ("name", "dataset", "protocol", "train_split", "val_split", "image_size", "encoder", "loss", "miner",
         "steps", "seed", "val_every", "val_ways", "val_shots", "val_queries", "val_episodes", "val_classifier",
         "val_distance", "snapshot_images", "patience", "init_from", "precision", *HOW_KEYS)
TABLE_KEYS = ("loss_params", "encoder_params", "miner_params")


@dataclass(frozen=True)
class Dim:
    """One searched key: a float range (`log`), an int range (`step`), or choices."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial):
        """The value of this key for an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list:
        """The values a check tries: every choice, or both ends of the range."""
        return list(self.choices) if self.choices else [self.low, self.high]


@dataclass(frozen=True)
class Search:
    """The search of one configuration: its keys and its number of trials."""

    configuration: str
    dims: tuple[Dim, ...]
    trials: int


@dataclass(frozen=True)
class TuneSpec:
    """A study's `[study.tune]`, checked."""

    searches: tuple[Search, ...]
    images: int | None = None
    steps: int | None = None
    validations: int = 4
    val_episodes: int | None = None
    pruner: str = "median"
    sampler_seed: int = 0
    startup_trials: int = 10

    def search(self, configuration: str) -> Search | None:
        """The search of a configuration (None: the study does not search it)."""
        return next((s for s in self.searches if s.configuration == configuration), None)

    def trial_steps(self, cfg: Config) -> int:
        """Training steps of one trial of `cfg` (its batch may be one of the searched shapes)."""
        return self.steps if self.steps else max(1, self.images // cfg.batch_images)

    def describe(self) -> dict:
        """The spec as plain data (records and the Optuna study's name)."""
        return {"images": self.images, "steps": self.steps, "validations": self.validations,
                "val_episodes": self.val_episodes, "pruner": self.pruner, "sampler_seed": self.sampler_seed,
                "startup_trials": self.startup_trials}


def apply(cfg: Config, params: dict) -> Config:
    """`cfg` with a trial's values: `batch` "PxK" sets batch_classes and batch_shots."""
    pairs = []
    for key, value in params.items():
        if key == "batch":
            p, k = _batch(value, key)
            pairs += [f"batch_classes={p}", f"batch_shots={k}"]
        else:
            pairs.append(f"{key}={json.dumps(value)}")
    return cfg.with_overrides(pairs)


def trial_config(cfg: Config, spec: TuneSpec, params: dict, number: int) -> Config:
    """The config one trial trains: `cfg` with its values, at the trial budget, validated
    `spec.validations` times on `spec.val_episodes` validation episodes."""
    c = apply(cfg, params)
    steps = spec.trial_steps(c)
    sets = [f"steps={steps}", f"val_every={max(1, steps // spec.validations)}", "patience=0", "snapshot_images=[]",
            f"name={json.dumps(f'{cfg.name}-trial{number}')}", "milestones=[]" if c.schedule != "multistep" else ""]
    if spec.val_episodes:
        sets.append(f"val_episodes={spec.val_episodes}")
    return c.with_overrides([s for s in sets if s])


def study_key(cfg: Config, spec: TuneSpec, search: Search) -> str:
    """A short digest of what a search is: the configuration's identity, its keys and the spec
    (not the number of trials: more trials continue the same search)."""
    what = {"config": cfg.identity() | {"seed": cfg.seed}, "dims": [d.__dict__ for d in search.dims],
            "spec": spec.describe()}
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _whole(value, least: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{what} must be a whole number >= {least}, got {value!r}")
    return value


def _batch(value, where: str) -> tuple[int, int]:
    p, sep, k = str(value).partition("x")
    if not (sep and p.isdigit() and k.isdigit()):
        raise ConfigError(f"{where}: a batch is written 'PxK' (classes x images per class), got {value!r}")
    return int(p), int(k)


def _dim(key: str, table, where: str) -> Dim:
    """One searched key's range or choices, checked on its own."""
    at = f"{where}: {key}"
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be a table: {{ low, high, log = true }}, {{ low, high, step }} or "
                          f"{{ choices = [...] }}, got {table!r}")
    extra = sorted(set(table) - {"low", "high", "log", "step", "choices"})
    if extra:
        raise ConfigError(f"{at}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)}; known: low, high, "
                          "log, step, choices")
    if "choices" in table:
        ch = table["choices"]
        if set(table) != {"choices"} or not isinstance(ch, list) or not ch:
            raise ConfigError(f"{at}: choices must be a non-empty list, alone in its table, got {table!r}")
        if not all(isinstance(c, (str, int, float, bool)) for c in ch) or len(set(map(repr, ch))) != len(ch):
            raise ConfigError(f"{at}: choices must be distinct strings, numbers or booleans, got {ch!r}")
        return Dim(key, choices=tuple(ch))
    if "low" not in table or "high" not in table:
        raise ConfigError(f"{at}: a range needs low and high, got {table!r}")
    lo, hi, log, step = table["low"], table["high"], table.get("log", False), table.get("step")
    numbers = [v for v in (lo, hi, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise ConfigError(f"{at}: low, high and step must be finite numbers, got {table!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: log must be true or false, got {log!r}")
    if lo >= hi:
        raise ConfigError(f"{at}: the range [{lo}, {hi}] is {'empty' if lo == hi else 'inverted'}: low must be "
                          "below high")
    if log and lo <= 0:
        raise ConfigError(f"{at}: a log range must lie above 0, got [{lo}, {hi}]")
    if log and step is not None:
        raise ConfigError(f"{at}: a range takes log or step, not both")
    if step is not None and not step > 0:
        raise ConfigError(f"{at}: step must be > 0, got {step!r}")
    whole = all(isinstance(v, int) for v in numbers)
    if not whole:
        lo, hi, step = float(lo), float(hi), None if step is None else float(step)
    return Dim(key, lo, hi, log, step)


def _check_read(cfg: Config, dim: Dim, where: str) -> Dim:
    """A key the configuration reads, of the right type, whose every corner makes a valid config
    -> the dim (a whole-number range of a float key searched as floats)."""
    at = f"{where}: {dim.key}"
    key = f"loss_params.{dim.key}" if dim.key in SHORT_FORM else dim.key
    head, dot, sub = key.partition(".")
    fields = cfg.to_dict()
    if key == "batch":
        if cfg.batch_size:
            raise ConfigError(f"{at}: configuration {cfg.name!r} draws uniform batches (batch_size), not P x K")
        if not dim.choices:
            raise ConfigError(f"{at}: batch takes choices = ['PxK', ...]")
        for c in dim.choices:
            _batch(c, at)
    elif head not in fields:
        raise ConfigError(f"{at}: unknown key; search config keys ({', '.join(k for k in fields if k not in FIXED)}), "
                          f"a built-in's {', '.join(SHORT_FORM)}, table entries like loss_params.margin, or batch")
    elif head in FIXED:
        raise ConfigError(f"{at}: {head} is fixed for a search (it names the configuration, its budget or how it "
                          "is validated)")
    elif head in cfg.unread_keys() or (dot and head not in TABLE_KEYS) or (not dot and head in TABLE_KEYS):
        raise ConfigError(f"{at}: configuration {cfg.name!r} (loss {cfg.loss!r}) does not read {key!r}")
    elif head == "loss_params" and cfg.loss in BUILTIN_PARAMS and sub not in BUILTIN_PARAMS[cfg.loss]:
        own = ", ".join(BUILTIN_PARAMS[cfg.loss]) or "none"
        raise ConfigError(f"{at}: configuration {cfg.name!r} (loss {cfg.loss!r}) does not read {key!r} "
                          f"(its loss_params: {own})")
    elif not dot and not dim.choices:
        want = type(fields[head])
        if want not in (int, float) or (want is int and not isinstance(dim.low, int)):
            raise ConfigError(f"{at}: {head} takes {want.__name__} values; search it "
                              + ("with choices" if want not in (int, float) else "with whole-number low and high"))
        if want is float and isinstance(dim.low, int):
            dim = Dim(dim.key, float(dim.low), float(dim.high), dim.log, None if dim.step is None else float(dim.step))
    for value in dim.corners():
        try:
            apply(cfg, {dim.key: value})
        except OneshotError as e:
            raise ConfigError(f"{at} = {value!r} makes configuration {cfg.name!r} invalid: {e}") from None
    return dim


def parse_tune(table, configs: dict[str, Config], where: str) -> TuneSpec:
    """A study's `[study.tune]` (a table of TUNE_KEYS: the preset reader checks that) checked against
    its configurations (name -> its first run's config) -> TuneSpec; any bad value raises
    ConfigError naming it."""
    where = f"{where} [study.tune]"
    trials = _whole(table.get("trials"), 1, f"{where}: trials (per configuration)")
    if ("images" in table) == ("steps" in table):
        raise ConfigError(f"{where}: give the budget of one trial as images = N or steps = N (one of them)")
    images = _whole(table["images"], 1, f"{where}: images") if "images" in table else None
    steps = _whole(table["steps"], 1, f"{where}: steps") if "steps" in table else None
    pruner = table.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(f"{where}: pruner = {pruner!r}: choose one of {', '.join(PRUNERS)}")
    spec = dict(images=images, steps=steps, pruner=pruner,
                validations=_whole(table.get("validations", 4), 1, f"{where}: validations"),
                val_episodes=_whole(table["val_episodes"], 1, f"{where}: val_episodes")
                if "val_episodes" in table else None,
                sampler_seed=_whole(table.get("sampler_seed", 0), 0, f"{where}: sampler_seed"),
                startup_trials=_whole(table.get("startup_trials", 10), 0, f"{where}: startup_trials"))
    space = table.get("space", {})
    runs = table.get("runs", {})
    for name, t in (("space", space), ("runs", runs)):
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: {name} must be a table, got {t!r}")
    unknown = sorted(set(runs) - set(configs))
    if unknown:
        raise ConfigError(f"{where}: runs.{unknown[0]} is not a configuration of the study ({', '.join(configs)}); "
                          'quote a name with dots: [study.tune.runs."triplet-hard-m0.2"]')
    searches = []
    for name, cfg in configs.items():
        own = runs.get(name, {})
        if not isinstance(own, dict):
            raise ConfigError(f"{where}: runs.{name} must be a table, got {own!r}")
        n = _whole(own["trials"], 1, f"{where}: runs.{name}.trials") if "trials" in own else trials
        keys = {**space, **{k: v for k, v in own.items() if k != "trials"}}
        if not keys:
            raise ConfigError(f"{where}: configuration {name!r} searches nothing: give keys in [study.tune.space] "
                              f"or [study.tune.runs.{name}]")
        dims = tuple(_check_read(cfg, _dim(k, v, f"{where}, {name}"), f"{where}, {name}") for k, v in keys.items())
        probe = trial_config(cfg, TuneSpec((), **spec), {}, 0)  # the budget and validation make a valid run
        if probe.val_split == "none":
            raise ConfigError(f"{where}: configuration {name!r} has no validation split (val_split = 'none'): "
                              "a trial is scored on validation")
        searches.append(Search(name, dims, n))
    return TuneSpec(tuple(searches), **spec)
