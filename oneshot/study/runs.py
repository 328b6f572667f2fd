"""One run of a study as one job: claim it, train it (resuming), score it on the study's test
episodes and write its records (`oneshot.study.records` says where and what).

A run is one (configuration, seed) of a study; its checkpoints live in
`<runs>/<study>/<configuration>/seed<k>/`. Every executor (`oneshot.study.executors`) runs `run_one`.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from . import lock
from ..config import Config, from_dict
from ..data.load import load_split
from ..data.episodes import test_episodes
from ..errors import OneshotError
from ..evaluate import embed_split, score_episodes
from ..features import base_mean, transformed
from ..provenance import provenance
from .records import budget_path, record_path, run_done, score_record, settings_for, verification_path, write
from .presets import Study, main_scoring, main_transform, source_of, transforms
from ..verification import PAIRS, pair_scores, sample_pairs, sklearn_metrics, verification_metrics

WAIT_S = 2.0  # how often runs held by other drivers are checked


def evaluate_run(st: Study, cfg: Config, run_dir: Path, results: Path, data_root, train_record: dict) -> None:
    """Score a trained run on every protocol, setting, classifier, distance and feature transform
    of its study; one record each. Each of its snapshots (`snapshot_images`) is scored too, by the
    study's main classifier, distance and transform."""
    from ..checkpoint import load_encoder, snapshot_path

    snaps = [(n, load_encoder(run_dir, cfg.device, snapshot_path(run_dir, n).name)[0]) for n in cfg.snapshot_budgets]
    model, _ = load_encoder(run_dir, cfg.device)
    embed_kw = dict(device=cfg.device, progress=False, precision=cfg.precision)
    names = transforms(st.eval)
    clf, dist = main_scoring(st.eval)
    main_tf = main_transform(st.eval)

    def mean_of(encoder):  # CL2N: the mean feature of the run's training split, without augmentation
        return lambda: base_mean(encoder, load_split(cfg.dataset, cfg.protocol, cfg.train_split, data_root,
                                                     cfg.image_size), **embed_kw)

    for protocol in st.eval["protocols"]:
        split = load_split(cfg.dataset, protocol, "test", data_root, cfg.image_size)
        t0 = time.perf_counter()
        emb = embed_split(model, split, **embed_kw)
        embed_s = time.perf_counter() - t0
        feats = transformed(emb, names, mean_of(model))
        settings_episodes = []
        for ways, shots, queries in settings_for(st, protocol):
            episodes, _ = test_episodes(split, protocol, ways, shots, queries, st.eval["episodes"], st.eval["seed"])
            settings_episodes.append((ways, shots, queries, episodes))
            for c, d, t in itertools.product(st.eval["classifiers"], st.eval["distances"], names):
                t1 = time.perf_counter()
                acc = score_episodes(feats[t], episodes, shots, c, d)
                rec = score_record(st, cfg, protocol, ways, shots, queries, c, d, acc, train_record,
                                    embed_s, time.perf_counter() - t1, t)
                write(record_path(results, st.name, cfg, protocol, ways, shots, c, d, t), rec)
        for n, snap in snaps:  # the budget curve: the best checkpoint kept at n images, main scoring only
            t0 = time.perf_counter()
            snap_emb = transformed(embed_split(snap, split, **embed_kw), [main_tf], mean_of(snap))[main_tf]
            embed_s = time.perf_counter() - t0
            at = {k: v for k, v in train_record.items() if k != "curve"} | _snapshot_info(run_dir, n)
            for ways, shots, queries, episodes in settings_episodes:
                t1 = time.perf_counter()
                acc = score_episodes(snap_emb, episodes, shots, clf, dist)
                rec = score_record(st, cfg, protocol, ways, shots, queries, clf, dist, acc, at, embed_s,
                                    time.perf_counter() - t1, main_tf) | {"budget_images": n}
                write(budget_path(results, st.name, cfg, n, protocol, ways, shots, clf, dist, main_tf), rec)
        if split.episodes is None and st.eval.get("verification_pairs", PAIRS) > 0:
            _verify(st, cfg, run_dir, results, split, protocol, emb, train_record)


def _snapshot_info(run_dir: Path, images: int) -> dict:
    """What a snapshot holds: the step and validation accuracy of the checkpoint kept at `images`."""
    from ..checkpoint import load_checkpoint, snapshot_path

    state = load_checkpoint(snapshot_path(run_dir, images))
    cfg = state["config"]
    return {"best_step": state["step"], "best_val_acc": state["val_acc"],
            "best_images": state["step"] * from_dict(cfg).batch_images, "budget_images": images}


def _verify(st: Study, cfg: Config, run_dir: Path, results: Path, split, protocol: str, emb, train_record: dict) -> None:
    """Score a run on the study's verification pairs: by the study's main distance, and a Koch
    run also by its own head; one record per protocol."""
    from ..checkpoint import load_koch_head

    try:
        sklearn_metrics()
    except OneshotError as e:
        print(f"oneshot: warning: {st.name}/{cfg.name} seed {cfg.seed} not scored for verification: {e}",
              file=sys.stderr, flush=True)
        return
    t0 = time.perf_counter()
    pairs, same = sample_pairs(split.labels, st.eval.get("verification_pairs", PAIRS), st.eval["seed"])
    scorers = {main_scoring(st.eval)[1]: None}
    if cfg.loss == "koch":
        scorers["koch-head"] = load_koch_head(run_dir, emb.shape[1])
    scores = {name: verification_metrics(pair_scores(emb, pairs, name, head), same.numpy(), seed=st.eval["seed"])
              for name, head in scorers.items()}
    rec = {"study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
           "split": "test", "pair_seed": st.eval["seed"], "scores": scores,
           "config": cfg.to_dict(), "train": {k: v for k, v in train_record.items() if k != "curve"},
           "eval": {"verify_s": round(time.perf_counter() - t0, 2), **provenance(cfg.device)}}
    write(verification_path(results, st.name, cfg, protocol), rec)


def run_path(runs_dir: Path, st: Study, cfg: Config) -> Path:
    """The run directory of a run of a study: `<runs>/<study>/<configuration>/seed<k>`."""
    return runs_dir / st.name / cfg.name / f"seed{cfg.seed}"


def run_one(st: Study, cfg: Config, results: Path, runs_dir: Path, data_root=None, progress: bool = True) -> str:
    """One run of a study, as one job: claim its run directory (`lock.claim`), train (resuming
    from it), then score it on the study's test episodes and write its records.

    Returns "trained", "done" (its records were written meanwhile by another driver) or "held"
    (another live driver holds it; nothing was done)."""
    from ..train import train

    run_dir = run_path(runs_dir, st, cfg)
    claimed = lock.claim(run_dir)
    if claimed is None:
        return "held"
    with claimed:
        if run_done(results, st, cfg):
            return "done"
        source = source_of(st, cfg)
        trained = train(cfg, run_dir, data_root, progress=progress,
                        init=run_path(runs_dir, st, source) if source is not None else None)
        evaluate_run(st, cfg, run_dir, results, data_root, trained.record)
    return "trained"
