"""`make benchmark`: train every configuration of a preset, score each on the same seeded
test episodes, and write one record per (run, protocol, setting) plus the tables.

A preset is `oneshot/presets/<name>.toml` (shipped with the package): one or more `[[study]]` blocks, each with a
`[study.base]` config, `[study.eval]` settings and `[[study.runs]]` (a name and the config
keys that differ from the base). Finished records are never recomputed, so killing the
benchmark and starting it again continues where it stopped; a run is claimed by a lock in its
run directory (`lock`), so drivers started together on one study train each run once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import lock
from .config import Config, from_dict
from .data import load_split
from .episodes import sample_episodes
from .errors import OneshotError
from .evaluate import embed_split, score_episodes
from .provenance import atomic_write_text, provenance
from .stats import summarize
from .study import Study, load_preset, settings

WAIT_S = 2.0  # how often runs held by other drivers are checked


def record_path(results: Path, study: str, cfg: Config, protocol: str, ways: int, shots: int,
                classifier: str, distance: str) -> Path:
    """Where the score of one run (configuration and seed) on one setting is kept."""
    return (results / "records" / study / cfg.name / f"seed{cfg.seed}"
            / f"{protocol}-{ways}w{shots}s-{classifier}-{distance}.json")


def _measure_rate(cfg: Config, data_root, steps: int = 6) -> float:
    """Training images/s of this config's encoder on this machine, from a few real steps."""
    from .episodes import generator
    from .train import build_model, place, step_loss

    split = load_split(cfg.dataset, cfg.protocol, cfg.train_split, data_root, cfg.image_size)
    model, head = build_model(cfg, split.images.shape[1], split.n_classes)  # head: the loss module
    place(cfg, model, head)
    g = generator(0)
    for _ in range(2):  # the first steps pay one-time set-up costs
        step_loss(cfg, split, model, head, g)[0].backward()
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        loss, n_images = step_loss(cfg, split, model, head, g)
        loss.backward()
        n += n_images
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def plan(studies: list[Study], results: Path, data_root) -> list[tuple[Study, Config, float]]:
    """Print what will run and an estimate of its time; returns (study, config, est. seconds)."""
    todo, invalid = [], []
    rates: dict[tuple, float] = {}
    for st in studies:
        for cfg in st.runs:
            if _run_done(results, st, cfg):
                continue
            invalid += [p for p in _record_paths(results, st, cfg) if _unreadable_record(p)]
            key = (cfg.dataset, cfg.encoder, cfg.image_size, cfg.batch_classes * cfg.batch_shots, cfg.device,
                   cfg.precision, cfg.augment)
            if key not in rates:
                rates[key] = _measure_rate(cfg, data_root)
            images = cfg.steps * cfg.batch_classes * cfg.batch_shots
            todo.append((st, cfg, images / rates[key] * 1.1))  # ~10% for validation and testing
    total = sum(t for *_, t in todo)
    n_all = sum(len(st.runs) for st in studies)
    print(f"plan: {len(todo)} of {n_all} runs to do, about {total / 60:.0f} min "
          f"(rates measured here: {', '.join(f'{r:.0f} img/s' for r in rates.values()) or 'n/a'})")
    if invalid:
        print(f"  {len(invalid)} invalid record{'s' if len(invalid) > 1 else ''} (unreadable: cut short or "
              "corrupt); their runs are scored again:" + "".join(f"\n    {p}" for p in invalid))
    for st, cfg, t in todo:
        what = {"triplet": f"triplet {cfg.mining} margin={cfg.margin}",
                "contrastive": f"contrastive {cfg.pos_weight} margin={cfg.margin}"}.get(
            cfg.loss, " ".join([cfg.loss, *(f"{k}={v}" for k, v in cfg.loss_params.items()),
                                *([f"miner={cfg.miner}"] if cfg.miner != "none" else [])]))
        print(f"  {st.name}/{cfg.name} seed {cfg.seed}: {what}, {cfg.steps} steps, ~{t / 60:.1f} min")
    return todo


def _run_done(results: Path, st: Study, cfg: Config) -> bool:
    paths = _record_paths(results, st, cfg)
    return all(_valid_record(p, cfg) for p in paths)


