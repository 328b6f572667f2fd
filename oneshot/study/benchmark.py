"""`make benchmark`: train every configuration of a preset, score each on the same seeded
test episodes, and write one record per (run, protocol, setting) plus the tables.

A preset is `oneshot/presets/<name>.toml` (shipped with the package): one or more `[[study]]` blocks, each with a
`[study.base]` config, `[study.eval]` settings and `[[study.runs]]` (a name and the config
keys that differ from the base). Finished records are never recomputed, so killing the
benchmark and starting it again continues where it stopped; a run is claimed by a lock in its
run directory (`lock`), so drivers started together on one study train each run once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import Config
from ..data.load import load_split
from ..errors import OneshotError
from ..provenance import provenance
from ..rundir import RunDir
from .records import benchmark_path, record_paths, run_done, unreadable_record, write
from .presets import Study, load_preset
from .runs import run_path

if TYPE_CHECKING:
    from .options import Options

def _measure_rate(cfg: Config, data_root, steps: int = 6) -> float:
    """Training images/s of this config's encoder on this machine, from a few real steps."""
    from ..data.episodes import generator
    from ..registry import build_model
    from ..step import place, step_loss

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


def _rate(rates: dict, cfg: Config, data_root) -> float:
    """`_measure_rate` once per kind of step (dataset, encoder, batch, device, ...), kept in `rates`."""
    key = (cfg.dataset, cfg.encoder, cfg.image_size, cfg.batch_images, cfg.device, cfg.precision, cfg.augment)
    if key not in rates:
        rates[key] = _measure_rate(cfg, data_root)
    return rates[key]


def plan(studies: list[Study], results: Path, data_root, rates: dict | None = None,
         runs_dir: Path | None = None) -> list[tuple[Study, Config, float]]:
    """Print what will run and an estimate of its time; returns (study, config, est. seconds).
    `rates`: training rates measured already (filled in here); `runs_dir`: the preset's run
    directories, where a run interrupted before has a last.pt to resume from (its steps left are
    what the estimate counts)."""
    todo, invalid, start = [], [], {}
    rates = {} if rates is None else rates
    for st in studies:
        for cfg in st.runs:
            if run_done(results, st, cfg):
                continue
            invalid += [p for p in record_paths(results, st, cfg) if unreadable_record(p)]
            key = (st.name, cfg.name, cfg.seed)
            start[key] = RunDir(run_path(runs_dir, st, cfg)).resume_step(cfg) if runs_dir else 0
            images = (cfg.steps - start[key]) * cfg.batch_images
            todo.append((st, cfg, images / _rate(rates, cfg, data_root) * 1.1))  # ~10% for validation and testing
    todo.sort(key=lambda t: t[1].seed)  # seed-major: a sweep stopped early has every configuration at its first seeds
    total = sum(t for *_, t in todo)
    n_all = sum(len(st.runs) for st in studies)
    print(f"plan: {len(todo)} of {n_all} runs to do, about {total / 60:.0f} min = {total / 3600:.1f} device-hours "
          f"(rates measured here: {', '.join(f'{r:.0f} img/s' for r in rates.values()) or 'n/a'})")
    if invalid:
        print(f"  {len(invalid)} invalid record{'s' if len(invalid) > 1 else ''} (unreadable: cut short or "
              "corrupt); their runs are scored again:" + "".join(f"\n    {p}" for p in invalid))
    for st, cfg, t in todo:
        lp = cfg.loss_params
        what = {"triplet": f"triplet {lp.get('mining')} margin={lp.get('margin')}",
                "contrastive": f"contrastive {lp.get('pos_weight')} margin={lp.get('margin')}"}.get(
            cfg.loss, " ".join([cfg.loss, *(f"{k}={v}" for k, v in cfg.loss_params.items()),
                                *([f"miner={cfg.miner}"] if cfg.miner != "none" else [])]))
        resumes = start[st.name, cfg.name, cfg.seed]
        print(f"  {st.name}/{cfg.name} seed {cfg.seed}: {what}, {cfg.steps} steps"
              + (f" (resumes at step {resumes})" if resumes else "") + f", ~{t / 60:.1f} min")
    return todo


