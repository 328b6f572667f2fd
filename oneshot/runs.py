"""One run of a study as one job: claim it, train it (resuming), score it on the study's test
episodes and write its records; and which runs are done.

A run is one (configuration, seed) of a study; its records live in
`results/records/<study>/<configuration>/seed<k>/` and its checkpoints in
`<runs>/<study>/<configuration>/seed<k>/`. Every executor (`oneshot.executors`) runs `run_one`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import lock
from .config import Config, from_dict
from .data import load_split
from .episodes import sample_episodes
from .errors import OneshotError
from .evaluate import embed_split, score_episodes
from .provenance import atomic_write_text, provenance
from .stats import summarize
from .study import Study, main_scoring, settings
from .verification import PAIRS, pair_scores, sample_pairs, sklearn_metrics, verification_metrics

WAIT_S = 2.0  # how often runs held by other drivers are checked


def record_path(results: Path, study: str, cfg: Config, protocol: str, ways: int, shots: int,
                classifier: str, distance: str) -> Path:
    """Where the score of one run (configuration and seed) on one setting is kept."""
    return (results / "records" / study / cfg.name / f"seed{cfg.seed}"
            / f"{protocol}-{ways}w{shots}s-{classifier}-{distance}.json")


def verification_path(results: Path, study: str, cfg: Config, protocol: str) -> Path:
    """Where the verification scores of one run on one protocol are kept."""
    return results / "records" / study / cfg.name / f"seed{cfg.seed}" / "verification" / f"{protocol}.json"


def budget_path(results: Path, study: str, cfg: Config, images: int, protocol: str, ways: int, shots: int,
                classifier: str, distance: str) -> Path:
    """Where the score of a run's snapshot at `images` training images (`snapshot_images`) is kept."""
    return (results / "records" / study / cfg.name / f"seed{cfg.seed}" / "budget" / str(images)
            / f"{protocol}-{ways}w{shots}s-{classifier}-{distance}.json")


def _run_done(results: Path, st: Study, cfg: Config) -> bool:
    paths = _record_paths(results, st, cfg)
    return all(_valid_record(p, cfg) for p in paths)


def _main_scoring(st: Study) -> tuple[str, str]:
    return main_scoring(st.eval)


def _record_paths(results: Path, st: Study, cfg: Config) -> list[Path]:
    clf, dist = _main_scoring(st)
    return [record_path(results, st.name, cfg, proto, w, s, c, d)
            for proto in st.eval["protocols"] for (w, s, _) in _settings_for(st, proto)
            for c in st.eval["classifiers"] for d in st.eval["distances"]] + [
            budget_path(results, st.name, cfg, n, proto, w, s, clf, dist)
            for n in _snapshots(cfg) for proto in st.eval["protocols"] for (w, s, _) in _settings_for(st, proto)]


def _snapshots(cfg: Config) -> list[int]:
    """The snapshot budgets a run keeps (those below its cap of steps x batch images)."""
    return [n for n in cfg.snapshot_images if n <= cfg.steps * cfg.batch_images]


def _settings_for(st: Study, protocol: str) -> list[tuple[int, int, int]]:
    return [(20, 1, 1)] if protocol == "lake-20runs" else settings(st.eval)


def _valid_record(path: Path, cfg: Config) -> bool:
    """A record counts for `cfg` when its config has the same identity (device and memory
    layout are provenance: a study may be finished on another device)."""
    try:
        return from_dict(json.loads(path.read_text())["config"]).identity() == cfg.identity()
    except (OSError, ValueError, KeyError, OneshotError):
        return False


def _unreadable_record(path: Path) -> bool:
    """A record file that is there but cannot be read (cut short, corrupt)."""
    try:
        return not isinstance(json.loads(path.read_text()).get("config"), dict)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True


