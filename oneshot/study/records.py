"""The records of a study: where they live, what a record holds, and which runs they finish.

A run (one configuration and seed of a study) writes under `results/records/<study>/<configuration>/seed<k>/`:
- `<protocol>-<W>w<S>s-<classifier>-<distance>.json`: its accuracy on every test episode of a
  setting, the config, the training record and provenance (`score_record`);
- `budget/<N>/<...>.json`: the same for its best checkpoint at N training images (snapshots);
- `verification/<protocol>.json`: its verification scores.
A tuned study's search of a configuration writes `results/records/<study>/tune/<configuration>.json`.
`results/records/benchmark-<preset>.json` says how a preset was last run. Records are written
atomically; readers find them with the glob patterns below.

Versions: records carry "version" since 2 (those without one are version 1, with the same
fields). Version 3 configs hold every loss setting in `loss_params`; older ones hold a built-in's
margin, mining, pos_weight and distance at the top level. Every reader takes a record's config
through `config.migrate` (`config.from_dict` calls it), which folds those keys into loss_params,
and `from_dict` fills keys added since with the defaults that reproduce them, so a record of any
version keeps its identity and its table rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config, from_dict
from ..errors import OneshotError
from ..provenance import atomic_write_text, provenance
from ..scoring import Score
from .presets import Study

VERSION = 3
SCORES = "*/*/seed*/*.json"
BUDGETS = "*/*/seed*/budget/*/*.json"
VERIFICATION = "*/*/seed*/verification/*.json"
BENCHMARKS = "benchmark-*.json"
TUNES = "*/tune/*.json"


def benchmark_path(results: Path, preset: str) -> Path:
    """Where the record of a preset's last `oneshot benchmark` is kept."""
    return Path(results) / "records" / f"benchmark-{preset}.json"


def files(results: Path, pattern: str) -> list[Path]:
    """The record files of `results` that match one of the patterns above, in sorted order."""
    return sorted((Path(results) / "records").glob(pattern))


def write(path: Path, record: dict) -> None:
    """Write one record, atomically."""
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def record_path(results: Path, study: str, cfg: Config, protocol: str, ways: int, shots: int,
                classifier: str, distance: str, transform: str = "UN") -> Path:
    """Where the score of one run (configuration and seed) on one setting is kept (a feature
    transform other than UN adds `-<transform>` to the name)."""
    return (results / "records" / study / cfg.name / f"seed{cfg.seed}"
            / f"{protocol}-{ways}w{shots}s-{classifier}-{distance}{_suffix(transform)}.json")


def _suffix(transform: str) -> str:
    return "" if transform == "UN" else f"-{transform}"


def tune_path(results: Path, study: str, configuration: str) -> Path:
    """Where the trials of a configuration's completed search are kept (`oneshot.study.searches`)."""
    return Path(results) / "records" / study / "tune" / f"{configuration}.json"


def verification_path(results: Path, study: str, cfg: Config, protocol: str) -> Path:
    """Where the verification scores of one run on one protocol are kept."""
    return results / "records" / study / cfg.name / f"seed{cfg.seed}" / "verification" / f"{protocol}.json"


def budget_path(results: Path, study: str, cfg: Config, images: int, protocol: str, ways: int, shots: int,
                classifier: str, distance: str, transform: str = "UN") -> Path:
    """Where the score of a run's snapshot at `images` training images (`snapshot_images`) is kept."""
    return (results / "records" / study / cfg.name / f"seed{cfg.seed}" / "budget" / str(images)
            / f"{protocol}-{ways}w{shots}s-{classifier}-{distance}{_suffix(transform)}.json")


def run_done(results: Path, st: Study, cfg: Config) -> bool:
    """Whether every record a run of `st` owes is there and made for `cfg` (`valid_record`)."""
    paths = record_paths(results, st, cfg)
    return all(valid_record(p, cfg) for p in paths)


def record_paths(results: Path, st: Study, cfg: Config) -> list[Path]:
    """Every score record a run of `st` writes: each protocol, setting, classifier, distance and
    transform, and each snapshot budget at the main ones."""
    ev = st.eval
    return [record_path(results, st.name, cfg, proto, w, s, *scoring)
            for proto in ev.protocols for (w, s, _) in ev.settings_for(proto) for scoring in ev.scorings()] + [
            budget_path(results, st.name, cfg, n, proto, w, s, *ev.main)
            for n in cfg.snapshot_budgets for proto in ev.protocols for (w, s, _) in ev.settings_for(proto)]


def valid_record(path: Path, cfg: Config) -> bool:
    """A record counts for `cfg` when its config has the same identity (device and memory
    layout are provenance: a study may be finished on another device)."""
    try:
        return from_dict(json.loads(path.read_text())["config"]).identity() == cfg.identity()
    except (OSError, ValueError, KeyError, OneshotError):
        return False


def unreadable_record(path: Path) -> bool:
    """A record file that is there but cannot be read (cut short, corrupt)."""
    try:
        return not isinstance(json.loads(path.read_text()).get("config"), dict)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True


def score_record(st: Study, cfg: Config, protocol: str, score: Score, train_record: dict, embed_s: float) -> dict:
    """The record of one run's score on one setting (VERSION of the layout); a transform other
    than UN is recorded under "transform" (a record without one was scored UN)."""
    return {
        "version": VERSION, "study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
        "split": "test", "ways": score.ways, "shots": score.shots, "queries": score.queries,
        "episode_seed": st.eval.seed, "classifier": score.classifier, "distance": score.distance,
        **({"transform": score.transform} if score.transform != "UN" else {}),
        "study_eval": st.eval.to_dict(),
        **score.summary(),
        "config": cfg.to_dict(), "train": train_record,
        "eval": {"embed_s": round(embed_s, 2), "score_s": round(score.score_s, 3), **provenance(cfg.device)},
    }


def verification_record(st: Study, cfg: Config, protocol: str, scores: dict, train_record: dict,
                        verify_s: float) -> dict:
    """The record of one run's verification scores on one protocol ({scorer: metrics})."""
    return {"study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
            "split": "test", "pair_seed": st.eval.seed, "scores": scores,
            "config": cfg.to_dict(), "train": {k: v for k, v in train_record.items() if k != "curve"},
            "eval": {"verify_s": round(verify_s, 2), **provenance(cfg.device)}}
