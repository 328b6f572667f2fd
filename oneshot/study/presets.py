"""Presets: studies of named configurations, each trained with several seeds.

A preset is a TOML file (`oneshot/presets/<name>.toml`, shipped with the package, or any path)
with one or more `[[study]]` blocks:

    seeds = [0, 1, 2]                # every configuration is trained once per seed
    [[study]]
    name = "omniglot-cpu"
    [study.base]                     # config keys shared by every run
    [study.eval]                     # how runs are scored: `oneshot.scoring.EvalSpec` (protocols,
                                     #   settings, episodes, seed, classifiers, distances, transforms, ...)
    [study.tune]                     # optional: search every configuration first (`oneshot.study.tunespec`)
    tuned_in = "omniglot-tuned"      # optional instead: take the best values that study's searches found
                                     #   for the configurations of the same names (its records)
    [[study.runs]]                   # a configuration: a name and the keys that differ from base
    [[study.runs]]                   # keys given as lists make a grid: every combination, named
    loss = "triplet"                 #   after the loss (or `name`) and the listed values:
    mining = ["hard", "semihard"]    #   triplet-hard-m0.2, triplet-hard-m0.5, triplet-semihard-m0.2, ...
    margin = [0.2, 0.5]

`extends = "default"` starts from another preset: each study names the study it copies
(`from`, default its own name) and overrides keys of its `base` and `eval`; its runs are
inherited unless the study lists its own. A tuned study copied from another one is paired
against it in the tables (`oneshot.report.tuning`). `seeds` may be set on the preset, a study or a run,
the nearest winning.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import Config, from_dict
from ..data.protocols import check_protocol, check_scoring
from ..errors import OneshotError
from ..lossparams import SHORT_FORM
from ..scoring import EvalSpec
from .options import check_resources
from .tunespec import TUNE_KEYS, TuneSpec, parse_tune

PRESETS = Path(__file__).resolve().parent.parent / "presets"
TOP_KEYS = ("description", "extends", "seeds", "resources", "study")
STUDY_KEYS = ("name", "from", "base", "eval", "runs", "seeds", "tune", "tuned_in")
CONFIG_KEYS = [*(f.name for f in fields(Config)), *SHORT_FORM]  # a config's keys, the built-ins' short form too
RECIPE_KEYS = ("label", "published", "runs")
# Config keys whose value is a list: a grid over one of them is a list of lists.
LIST_KEYS = tuple(f.name for f in fields(Config) if f.type in ("list", list))


@dataclass
class Study:
    """A study: its runs (one Config per configuration and seed) and how they are scored."""

    name: str
    runs: list[Config]
    eval: EvalSpec
    configurations: list[str] = field(default_factory=list)  # names, in the preset's order
    tune: TuneSpec | None = None  # `[study.tune]`: every configuration searched first (`oneshot.study.tune`)
    tuned: dict = field(default_factory=dict)  # configuration -> what its search found, for its runs' records
    base: str | None = None  # the study of the extended preset it copies (`from`), where that is another study
    tuned_in: str | None = None  # its configurations take the best values of this study's searches


def _find(preset: str) -> Path:
    path = Path(preset) if preset.endswith(".toml") else PRESETS / f"{preset}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.toml"))
        raise OneshotError(f"no preset {preset!r} ({path}); known presets: {', '.join(known)}")
    return path


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A preset document with `extends` applied (studies as dicts)."""
    if path in chain:
        raise OneshotError(f"{path}: presets extend each other in a circle")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise OneshotError(f"{path}: not valid TOML ({e})") from None
    if "extends" not in doc:
        return doc
    parent = _read(_find(doc["extends"]), chain + (path,))
    by_name = {s["name"]: s for s in parent.get("study", [])}
    studies = []
    for s in doc.get("study", []):
        src = s.get("from", s["name"])
        if src not in by_name:
            raise OneshotError(f"{path}: study {s['name']!r} extends {src!r}, which preset "
                               f"{doc['extends']!r} does not have ({', '.join(by_name)})")
        p = by_name[src]
        merged = {**p, **{k: v for k, v in s.items() if k not in ("base", "eval", "from")}}
        merged["from"] = src
        merged["base"] = {**p.get("base", {}), **s.get("base", {})}
        merged["eval"] = {**p.get("eval", {}), **s.get("eval", {})}
        if "runs" in s:
            merged["runs"] = s["runs"]
        studies.append(merged)
    head = {k: v for k, v in parent.items() if k != "study"} | {k: v for k, v in doc.items() if k != "extends"}
    return head | {"study": studies or parent.get("study", [])}


