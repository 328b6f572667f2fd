"""The `oneshot` command: data, eval, train, table, benchmark."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from .data.protocols import PROTOCOLS
from .distances import METRICS
from .errors import OneshotError
from .evaluate import CLASSIFIERS
from .features import TRANSFORMS
from .memory import keep_freed_memory
from .precision import PRECISIONS


def _eval(args) -> dict:
    from .data.load import load_split
    from .data.protocols import check_protocol, check_scoring, fixed_task
    from .precision import resolve
    from .scoring import EvalSpec, score_encoder

    if args.verification:  # refused before any image is decoded or embedded
        from .verification import sklearn_metrics

        if args.pairs < 2:
            raise OneshotError(f"--pairs {args.pairs}: a verification set needs at least 2 pairs")
        sklearn_metrics()
    trained = None
    if args.encoder != "pixels":
        from .checkpoint import load_encoder

        model, trained = load_encoder(args.encoder, args.device)
    # What the command line leaves out comes from the run's config, else the dataset's defaults.
    dataset = args.dataset or (trained.dataset if trained else "omniglot")
    protocol = check_protocol(dataset, args.protocol or (trained.protocol if trained and trained.dataset == dataset
                                                         else None))
    size = args.image_size or (trained.image_size if trained else 28 if dataset == "omniglot" else 84)
    if trained is not None:
        check_scoring(dataset, trained.protocol, protocol)
    task = fixed_task(protocol)
    if task:
        if args.verification:
            raise OneshotError(f"--verification: {protocol} is a fixed set of episodes; verification pairs need "
                               "a split of classes (another protocol)")
        if (args.ways, args.shots) != task[:2]:
            print(f"note: {protocol} is a fixed {task[0]}-way {task[1]}-shot protocol; --ways/--shots/--queries/"
                  "--episodes are ignored", file=sys.stderr)
    flags = f"--ways {args.ways} --shots {args.shots} --queries {args.queries} --episodes {args.episodes}"
    scored_as = protocol or dataset  # a folder or learn2learn dataset has no protocol but its own split
    spec = EvalSpec.from_dict({  # refuses an impossible request before any image is decoded or embedded
        "protocols": [scored_as], "settings": [] if task else [[args.ways, args.shots, args.queries]],
        "episodes": args.episodes, "seed": args.seed, "classifiers": [args.classifier],
        "distances": [args.distance], "transforms": [args.transform],
        "verification_pairs": args.pairs if args.verification else 0}, where=flags)
    split = load_split(dataset, protocol, args.split, args.data_root, size)

    def base():  # CL2N: the training split the encoder learnt from (pixels: the protocol's)
        if trained is not None and trained.dataset == dataset:
            return load_split(trained.dataset, trained.protocol, trained.train_split, args.data_root, size)
        return load_split(dataset, protocol, "train", args.data_root, size)

    koch_head = None
    if trained is not None and trained.loss == "koch":
        from .checkpoint import load_koch_head

        koch_head = lambda dim: load_koch_head(args.encoder, dim)  # noqa: E731
    prec = resolve(args.precision or (trained.precision if trained else "fp32"), args.device)
    scored = score_encoder(model if trained is not None else (lambda x: x.flatten(1)), split, scored_as, spec,
                           base=base, koch_head=koch_head, device=args.device, precision=prec,
                           progress=not args.json)
    score = scored.scores[0]
    out = {"dataset": dataset, "protocol": protocol, "split": args.split, "ways": score.ways,
           "shots": score.shots, "queries": score.queries, "seed": args.seed,
           "encoder": args.encoder, "classifier": args.classifier, "distance": args.distance,
           "transform": args.transform, "image_size": size, "precision": prec, **score.summary()}
    if scored.verification is not None:  # by --distance, and a Koch run's head under "koch_head"
        out.update(_verification_view(scored.verification[args.distance]))
        if "koch-head" in scored.verification:
            out["koch_head"] = _verification_view(scored.verification["koch-head"])
    return out


def _verification_view(m: dict) -> dict:
    """Verification metrics (`verification_metrics`) as `oneshot eval --json` prints them."""
    from .verification import flat

    return {**flat(m), "verification": {k: m[k] for k in ("roc_auc", "eer", "tar_at_far", "pairs")}}


def cmd_eval(args) -> None:
    r = _eval(args)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['ways']}-way {r['shots']}-shot: {100 * r['mean']:.2f} ± {100 * r['ci95']:.2f} % "
              f"({r['episodes']} episodes, {r['queries']} {'query' if r['queries'] == 1 else 'queries'} per class)")
        if "verification" in r:
            n = sum(r["verification"]["pairs"].values())
            for label, v in [(r["distance"], r)] + ([("Koch head", r["koch_head"])] if "koch_head" in r else []):
                m = v["verification"]
                tars = ", ".join(f"TAR@FAR={far} {_pct(e)}" for far, e in m["tar_at_far"].items())
                print(f"verification by {label} ({n} pairs): ROC AUC {_pct(m['roc_auc'])}, EER {_pct(m['eer'])}, {tars}")


def _pct(e: dict) -> str:
    return f"{100 * e['value']:.2f} % [{100 * e['ci95'][0]:.2f}, {100 * e['ci95'][1]:.2f}]"


def cmd_train(args) -> None:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.set)
    if args.device:
        cfg = cfg.with_overrides([f"device={args.device}"])
    if args.precision:
        cfg = cfg.with_overrides([f"precision={args.precision}"])
    if args.init_from:  # fine-tune the best encoder of a run directory: its config becomes part of this run's
        from .config import from_dict
        from .rundir import stored_identity

        source = stored_identity(Path(args.init_from) / "config.json")  # train() checks its best.pt against it
        if source is None or not (Path(args.init_from) / "best.pt").exists():
            raise OneshotError(f"--init-from {args.init_from}: no trained encoder there (no run's config.json "
                               "and best.pt)")
        cfg = from_dict(cfg.to_dict() | {"init_from": source})
    out = args.out or Path("runs") / cfg.name
    run = train(cfg, out, args.data_root, resume=not args.restart, init=args.init_from).record
    print(f"{cfg.name}: best validation accuracy {100 * run['best_val_acc']:.2f} % "
          f"({run['wall_time_s']:.0f} s); encoder in {out}")


def cmd_data(args) -> None:
    from .data.load import data_root

    root = data_root(args.data_root)
    if args.action == "fetch":
        from .data.fetch import fetch

        root.mkdir(parents=True, exist_ok=True)
        for name in args.names or ["omniglot"]:
            paths = fetch(name, root, base_url=args.base_url, force=args.force)
            print(f"{name}: {len(paths)} files in {root / name}")
        return
    from .data import omniglot

    rows = omniglot.check(root)
    try:
        from .data import miniimagenet

        rows += miniimagenet.check(root)
    except ImportError:
        pass
    for item, ok, detail in rows:
        print(f"{'ok     ' if ok else 'MISSING'} {item}: {detail}")


def cmd_table(args) -> None:
    from .report.write import write_report

    for path in write_report(Path(args.results), Path(args.out) if args.out else None):
        print(path)


def cmd_benchmark(args) -> None:
    from .study.benchmark import run_benchmark
    from .study.options import Options

    opts = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)})  # flags of the same names
    # what made the tables, for results/README.md: the Makefile names itself, else this command line
    command = os.environ.get("ONESHOT_COMMAND") or "oneshot " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    run_benchmark(args.preset, Path(args.results), args.data_root, runs_dir=Path(args.runs),
                  device=args.device, precision=args.precision, dry_run=args.dry_run, executor=opts,
                  command=command)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oneshot", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of every error (also: ONESHOT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--data-root", help="folder holding the datasets (default: $ONESHOT_DATA, else ./data)")

    def precision(sp, default_says):
        sp.add_argument("--precision", choices=PRECISIONS, help=f"arithmetic of the encoder: fp32, bf16, or "
                        f"auto = bf16 where the device runs it natively, else fp32 (default: {default_says})")

    d = sub.add_parser("data", help="fetch or check datasets")
    d.add_argument("action", choices=["fetch", "check"])
    d.add_argument("names", nargs="*", help="datasets to fetch (default: omniglot)")
    d.add_argument("--base-url", help="fetch from this mirror instead of the canonical sources")
    d.add_argument("--force", action="store_true", help="download again even if files verify")
    common(d)
    d.set_defaults(func=cmd_data)

    e = sub.add_parser("eval", help="evaluate an encoder on seeded test episodes")
    common(e)
    e.add_argument("--dataset", help="omniglot, miniimagenet, folder:PATH or l2l:NAME (default: the "
                   "encoder's training dataset, else omniglot)")
    e.add_argument("--protocol", help="; ".join(f"{d}: {', '.join(p)}" for d, p in PROTOCOLS.items())
                   + " (default: the encoder's, else the dataset's first)")
    e.add_argument("--split", default="test", help="test, val, train; a folder dataset also has 'all' "
                   "(every class, no training split held out)")
    e.add_argument("--ways", type=int, default=5)
    e.add_argument("--shots", type=int, default=1)
    e.add_argument("--queries", type=int, default=15)
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--encoder", default="pixels", help="'pixels' or a run directory from 'oneshot train'")
    e.add_argument("--classifier", default="nearest-support", choices=CLASSIFIERS)
    # sqeuclidean orders every distance as euclidean does: here it would only repeat euclidean's scores
    e.add_argument("--distance", default="euclidean", choices=[m for m in METRICS if m != "sqeuclidean"])
    e.add_argument("--transform", default="UN", choices=TRANSFORMS,
                   help="features before scoring: UN as they are, L2N L2-normalised, CL2N centred on the mean "
                        "feature of the encoder's training split, then L2-normalised (SimpleShot)")
    e.add_argument("--image-size", type=int, default=None, help="resize images (default for pixels: 28 on "
                   "Omniglot, 84 otherwise; for a trained encoder: its training size)")
    e.add_argument("--device", default="cpu")
    precision(e, "the encoder's training precision; fp32 for pixels")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--verification", action="store_true", help="also score same/different pairs of the split: "
                   "ROC AUC, EER, TAR at FAR 1e-3 and 1e-2 with 95%% CIs (needs scikit-learn)")
    e.add_argument("--pairs", type=int, default=20000, help="verification pairs, half same-class (default 20000)")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="train a Siamese encoder from a config")
    common(t)
    t.add_argument("--config", help="TOML file in experiments/")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--out", help="run directory (default: runs/<name>)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    t.add_argument("--restart", action="store_true", help="start over instead of resuming")
    t.add_argument("--init-from", metavar="DIR", help="fine-tune: start from the best encoder of this run directory")
    precision(t, "the config's")
    t.set_defaults(func=cmd_train)

    tb = sub.add_parser("table", help="regenerate tables and plots from records")
    tb.add_argument("results", help="results folder holding records/")
    tb.add_argument("--out", help="where to write (default: the results folder)")
    tb.set_defaults(func=cmd_table)

    b = sub.add_parser("benchmark", help="train and evaluate a preset grid, write results/")
    common(b)
    b.add_argument("--preset", default="default")
    b.add_argument("--results", default="results")
    b.add_argument("--runs", default="runs", help="run directories (checkpoints; not committed)")
    b.add_argument("--device", default="cpu")
    precision(b, "the preset's")
    b.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    x = b.add_argument_group("executors", "where runs execute; results and runs folders must be storage "
                             "every worker sees")
    x.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                   help="local: here, one run after another; ray: Ray tasks; slurm: a job array per study")
    x.add_argument("--cpus", type=int, help="threads (and Ray/Slurm CPUs) per run, on every executor (default: "
                   "the preset's [resources] cpus, else 1 on ray and slurm and all cores locally)")
    x.add_argument("--gpus", type=float, help="GPUs per run (ray; default: the preset's [resources] gpus, else 0)")
    x.add_argument("--workers", type=int, help="runs at once on a Ray started here (default: cores // cpus)")
    x.add_argument("--ray-address", help="a running Ray cluster (default: start one on this machine)")
    x.add_argument("--max-retries", type=int, default=3, help="times a run whose Ray worker died starts again")
    x.add_argument("--slurm-partition")
    x.add_argument("--slurm-time", type=int, metavar="MIN", help="time limit of each run's job, minutes")
    x.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per run's job")
    x.add_argument("--slurm-cpus", type=int, help="CPUs per run's job (default: --cpus)")
    x.add_argument("--slurm-parallelism", type=int, metavar="K", help="at most K runs of a study at once")
    b.add_argument("--storage", help="tuning: Optuna's storage URL (default: sqlite:///RESULTS/tuning/STUDY.sqlite3)")
    b.add_argument("--heartbeat", type=int, default=60, help="tuning: seconds between heartbeats (default 60)")
    b.set_defaults(func=cmd_benchmark)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input (an OneshotError) is one line on stderr and exit status 2,
    anything else is a bug and keeps its traceback. `--debug` or ONESHOT_DEBUG=1 shows the
    traceback of bad input too."""
    args = build_parser().parse_args(argv)
    args.argv = argv
    keep_freed_memory()
    try:
        args.func(args)
    except OneshotError as e:
        if args.debug or os.environ.get("ONESHOT_DEBUG"):
            raise
        print(f"oneshot: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oneshot: interrupted; finished work is kept, run the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
