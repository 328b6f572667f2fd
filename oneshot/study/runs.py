"""One run of a study as one job: claim it, train it (resuming), score it on the study's test
episodes and write its records (`oneshot.study.records` says where and what).

A run is one (configuration, seed) of a study; its checkpoints live in
`<runs>/<study>/<configuration>/seed<k>/`. Every executor (`oneshot.study.executors`) runs `run_one`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from . import lock
from ..config import Config, from_dict
from ..data.load import load_split
from ..errors import OneshotError
from ..scoring import score_encoder
from .records import budget_path, record_path, run_done, score_record, verification_path, verification_record, write
from .presets import Study, source_of

WAIT_S = 2.0  # how often runs held by other drivers are checked


def evaluate_run(st: Study, cfg: Config, run_dir: Path, results: Path, data_root, train_record: dict) -> None:
    """Score a trained run on every protocol, setting, classifier, distance and feature transform
    of its study (`oneshot.scoring.score_encoder`); one record each, and one of its verification
    scores. Each of its snapshots (`snapshot_images`) is scored too, by the study's main
    classifier, distance and transform."""
    from ..checkpoint import load_encoder, load_koch_head, snapshot_path

    model, _ = load_encoder(run_dir, cfg.device)
    snaps = [(n, load_encoder(run_dir, cfg.device, snapshot_path(run_dir, n).name)[0]) for n in cfg.snapshot_budgets]
    spec = _verifiable(st, cfg)
    kw = dict(base=lambda: load_split(cfg.dataset, cfg.protocol, cfg.train_split, data_root, cfg.image_size),
              device=cfg.device, precision=cfg.precision)
    for protocol in spec.protocols:
        split = load_split(cfg.dataset, protocol, "test", data_root, cfg.image_size)
        head = (lambda dim: load_koch_head(run_dir, dim)) if cfg.loss == "koch" else None
        scored = score_encoder(model, split, protocol, spec, koch_head=head, **kw)
        for score in scored.scores:
            write(record_path(results, st.name, cfg, protocol, score.ways, score.shots, score.classifier,
                              score.distance, score.transform),
                  score_record(st, cfg, protocol, score, train_record, scored.embed_s))
        if scored.verification is not None:
            write(verification_path(results, st.name, cfg, protocol),
                  verification_record(st, cfg, protocol, scored.verification, train_record, scored.verify_s))
        for n, snap in snaps:  # the budget curve: the best checkpoint kept at n images, main scoring only
            at = {k: v for k, v in train_record.items() if k != "curve"} | _snapshot_info(run_dir, n)
            snap_scored = score_encoder(snap, split, protocol, spec.main_only(), **kw)
            for score in snap_scored.scores:
                write(budget_path(results, st.name, cfg, n, protocol, score.ways, score.shots, *spec.main),
                      score_record(st, cfg, protocol, score, at, snap_scored.embed_s) | {"budget_images": n})


def _verifiable(st: Study, cfg: Config):
    """The study's spec, without verification (and a warning) where scikit-learn is missing."""
    from ..verification import sklearn_metrics

    if st.eval.verification_pairs == 0:
        return st.eval
    try:
        sklearn_metrics()
        return st.eval
    except OneshotError as e:
        print(f"oneshot: warning: {st.name}/{cfg.name} seed {cfg.seed} not scored for verification: {e}",
              file=sys.stderr, flush=True)
        return dataclasses.replace(st.eval, verification_pairs=0)


def _snapshot_info(run_dir: Path, images: int) -> dict:
    """What a snapshot holds: the step and validation accuracy of the checkpoint kept at `images`."""
    from ..checkpoint import load_checkpoint, snapshot_path

    state = load_checkpoint(snapshot_path(run_dir, images))
    cfg = state["config"]
    return {"best_step": state["step"], "best_val_acc": state["val_acc"],
            "best_images": state["step"] * from_dict(cfg).batch_images, "budget_images": images}


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
        tuned = {"tuned": st.tuned[cfg.name]} if cfg.name in st.tuned else {}  # its search, for the tables
        evaluate_run(st, cfg, run_dir, results, data_root, trained.record | tuned)
    return "trained"