def _record_paths(results: Path, st: Study, cfg: Config) -> list[Path]:
    return [record_path(results, st.name, cfg, proto, w, s, c, d)
            for proto in st.eval["protocols"] for (w, s, _) in _settings_for(st, proto)
            for c in st.eval["classifiers"] for d in st.eval["distances"]]


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
    """Score a trained run on every protocol and setting of its study; one record each."""
    from .train import load_encoder

    model, _ = load_encoder(run_dir, cfg.device)
    for protocol in st.eval["protocols"]:
        split = load_split(cfg.dataset, protocol, "test", data_root, cfg.image_size)
        t0 = time.perf_counter()
        emb = embed_split(model, split, device=cfg.device, progress=False, precision=cfg.precision)
        embed_s = time.perf_counter() - t0
        for ways, shots, queries in _settings_for(st, protocol):
            if split.episodes is not None:
                episodes = split.episodes
            else:
                episodes = sample_episodes(split, ways, shots, queries, st.eval["episodes"], st.eval["seed"],
                                           by_group=protocol == "lake-within")
            for clf in st.eval["classifiers"]:
                for dist in st.eval["distances"]:
                    t1 = time.perf_counter()
                    acc = score_episodes(emb, episodes, shots, clf, dist)
                    rec = {
                        "study": st.name, "run": cfg.name, "seed": cfg.seed, "dataset": cfg.dataset, "protocol": protocol,
                        "split": "test", "ways": ways, "shots": shots, "queries": queries,
                        "episode_seed": st.eval["seed"], "classifier": clf, "distance": dist,
                        "study_eval": st.eval,
                        **summarize(acc.numpy()),
                        "per_episode": [round(a, 6) for a in acc.tolist()],
                        "config": cfg.to_dict(), "train": train_record,
                        "eval": {"embed_s": round(embed_s, 2), "score_s": round(time.perf_counter() - t1, 3),
                                 **provenance(cfg.device)},
                    }
                    path = record_path(results, st.name, cfg, protocol, ways, shots, clf, dist)
                    atomic_write_text(path, json.dumps(rec, indent=1) + "\n")


def ensure_data(dataset: str, data_root=None) -> None:
    """Fetch a dataset that is missing from the data root, when it can be fetched."""
    from .data import data_root as resolve

    root = resolve(data_root)
    if dataset == "omniglot" and not (root / "omniglot").is_dir():
        from .fetch import fetch

        print(f"Omniglot not found under {root}; fetching it")
        root.mkdir(parents=True, exist_ok=True)
        fetch("omniglot", root)


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
             progress: bool) -> tuple[int, int]:
    """Run `todo` with `run_one`; runs held by other drivers are skipped, then waited for (and
    trained here when their holder gives them up or dies). Returns (trained here, by others)."""
    trained, others, held = 0, 0, []
    for i, (st, cfg) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {st.name}/{cfg.name} seed {cfg.seed}", flush=True)
        status = run_one(st, cfg, results, runs_dir, data_root, progress)
        trained, others = trained + (status == "trained"), others + (status == "done")
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
            if status == "held":
                still.append((st, cfg))
        held = still
    return trained, others


def run_benchmark(preset: str, results: Path, data_root=None, runs_dir: Path = Path("runs"),
                  device: str = "cpu", precision: str | None = None, dry_run: bool = False,
                  progress: bool = True) -> None:
    """Run (or continue) a preset, then write its tables into `results`.

    `device` and `precision` override the preset's; precision is resolved for the device
    ("auto" -> bf16 where it runs natively) before finished runs are looked up."""
    from .tables import write_tables
    from .train import resolved

    header, studies = load_preset(preset)
    for dataset in sorted({c.dataset for st in studies for c in st.runs}):
        ensure_data(dataset, data_root)
    overrides = [f"device={device}"] + ([f"precision={precision}"] if precision else [])
    for st in studies:
        st.runs = [resolved(c.with_overrides(overrides)) for c in st.runs]
    print(f"benchmark preset {header['preset']}: {header.get('description', '')}".rstrip())
    todo = plan(studies, results, data_root)
    if dry_run:
        return
    t0 = time.perf_counter()
    trained, others = _run_all([(st, cfg) for st, cfg, _ in todo], results, runs_dir / header["preset"],
                               data_root, progress)
    if trained:  # a call that trained nothing leaves the committed record of the last one alone
        bench = {"preset": header["preset"], "preset_file": Path(header["path"]).name,
                 "description": header.get("description", ""), "command": f"make benchmark PRESET={header['preset']}",
                 "runs": [f"{st.name}/{c.name}/seed{c.seed}" for st in studies for c in st.runs],
                 "wall_time_s_this_invocation": round(time.perf_counter() - t0, 1),
                 "runs_trained_this_invocation": trained, **provenance(device)}
        atomic_write_text(results / "records" / f"benchmark-{header['preset']}.json", json.dumps(bench, indent=1) + "\n")
    for path in write_tables(results):
        print(f"wrote {path}")
    print(f"trained {trained} of {sum(len(st.runs) for st in studies)} runs"
          + (f" ({others} by other drivers meanwhile)" if others else ""))
