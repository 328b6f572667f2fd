"""Presets: studies of named configurations, each trained with several seeds.

A preset is a TOML file (`oneshot/presets/<name>.toml`, shipped with the package, or any path)
with one or more `[[study]]` blocks:

    seeds = [0, 1, 2]                # every configuration is trained once per seed
    [[study]]
    name = "omniglot-cpu"
    [study.base]                     # config keys shared by every run
    [study.eval]                     # protocols, settings, episodes, seed, classifiers, distances,
                                     #   verification_pairs
    [[study.runs]]                   # a configuration: a name and the keys that differ from base
    [[study.runs]]                   # keys given as lists make a grid: every combination, named
    loss = "triplet"                 #   after the loss (or `name`) and the listed values:
    mining = ["hard", "semihard"]    #   triplet-hard-m0.2, triplet-hard-m0.5, triplet-semihard-m0.2, ...
    margin = [0.2, 0.5]

`extends = "default"` starts from another preset: each study names the study it copies
(`from`, default its own name) and overrides keys of its `base` and `eval`; its runs are
inherited unless the study lists its own. `seeds` may be set on the preset, a study or a run,
the nearest winning.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, from_dict
from .verification import PAIRS
from .data import check_protocol, check_scoring
from .errors import OneshotError

PRESETS = Path(__file__).resolve().parent / "presets"
# verification_pairs: same/different test pairs scored per run (oneshot.verification; 0: none)
EVAL_DEFAULTS = {"episodes": 1000, "seed": 2026, "classifiers": ["nearest-support"], "distances": ["euclidean"],
                 "verification_pairs": PAIRS}


@dataclass
class Study:
    """A study: its runs (one Config per configuration and seed) and how they are scored."""

    name: str
    runs: list[Config]
    eval: dict
    configurations: list[str] = field(default_factory=list)  # names, in the preset's order


def settings(ev: dict) -> list[tuple[int, int, int]]:
    """(ways, shots, queries) of a study's evaluation."""
    return [tuple(s) for s in ev["settings"]]


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
    if isinstance(value, str):
        return value.replace(":", "-")  # "pml:CircleLoss" -> "pml-CircleLoss": run names are folder names
    return f"{key}{value}"


def expand_grid(grid: dict) -> list[dict]:
    """A run block -> one run dict per combination of its list-valued keys, named after its
    `name` (else its loss) and the listed values; a block without lists is returned as it is."""
    lists = {k: v for k, v in grid.items() if isinstance(v, list) and k != "seeds"}
    fixed = {k: v for k, v in grid.items() if k not in lists}
    prefix = fixed.pop("name", None) or (None if "loss" in lists else _label("loss", fixed.get("loss", "run")))
    runs = []
    for combo in itertools.product(*lists.values()):
        values = dict(zip(lists, combo))
        parts = ([prefix] if prefix else []) + [_label(k, v) for k, v in values.items()]
        runs.append({**fixed, **values, "name": "-".join(parts)})
    return runs


def _study(s: dict, seeds: list[int], path: Path) -> Study:
    base = s.get("base", {})
    seeds = s.get("seeds", seeds)
    specs = [r for block in s.get("runs", []) for r in expand_grid(block)]
    names = [r.get("name") for r in specs]
    if None in names or len(set(names)) != len(names):
        raise OneshotError(f"{path}: study {s['name']!r}: every run needs a name, unique within the study "
                           f"(got {names})")
    runs = []
    for spec in specs:
        keys = {k: v for k, v in spec.items() if k != "seeds"}
        for seed in spec.get("seeds", seeds if seeds is not None else [base.get("seed", 0)]):
            runs.append(from_dict({**base, **keys, "seed": seed}))
    ev = {"protocols": [base.get("protocol", "vinyals")], **EVAL_DEFAULTS, **s.get("eval", {})}
    for cfg in runs:
        try:
            check_protocol(cfg.dataset, cfg.protocol)
            for protocol in ev["protocols"]:
                check_protocol(cfg.dataset, protocol)
                check_scoring(cfg.dataset, cfg.protocol, protocol)
        except OneshotError as e:
            raise OneshotError(f"{path}: study {s['name']!r}, run {cfg.name!r}: {e}") from None
    return Study(s["name"], runs, ev, names)


def load_preset(preset: str) -> tuple[dict, list[Study]]:
    """Read a preset by name (or path) -> (its header, its studies with one Config per run)."""
    path = _find(preset)
    doc = _read(path)
    studies = [_study(s, doc.get("seeds"), path) for s in doc.get("study", [])]
    return {k: v for k, v in doc.items() if k != "study"} | {"preset": path.stem, "path": str(path)}, studies