def evaluate_run(st: Study, cfg: Config, run_dir: Path, results: Path, data_root, train_record: dict) -> None:
    """Score a trained run on every protocol and setting of its study; one record each. Each of
    its snapshots (`snapshot_images`) is scored too, by the study's main classifier and distance."""
    from .train import load_encoder, snapshot_path

    snapshots = [(n, load_encoder(run_dir, cfg.device, snapshot_path(run_dir, n).name)[0]) for n in _snapshots(cfg)]
    model, _ = load_encoder(run_dir, cfg.device)
    for protocol in st.eval["protocols"]:
        split = load_split(cfg.dataset, protocol, "test", data_root, cfg.image_size)
        t0 = time.perf_counter()
        emb = embed_split(model, split, device=cfg.device, progress=False, precision=cfg.precision)
        embed_s = time.perf_counter() - t0
        settings_episodes = []
        for ways, shots, queries in _settings_for(st, protocol):
            if split.episodes is not None:
                episodes = split.episodes
            else:
                episodes = sample_episodes(split, ways, shots, queries, st.eval["episodes"], st.eval["seed"],
                                           by_group=protocol == "lake-within")
            settings_episodes.append((ways, shots, queries, episodes))
            for clf in st.eval["classifiers"]:
                for dist in st.eval["distances"]:
                    t1 = time.perf_counter()
                    acc = score_episodes(emb, episodes, shots, clf, dist)
                    rec = _score_record(st, cfg, protocol, ways, shots, queries, clf, dist, acc, train_record,
                                        embed_s, time.perf_counter() - t1)
                    path = record_path(results, st.name, cfg, protocol, ways, shots, clf, dist)
                    atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
        clf, dist = _main_scoring(st)
        for n, snap in snapshots:  # the budget curve: the best checkpoint kept at n images, main scoring only
            t0 = time.perf_counter()
            snap_emb = embed_split(snap, split, device=cfg.device, progress=False, precision=cfg.precision)
            embed_s = time.perf_counter() - t0
            at = {k: v for k, v in train_record.items() if k != "curve"} | _snapshot_info(run_dir, n)
            for ways, shots, queries, episodes in settings_episodes:
                t1 = time.perf_counter()
                acc = score_episodes(snap_emb, episodes, shots, clf, dist)
                rec = _score_record(st, cfg, protocol, ways, shots, queries, clf, dist, acc, at, embed_s,
                                    time.perf_counter() - t1) | {"budget_images": n}
                path = budget_path(results, st.name, cfg, n, protocol, ways, shots, clf, dist)
                atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
        if split.episodes is None and st.eval.get("verification_pairs", PAIRS) > 0:
            _verify(st, cfg, run_dir, results, split, protocol, emb, train_record)


def _score_record(st: Study, cfg: Config, protocol: str, ways: int, shots: int, queries: int, clf: str, dist: str,
                  acc, train_record: dict, embed_s: float, score_s: float) -> dict:
    return {
        "study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
        "split": "test", "ways": ways, "shots": shots, "queries": queries,
        "episode_seed": st.eval["seed"], "classifier": clf, "distance": dist,
        "study_eval": st.eval,
        **summarize(acc.numpy()),
        "per_episode": [round(a, 6) for a in acc.tolist()],
        "config": cfg.to_dict(), "train": train_record,
        "eval": {"embed_s": round(embed_s, 2), "score_s": round(score_s, 3), **provenance(cfg.device)},
    }


def _snapshot_info(run_dir: Path, images: int) -> dict:
    """What a snapshot holds: the step and validation accuracy of the checkpoint kept at `images`."""
    from .train import load_checkpoint, snapshot_path

    state = load_checkpoint(snapshot_path(run_dir, images))
    cfg = state["config"]
    return {"best_step": state["step"], "best_val_acc": state["val_acc"],
            "best_images": state["step"] * cfg["batch_classes"] * cfg["batch_shots"], "budget_images": images}


