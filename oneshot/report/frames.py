"""The records of `results/records` read into tables of rows (pandas), for every report: one row
per score record (`load_records`), one per configuration and setting with its crossed summary
(`configurations`), and the names a report gives a loss (`family`, `family_name`).

A record is one run (configuration and seed) scored on one protocol, setting, classifier and
distance (`oneshot.study.runs`); a budget record the same for a run's snapshot at N training images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..study import records
from ..config import migrate
from ..errors import OneshotError
from ..stats import crossed
from ..scoring import EvalSpec

FAMILY_NAMES = {"contrastive-hard": "Contrastive, hardest pairs", "contrastive-active": "Contrastive, active pairs",
                "contrastive-balanced": "Contrastive, all pairs",
                "contrastive-mean": "Contrastive, all pairs (plain mean)",
                "triplet-hard": "Triplet, batch-hard", "triplet-semihard": "Triplet, semi-hard",
                "triplet-all": "Triplet, batch-all", "koch": "Koch BCE (Siamese)", "proto": "Prototypical",
                "softmax": "Softmax pre-training"}

def family(cfg: dict) -> str:
    """The loss of a record's config (today's form, `config.migrate`) as a table row: triplet by
    mining, contrastive by pair weighting, any other loss by its name and miner
    ("pml:TripletMarginLoss+pml:BatchHardMiner"); a fine-tune adds "@" and the configuration it
    starts from ("triplet-semihard@simpleshot")."""
    if cfg["loss"] == "triplet":
        name = f"triplet-{cfg['loss_params']['mining']}"
    elif cfg["loss"] == "contrastive":
        name = f"contrastive-{cfg['loss_params']['pos_weight']}"
    else:
        miner = cfg.get("miner", "none")
        name = cfg["loss"] if miner == "none" else f"{cfg['loss']}+{miner}"
    return f"{name}@{cfg['init_from']['name']}" if cfg.get("init_from") else name


def train_images(cfg: dict) -> int:
    """The training images behind a run's encoder: its steps x batch, plus its fine-tune source's."""
    own = cfg["steps"] * (cfg.get("batch_size") or cfg["batch_classes"] * cfg["batch_shots"])
    return own + (train_images(cfg["init_from"]) if cfg.get("init_from") else 0)


def family_name(f: str) -> str:
    """A family's row label: FAMILY_NAMES, else from its names: "pml:MultiSimilarityLoss" ->
    "MultiSimilarity (PML)", "pml:TripletMarginLoss+pml:BatchHardMiner" -> "TripletMargin +
    BatchHard miner (PML)", "mylab.losses:focal" -> "focal (mylab.losses)"; a fine-tune's
    "triplet-semihard@simpleshot" -> "Triplet, semi-hard, fine-tuned from simpleshot"."""
    if "@" in f:
        base, source = f.rsplit("@", 1)
        return f"{family_name(base)}, fine-tuned from {source}"
    if f in FAMILY_NAMES:
        return FAMILY_NAMES[f]
    parts = []
    for spec, kind in zip(f.split("+", 1), ("Loss", "Miner")):
        src, sep, name = spec.rpartition(":")
        if not sep:
            return f
        if name.endswith(kind) and name != kind:
            name = name[:-len(kind)]
        parts.append((name + (" miner" if kind == "Miner" else ""), "PML" if src == "pml" else src))
    sources = list(dict.fromkeys(src for _, src in parts))
    return f"{' + '.join(name for name, _ in parts)} ({', '.join(sources)})"


def has_margin(cfg: dict) -> bool:
    return cfg["loss"] in ("contrastive", "triplet")


def load_records(results: Path, pattern: str = records.SCORES) -> pd.DataFrame:
    """Every score record under `results/records` as one row (per_episode kept as an array);
    `pattern` records.BUDGETS reads the scores of the runs' budget snapshots instead.

    Tables are never written from an incomplete set: unreadable records (cut short, corrupt)
    raise an OneshotError naming every one of them."""
    rows, bad = [], []
    if not (results / "records").is_dir():
        raise OneshotError(f"no records under {results}: expected {results / 'records'} "
                           "(made by `oneshot benchmark`)")
    for path in records.files(results, pattern):
        try:
            rows.append(_record_row(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            bad.append(path)
    if bad:
        raise OneshotError(f"{len(bad)} unreadable record{'s' if len(bad) > 1 else ''} (cut short or corrupt), "
                           "so no table is written from an incomplete set:\n" + "".join(f"  {p}\n" for p in bad)
                           + "delete them and run `oneshot benchmark` again to recompute them")
    if not rows and pattern == records.SCORES:
        raise OneshotError(f"no records under {results / 'records'} (made by `oneshot benchmark`)")
    return pd.DataFrame(rows)


def _record_row(path: Path) -> dict:
    """One score record as a row of `load_records`."""
    r = json.loads(path.read_text())
    cfg, tr = migrate(r["config"]), r["train"]
    spec = EvalSpec.from_dict(r["study_eval"], where=f"the record of {r['study']}/{r['run']}")
    return {
        "study": r["study"], "run": r["run"], "seed": cfg["seed"], "dataset": r["dataset"],
        "protocol": r["protocol"], "ways": r["ways"], "shots": r["shots"], "queries": r["queries"],
        "classifier": r["classifier"], "distance": r["distance"], "transform": r.get("transform", "UN"),
        "mean": r["mean"], "ci95": r["ci95"],
        "t_ci95": r["t_ci95"], "episodes": r["episodes"], "family": family(cfg),
        "margin": cfg["loss_params"]["margin"] if has_margin(cfg) else np.nan, "val_acc": tr["best_val_acc"],
        "pixels_val_acc": tr.get("pixels_val_acc", np.nan), "train_s": tr["wall_time_s"], "steps": cfg["steps"],
        "normalize": cfg["normalize"], "precision": cfg.get("precision", "fp32"),
        "per_episode": np.asarray(r["per_episode"]),
        "main": spec.main,
        "curve": tr.get("curve", ""), "commit": tr["commit"], "versions": tr["versions"],
        "device": tr["device"], "embed_s": r["eval"]["embed_s"], "batch": batch_shape(cfg),
        "budget": r.get("budget_images", train_images(cfg)), "fine_tune": bool(cfg.get("init_from")),
        "augment": cfg.get("augment", "none"),
        "images_seen": tr.get("images_seen", np.nan),
        "reproduces": json.dumps(list(spec.reproduces), sort_keys=True),
        "tuned": tr.get("tuned", {}).get("trials", 0),  # trials of its configuration's search (0: not tuned)
        "base_study": tr.get("tuned", {}).get("base_study"),  # the untuned study a tuned run is paired against
        "episode_seed": r["episode_seed"],
    }


def batch_shape(cfg: dict) -> str:
    """A training batch as B images (uniform batches), P x K, or P x (S+Q) for a prototypical batch of S supports and Q queries."""
    if cfg.get("batch_size"):
        return str(cfg["batch_size"])
    p, k = cfg["batch_classes"], cfg["batch_shots"]
    if cfg["loss"] != "proto":
        return f"{p}x{k}"
    support = cfg.get("support_shots", 0) or k - 1
    return f"{p}x({support}+{k - support})"


def recipes(d: pd.DataFrame) -> list[dict]:
    """The published recipes a study reproduces (`[[study.eval.reproduces]]`): each with `label`
    (its table row), `published` (the row of `oneshot.report.published` it reproduces) and `runs` (test shots, as a
    string, -> the configuration trained for them)."""
    return json.loads(d.reproduces.iloc[0]) if len(d) and "reproduces" in d else []


def recipe_run(recipe: dict, shots: int) -> str | None:
    return recipe["runs"].get(str(shots))


SCORE_KEYS = ["study", "run", "protocol", "ways", "shots", "classifier", "distance", "transform"]


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and setting: the seeds' accuracies `acc` [S, E] (rows in seed
    order), their crossed summary (mean, ci95, seeds, seed_sd), the seed-mean validation accuracy
    and whether any seed collapsed (validation accuracy not above raw pixels)."""
    rows = []
    for key, g in df.groupby(SCORE_KEYS, sort=True):
        g = g.sort_values("seed")
        acc = np.stack(g.per_episode.to_numpy())
        c = crossed(acc)
        first = g.iloc[0]
        rows.append({**dict(zip(SCORE_KEYS, key)), "dataset": first.dataset, "queries": first.queries,
                     "episodes": first.episodes, "family": first.family, "margin": first.margin,
                     "main": first["main"], "reproduces": first.reproduces, "batch": first.batch,
                     "augment": first.augment, "tuned": first.tuned, "base_study": first.base_study,
                     "episode_seed": first.episode_seed,
                     "seed_list": tuple(g.seed), "acc": acc, "mean": c["mean"],
                     "ci95": c["ci95"], "seeds": c["seeds"], "seed_sd": c["seed_sd"],
                     "val_acc": g.val_acc.mean(), "collapsed": int((g.val_acc <= g.pixels_val_acc).sum())})
    return pd.DataFrame(rows)


def _col(ways: int, shots: int) -> str:
    return f"{ways}w{shots}s"


def _main_view(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    clf, dist, tf = df["main"].iloc[0]
    return df[(df.protocol == protocol) & (df.classifier == clf) & (df.distance == dist) & (df["transform"] == tf)]


def scoring_text(main: tuple) -> str:
    """A study's main scoring as its tables say it: "Classifier: c, distance: d" (and ", features: T"
    for a feature transform other than UN)."""
    clf, dist, tf = main
    return f"Classifier: {clf}, distance: {dist}" + (f", features: {tf}" if tf != "UN" else "")