def _label(key: str, value) -> str:
    if key == "margin":
        return f"m{value}"
    if isinstance(value, list):
        return f"{key}{'-'.join(map(str, value))}"
    if isinstance(value, str):
        return value.replace(":", "-")  # "pml:CircleLoss" -> "pml-CircleLoss": run names are folder names
    return f"{key}{value}"


def expand_grid(grid: dict) -> list[dict]:
    """A run block -> one run dict per combination of its list-valued keys (for a key whose value
    is itself a list, `milestones`, a list of lists), named after its
    `name` (else its loss) and the listed values; a block without lists is returned as it is."""
    lists = {k: v for k, v in grid.items() if isinstance(v, list) and k != "seeds"
             and (k not in LIST_KEYS or (v and all(isinstance(x, list) for x in v)))}
    fixed = {k: v for k, v in grid.items() if k not in lists}
    prefix = fixed.pop("name", None) or (None if "loss" in lists else _label("loss", fixed.get("loss", "run")))
    runs = []
    for combo in itertools.product(*lists.values()):
        values = dict(zip(lists, combo))
        parts = ([prefix] if prefix else []) + [_label(k, v) for k, v in values.items()]
        runs.append({**fixed, **values, "name": "-".join(parts)})
    return runs


def _unknown(table: dict, known, where: str) -> None:
    if not isinstance(table, dict):
        raise OneshotError(f"{where} must be a table, got {table!r}")
    extra = sorted(set(table) - set(known))
    if extra:
        raise OneshotError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}; "
                           f"known keys: {', '.join(known)}")


def _seeds(value, where: str) -> None:
    if not (isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in value)):
        raise OneshotError(f"{where}: seeds must be a non-empty list of whole numbers >= 0, got {value!r}")


def _check_reproduces(ev: EvalSpec, where: str, run_names: list[str]) -> None:
    """Each published recipe a study reproduces maps test shots to one of its configurations."""
    for i, r in enumerate(ev.reproduces):
        at = f"{where}.reproduces[{i}]"
        _unknown(r, RECIPE_KEYS, at)
        if set(r) != set(RECIPE_KEYS) or not isinstance(r["runs"], dict) or not r["runs"]:
            raise OneshotError(f"{at} needs label, published and runs (test shots -> configuration), got {r!r}")
        for shots, name in r["runs"].items():
            if not shots.isdigit() or name not in run_names:
                raise OneshotError(f"{at}.runs: {shots!r} = {name!r} must map test shots to a configuration of the "
                                   f"study ({', '.join(run_names)})")