def _verify(st: Study, cfg: Config, run_dir: Path, results: Path, split, protocol: str, emb, train_record: dict) -> None:
    """Score a run on the study's verification pairs: by the study's main distance, and a Koch
    run also by its own head; one record per protocol."""
    from .train import load_koch_head

    try:
        sklearn_metrics()
    except OneshotError as e:
        print(f"oneshot: warning: {st.name}/{cfg.name} seed {cfg.seed} not scored for verification: {e}",
              file=sys.stderr, flush=True)
        return
    t0 = time.perf_counter()
    pairs, same = sample_pairs(split.labels, st.eval.get("verification_pairs", PAIRS), st.eval["seed"])
    scorers = {_main_scoring(st)[1]: None}
    if cfg.loss == "koch":
        scorers["koch-head"] = load_koch_head(run_dir, emb.shape[1])
    scores = {name: verification_metrics(pair_scores(emb, pairs, name, head), same.numpy(), seed=st.eval["seed"])
              for name, head in scorers.items()}
    rec = {"study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
           "split": "test", "pair_seed": st.eval["seed"], "scores": scores,
           "config": cfg.to_dict(), "train": {k: v for k, v in train_record.items() if k != "curve"},
           "eval": {"verify_s": round(time.perf_counter() - t0, 2), **provenance(cfg.device)}}
    atomic_write_text(verification_path(results, st.name, cfg, protocol), json.dumps(rec, indent=1) + "\n")


def _run_dir(runs_dir: Path, st: Study, cfg: Config) -> Path:
    return runs_dir / st.name / cfg.name / f"seed{cfg.seed}"


def run_one(st: Study, cfg: Config, results: Path, runs_dir: Path, data_root=None, progress: bool = True) -> str:
    """One run of a study, as one job: claim its run directory (`lock.claim`), train (resuming
    from it), then score it on the study's test episodes and write its records.

    Returns "trained", "done" (its records were written meanwhile by another driver) or "held"
    (another live driver holds it; nothing was done)."""
    from .train import train

    run_dir = _run_dir(runs_dir, st, cfg)
    claimed = lock.claim(run_dir)
    if claimed is None:
        return "held"
    with claimed:
        if _run_done(results, st, cfg):
            return "done"
        train(cfg, run_dir, data_root, progress=progress)
        train_record = json.loads((run_dir / "run.json").read_text())
        train_record["curve"] = (run_dir / "curve.csv").read_text()
        evaluate_run(st, cfg, run_dir, results, data_root, train_record)
    return "trained"


def _run_all(todo: list[tuple[Study, Config]], results: Path, runs_dir: Path, data_root,
             progress: bool, on_run=None) -> tuple[int, int]:
    """Run `todo` with `run_one`; runs held by other drivers are skipped, then waited for (and
    trained here when their holder gives them up or dies). Returns (trained here, by others);
    `on_run(trained)` after each run trained here."""
    trained, others, held = 0, 0, []
    for i, (st, cfg) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {st.name}/{cfg.name} seed {cfg.seed}", flush=True)
        status = run_one(st, cfg, results, runs_dir, data_root, progress)
        trained, others = trained + (status == "trained"), others + (status == "done")
        if status == "trained" and on_run is not None:
            on_run(trained)
        if status == "held":
            held.append((st, cfg))
            who = lock.holder(_run_dir(runs_dir, st, cfg)) or "just given back"
            print(f"  held by another driver ({who}); skipped for now", flush=True)
        elif status == "done":
            print("  finished meanwhile by another driver", flush=True)
    if held:
        print(f"waiting for {len(held)} run{'s' if len(held) > 1 else ''} held by other drivers: "
              + ", ".join(f"{st.name}/{cfg.name} seed {cfg.seed}" for st, cfg in held), flush=True)
    while held:
        time.sleep(WAIT_S)
        still = []
        for st, cfg in held:
            status = run_one(st, cfg, results, runs_dir, data_root, progress)
            trained, others = trained + (status == "trained"), others + (status == "done")
            if status == "trained" and on_run is not None:
                on_run(trained)
            if status == "held":
                still.append((st, cfg))
        held = still
    return trained, others