def _shown_path(path: Path) -> str:
    """A preset's file as the README shows it: `oneshot/presets/<name>.toml` for a shipped one,
    else the path relative to here (absolute when it lies elsewhere)."""
    from .presets import PRESETS

    if path.resolve().parent == PRESETS:
        return f"oneshot/presets/{path.name}"
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def wall_time(seconds: list[float], workers: int) -> float:
    """Wall time of runs of these durations on `workers` workers, longest first to the least loaded."""
    loads = [0.0] * max(1, workers)
    for t in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def ensure_data(dataset: str, data_root=None) -> None:
    """Fetch a dataset that is missing from the data root, when it can be fetched."""
    from ..data.load import data_root as resolve

    root = resolve(data_root)
    if dataset == "omniglot" and not (root / "omniglot").is_dir():
        from ..data.fetch import fetch

        print(f"Omniglot not found under {root}; fetching it")
        root.mkdir(parents=True, exist_ok=True)
        fetch("omniglot", root)


def run_benchmark(preset: str, results: Path, data_root=None, runs_dir: Path = Path("runs"),
                  device: str = "cpu", precision: str | None = None, dry_run: bool = False,
                  progress: bool = True, executor: "Options | None" = None, command: str | None = None) -> None:
    """Run (or continue) a preset with an executor (`options.Options`; default: here, one run
    after another), then write its tables into `results` once every run has its records.

    `device` and `precision` override the preset's; precision is resolved for the device
    ("auto" -> bf16 where it runs natively) before finished runs are looked up. `command`: what
    made the tables, for results/README.md (default: the `oneshot benchmark` call of this preset)."""
    from .executors import execute
    from .options import Options, with_resources, workers
    from ..report.write import write_report
    from ..step import resolved

    header, studies = load_preset(preset)
    for dataset in sorted({c.dataset for st in studies for c in st.runs}):
        ensure_data(dataset, data_root)
    overrides = [f"device={device}"] + ([f"precision={precision}"] if precision else [])
    for st in studies:
        st.runs = [resolved(c.with_overrides(overrides)) for c in st.runs]
    print(f"benchmark preset {header['preset']}: {header.get('description', '')}".rstrip())
    executor = with_resources(executor or Options(), header.get("resources", {}))
    rates: dict = {}
    if any(st.tune for st in studies):  # searches first: the runs of a tuned configuration are its best trial's
        from .searches import open_stores, plan_searches, run_searches

        stores = {} if dry_run else open_stores(studies, results, executor.storage, executor.heartbeat)
        plan_searches(studies, results, lambda cfg: _rate(rates, cfg, data_root))
        if not dry_run:
            run_searches(studies, stores, results, runs_dir / header["preset"], data_root, executor)
    if any(st.tuned_in for st in studies):  # values another study's searches found
        from .searches import use_found

        use_found(studies, results)
    todo = plan(studies, results, data_root, rates, runs_dir / header["preset"])
    n = workers(executor, len(todo))
    wall = wall_time([t for *_, t in todo], n)
    print(f"executor {executor.executor}: {n} worker{'s' if n > 1 else ''} available, wall time about "
          f"{wall / 60:.0f} min" + (f" ({wall / 3600:.1f} h)" if wall >= 7200 else ""))
    if dry_run:
        return
    t0 = time.perf_counter()

    def note(trained: int, finished: bool, others: int = 0) -> None:
        """The benchmark's own record, rewritten after every run trained here, so an invocation
        that is stopped still says what it did; a call that trains nothing leaves it alone.
        `others`: runs another driver of the same preset finished meanwhile (kept when above 0)."""
        bench = {"preset": header["preset"], "preset_file": Path(header["path"]).name,
                 "preset_path": _shown_path(Path(header["path"])),
                 "description": header.get("description", ""),
                 "command": command or f"oneshot benchmark --preset {preset}",
                 "runs": [f"{st.name}/{c.name}/seed{c.seed}" for st in studies for c in st.runs],
                 "wall_time_s_this_invocation": round(time.perf_counter() - t0, 1),
                 "runs_trained_this_invocation": trained,
                 **({"runs_trained_by_other_drivers": others} if others else {}),
                 "invocation_finished": finished, **provenance(device)}
        write(benchmark_path(results, header["preset"]), bench)

    trained, others, failed = execute([(st, cfg) for st, cfg, _ in todo], executor, results,
                                      runs_dir / header["preset"], data_root, progress,
                                      on_run=lambda n: note(n, finished=False))
    if trained:
        note(trained, finished=True, others=others)
    if failed:
        raise OneshotError(f"{len(failed)} of {len(todo)} runs failed (their records are missing; run the same "
                           "command again to retry only those):" + "".join(f"\n  {n}: {r}" for n, r in failed))
    for path in write_report(results):
        print(f"wrote {path}")
    print(f"trained {trained} of {sum(len(st.runs) for st in studies)} runs"
          + (f" ({others} by other drivers meanwhile)" if others else ""))
