"""Where the runs of a study execute: here, one after another (`local`), as Ray tasks (`ray`), or
as one Slurm job array per study through submitit (`slurm`).

Every executor runs the same job, `runs.run_one`, once per run: it trains (resuming from the
run's last checkpoint), scores, and writes that run's records atomically. The results and run
folders must therefore be storage every worker sees; a worker first checks that it sees the
driver's note in both (`check_shared`) and fails the run with a clear message otherwise.
`execute` returns (runs trained, runs finished meanwhile by others, failed runs with a reason).
Ray and submitit are optional extras, imported only when their executor is chosen.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from . import lock
from ..errors import OneshotError
from .options import EXECUTORS, Options
from .runs import WAIT_S, run_one, run_path

POLL_S = 2.0  # how often the driver looks at Slurm jobs
NOTE_DIR = ".oneshot-drivers"


def job(st, cfg, results: Path, runs_dir: Path, data_root, note: str, threads: int | None) -> str:
    """One run on a worker: check the shared folders, then `run_one`, waiting while a live driver
    holds the run. Returns "trained" or "done" (finished meanwhile by another driver)."""
    import torch

    for folder in (results, runs_dir):
        check_shared(Path(folder), note)
    if threads:
        torch.set_num_threads(threads)
    while (status := run_one(st, cfg, Path(results), Path(runs_dir), data_root, progress=False)) == "held":
        time.sleep(WAIT_S)
    return status


def check_shared(folder: Path, note: str) -> None:
    """Refuse to work on a folder where this worker does not see the driver's note `note`."""
    if not (folder / NOTE_DIR / note).is_file():
        raise OneshotError(f"{folder} is not the driver's folder as seen from {socket.gethostname()}: the results "
                           "and run folders must be on storage every node sees (e.g. NFS) at the same path")


def execute(todo: list, opts: Options, results: Path, runs_dir: Path, data_root,
            progress: bool, on_run=None, task=job) -> tuple[int, int, list[tuple[str, str]]]:
    """Run `todo` ((study, config) pairs) with the chosen executor; `on_run(trained)` is called
    after every run trained here, with the count so far. On Ray and Slurm each pair is one call
    of `task` (`job`'s arguments; a tuning search gives its worker, `oneshot.study.searches.worker_task`)."""
    if opts.executor == "local":
        import torch

        threads = torch.get_num_threads()
        if opts.cpus:  # threads per run, as on Ray and Slurm
            torch.set_num_threads(opts.cpus)
        try:
            trained, others = _local(todo, results, runs_dir, data_root, progress, on_run)
        finally:
            torch.set_num_threads(threads)
        return trained, others, []
    if opts.executor not in EXECUTORS:
        raise OneshotError(f"unknown executor {opts.executor!r}; choose one of {', '.join(EXECUTORS)}")
    note = uuid.uuid4().hex
    notes = [Path(f) / NOTE_DIR / note for f in (results, runs_dir)]
    for p in notes:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    try:
        run = _ray if opts.executor == "ray" else _slurm
        return run(todo, opts, results, runs_dir, data_root, note, on_run, task)
    finally:
        for p in notes:
            p.unlink(missing_ok=True)


def _local(todo: list, results: Path, runs_dir: Path, data_root, progress: bool,
           on_run=None) -> tuple[int, int]:
    """Run `todo` with `run_one`; runs held by other drivers are skipped, then waited for (and
    trained here when their holder gives them up or dies). Returns (trained here, by others);
    `on_run(trained)` after each run trained here."""
    counts = {"trained": 0, "done": 0, "held": 0}

    def attempt(st, cfg) -> str:
        status = run_one(st, cfg, results, runs_dir, data_root, progress)
        counts[status] += 1
        if status == "trained" and on_run is not None:
            on_run(counts["trained"])
        return status

    held = []
    for i, (st, cfg) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {st.name}/{cfg.name} seed {cfg.seed}", flush=True)
        status = attempt(st, cfg)
        if status == "held":
            held.append((st, cfg))
            who = lock.holder(run_path(runs_dir, st, cfg)) or "just given back"
            print(f"  held by another driver ({who}); skipped for now", flush=True)
        elif status == "done":
            print("  finished meanwhile by another driver", flush=True)
    if held:
        print(f"waiting for {len(held)} run{'s' if len(held) > 1 else ''} held by other drivers: "
              + ", ".join(f"{st.name}/{cfg.name} seed {cfg.seed}" for st, cfg in held), flush=True)
    while held:
        time.sleep(WAIT_S)
        held = [(st, cfg) for st, cfg in held if attempt(st, cfg) == "held"]
    return counts["trained"], counts["done"]