def _study(s: dict, seeds: list[int], path: Path) -> Study:
    where = f"{path}: study {s.get('name')!r}"
    _unknown(s, STUDY_KEYS, where)
    if "name" not in s:
        raise OneshotError(f"{path}: every [[study]] needs a name")
    base = s.get("base", {})
    _unknown(base, CONFIG_KEYS, f"{where} [study.base]")
    seeds = s.get("seeds", seeds)
    if seeds is not None:
        _seeds(seeds, where)
    specs = [r for block in s.get("runs", []) for r in expand_grid(block)]
    names = [r.get("name") for r in specs]
    if None in names or len(set(names)) != len(names):
        raise OneshotError(f"{path}: study {s['name']!r}: every run needs a name, unique within the study "
                           f"(got {names})")
    runs = []
    for spec in specs:
        at = f"{where}, run {spec['name']!r}"
        _unknown(spec, ["name", "seeds", *CONFIG_KEYS], at)
        keys = {k: v for k, v in spec.items() if k != "seeds"}
        if "seeds" in spec:
            _seeds(spec["seeds"], at)
        for seed in spec.get("seeds", seeds if seeds is not None else [base.get("seed", 0)]):
            try:
                runs.append(from_dict({**base, **keys, "seed": seed} | _source(keys, seed, runs)))
            except OneshotError as e:
                raise OneshotError(f"{at}: {e}") from None
    ev = EvalSpec.from_dict(s.get("eval", {}), base.get("protocol", "vinyals"), f"{where} [study.eval]")
    _check_reproduces(ev, f"{where} [study.eval]", names)
    for cfg in runs:
        try:
            check_protocol(cfg.dataset, cfg.protocol)
            for protocol in ev.protocols:
                check_protocol(cfg.dataset, protocol)
                check_scoring(cfg.dataset, cfg.protocol, protocol)
        except OneshotError as e:
            raise OneshotError(f"{path}: study {s['name']!r}, run {cfg.name!r}: {e}") from None
    firsts: dict[str, Config] = {}
    for cfg in runs:
        firsts.setdefault(cfg.name, cfg)
    if "tune" in s:
        _unknown(s["tune"], TUNE_KEYS, f"{where} [study.tune]")
    tune = parse_tune(s["tune"], firsts, where) if "tune" in s else None
    tuned_in = s.get("tuned_in")
    if tuned_in is not None and (not isinstance(tuned_in, str) or tune or tuned_in == s["name"]):
        raise OneshotError(f"{where}: tuned_in = {tuned_in!r} must name another study whose searches ran "
                           "(and cannot go with a [study.tune] of its own)")
    base = s["from"] if s.get("from", s["name"]) != s["name"] else None
    return Study(s["name"], runs, ev, names, tune, base=base, tuned_in=tuned_in)


def _source(keys: dict, seed: int, earlier: list[Config]) -> dict:
    """A fine-tuning run's `init_from`: the name of an earlier configuration of the study becomes
    the identity of its run with the same seed (`source_of` finds that run again)."""
    name = keys.get("init_from")
    if name is None:
        return {}
    if not isinstance(name, str):
        raise OneshotError(f"init_from must name an earlier configuration of the study, got {name!r}")
    hits = [c for c in earlier if c.name == name and c.seed == seed]
    if not hits:
        known = sorted({c.name for c in earlier})
        raise OneshotError(f"init_from = {name!r}: no earlier configuration of this study with that name and seed "
                           f"{seed} (earlier: {', '.join(known) or 'none'})")
    return {"init_from": hits[0].identity()}


def source_of(st: Study, cfg: Config) -> Config | None:
    """The run of study `st` that a fine-tuning run `cfg` starts from (None: from scratch)."""
    if not cfg.init_from:
        return None
    return next(c for c in st.runs if c.identity() == from_dict(cfg.init_from).identity())


def _check_resources(resources: dict, where: str) -> None:
    _unknown(resources, ("cpus", "gpus"), where)
    check_resources(resources.get("cpus", 1), resources.get("gpus", 0), where)


def load_preset(preset: str) -> tuple[dict, list[Study]]:
    """Read a preset by name (or path) -> (its header, its studies with one Config per run)."""
    path = _find(preset)
    doc = _read(path)
    _unknown(doc, TOP_KEYS, str(path))
    if doc.get("seeds") is not None:
        _seeds(doc["seeds"], str(path))
    if not doc.get("study"):
        raise OneshotError(f"{path}: a preset needs at least one [[study]]")
    _check_resources(doc.get("resources", {}), f"{path} [resources]")
    studies = [_study(s, doc.get("seeds"), path) for s in doc.get("study", [])]
    names = [st.name for st in studies]
    if len(set(names)) != len(names):
        raise OneshotError(f"{path}: study names must be unique, got {names}")
    return {k: v for k, v in doc.items() if k != "study"} | {"preset": path.stem, "path": str(path)}, studies