class _Follow:
    """The driver's view of submitted runs: a bar over runs and a line per finished or failed run."""

    def __init__(self, n: int, on_run=None):
        self.bar = tqdm(total=n, unit="run", desc="runs", dynamic_ncols=True)
        self.trained, self.others, self.failed = 0, 0, []
        self.on_run = on_run

    def finished(self, name: str, status: str) -> None:
        self.trained, self.others = self.trained + (status == "trained"), self.others + (status == "done")
        if status == "trained" and self.on_run is not None:
            self.on_run(self.trained)
        self.bar.write(f"finished {name}" + (" (by another driver)" if status == "done" else ""))
        self.bar.update()

    def failed_run(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        self.bar.write(f"FAILED {name}: {reason}")
        self.bar.update()

    def result(self):
        self.bar.close()
        return self.trained, self.others, self.failed


@contextlib.contextmanager
def _env(**values: str):
    """Environment variables set for the duration of the block (unless already set), then as before."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if before[k] is None})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)


def _name(st, cfg) -> str:
    return f"{st.name}/{cfg.name} seed {cfg.seed}"


def _ray(todo, opts: Options, results, runs_dir, data_root, note, on_run=None, task=job):
    try:
        import ray
    except ImportError:
        raise OneshotError("--executor ray needs Ray: pip install 'oneshot[ray]' (or make install)") from None
    if opts.ray_address:
        ray.init(address=opts.ray_address, logging_level="ERROR")
    else:  # a single-node Ray that stays on loopback
        n = opts.workers or max(1, (os.cpu_count() or 1) // opts.cpus)
        with _env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"):  # seen by the processes ray.init starts only
            ray.init(address="local", num_cpus=n * opts.cpus, include_dashboard=False, logging_level="ERROR")
    try:
        remote = ray.remote(num_cpus=opts.cpus, num_gpus=opts.gpus, max_retries=opts.max_retries)(task)
        refs = {remote.remote(st, cfg, results, runs_dir, data_root, note, opts.cpus): _name(st, cfg)
                for st, cfg in todo}
        follow = _Follow(len(refs), on_run)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                follow.finished(refs[ready[0]], ray.get(ready[0]))
            except ray.exceptions.RayError as e:
                follow.failed_run(refs[ready[0]], _ray_reason(e))
        return follow.result()
    finally:
        ray.shutdown()


def _ray_reason(e) -> str:
    cause = getattr(e, "cause", None)
    if isinstance(cause, OneshotError):
        return str(cause)
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def _slurm(todo, opts: Options, results, runs_dir, data_root, note, on_run=None, task=job):
    try:
        import submitit
    except ImportError:
        raise OneshotError("--executor slurm needs submitit: pip install 'oneshot[slurm]' (or make install)") from None
    if not opts.slurm_partition or not opts.slurm_time:
        raise OneshotError("--executor slurm needs --slurm-partition P and --slurm-time MINUTES")
    by_study = defaultdict(list)
    for st, cfg in todo:
        by_study[st.name].append((st, cfg))
    jobs = []
    for name, runs in by_study.items():  # one job array per study; logs per run under the results
        ex = submitit.AutoExecutor(folder=Path(results) / "slurm-logs" / name / "%j", cluster="slurm")
        ex.update_parameters(slurm_partition=opts.slurm_partition, timeout_min=opts.slurm_time,
                             cpus_per_task=opts.slurm_cpus or opts.cpus, slurm_job_name=f"oneshot-{name}",
                             **({"slurm_gpus_per_node": opts.slurm_gpus} if opts.slurm_gpus else {}),
                             **({"slurm_array_parallelism": opts.slurm_parallelism} if opts.slurm_parallelism
                                else {}))
        n = len(runs)
        submitted = ex.map_array(task, [st for st, _ in runs], [c for _, c in runs], [results] * n, [runs_dir] * n,
                                 [data_root] * n, [note] * n, [opts.slurm_cpus or opts.cpus] * n)
        jobs += [(j, _name(st, cfg)) for j, (st, cfg) in zip(submitted, runs)]
        print(f"submitted {name}: {n} run{'s' if n > 1 else ''} as Slurm job array {submitted[0].job_id.split('_')[0]}",
              flush=True)
    follow = _Follow(len(jobs), on_run)
    while jobs:
        queued = _squeue()
        still = []
        for j, name in jobs:
            if j.paths.result_pickle.exists():
                try:
                    follow.finished(name, j.result())
                except Exception as e:  # the job's own error, raised again here by submitit
                    follow.failed_run(name, f"{_last_line(e)} (log: {j.paths.stderr})")
            elif queued is not None and j.job_id not in queued:  # squeue failed: wait and ask again
                if j.paths.result_pickle.exists():
                    still.append((j, name))  # finished between the two looks
                else:
                    follow.failed_run(name, f"Slurm job {j.job_id} left the queue without a result (cancelled, "
                                            f"out of time, or its node died; log: {j.paths.stderr})")
            else:
                still.append((j, name))
        jobs = still
        if jobs:
            time.sleep(POLL_S)
    return follow.result()


def _squeue() -> set[str] | None:
    """Ids of the jobs Slurm still holds (array tasks as ARRAY_TASK); None when squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
