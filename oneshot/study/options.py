"""How and where a benchmark's runs execute: the `oneshot benchmark` flags (`Options`), the
resources per run they and a preset's `[resources]` give, and how many runs can go at once."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..errors import OneshotError

EXECUTORS = ("local", "ray", "slurm")


def check_resources(cpus, gpus, where: str) -> None:
    """The one rule for resources per run, from flags and presets alike: cpus a whole number >= 1,
    gpus a number >= 0 (a fraction shares a GPU between runs on Ray)."""
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise OneshotError(f"{where}: cpus must be a whole number >= 1 (per run), got {cpus!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0:
        raise OneshotError(f"{where}: gpus must be a number >= 0 (per run; a fraction shares a GPU), got {gpus!r}")


@dataclass
class Options:
    """How and where runs execute (the `oneshot benchmark` flags)."""

    executor: str = "local"
    workers: int | None = None  # ray: runs at once on a Ray started here (default: cores // cpus)
    cpus: int | None = None  # threads (and Ray/Slurm CPUs) per run; None: the preset's, else 1 (local: all cores)
    gpus: float | None = None  # Ray GPUs per run; None: the preset's, else 0
    ray_address: str | None = None
    max_retries: int = 3  # ray: times a run whose worker died is started again
    slurm_partition: str | None = None
    slurm_time: int | None = None  # minutes per run
    slurm_gpus: int = 0
    slurm_cpus: int | None = None  # default: cpus
    slurm_parallelism: int | None = None
    storage: str | None = None  # tuning: Optuna's storage URL (default: a SQLite file under the results folder)
    heartbeat: int = 60  # tuning: seconds between a trial's heartbeats; stale after three missed


def with_resources(opts: Options, resources: dict) -> Options:
    """`opts` with the per-run cpus and gpus the flags left out taken from a preset's
    `[resources]` table (`cpus`, `gpus`), else 1 CPU and no GPU; the local executor's default
    cpus is None: PyTorch's own thread count (all cores)."""
    unknown = set(resources) - {"cpus", "gpus"}
    if unknown:
        raise OneshotError(f"[resources] of a preset takes cpus and gpus (per run), not {', '.join(sorted(unknown))}")
    if opts.heartbeat < 1:
        raise OneshotError(f"--heartbeat {opts.heartbeat}: seconds between heartbeats must be a whole number >= 1")
    if opts.workers is not None and opts.workers < 1:
        raise OneshotError(f"--workers {opts.workers}: runs at once must be a whole number >= 1")
    cpus = opts.cpus if opts.cpus is not None else resources.get("cpus", None if opts.executor == "local" else 1)
    gpus = opts.gpus if opts.gpus is not None else resources.get("gpus", 0)
    if cpus is None and opts.executor == "local":
        check_resources(1, gpus, "resources per run (--gpus or the preset's [resources])")
        return dataclasses.replace(opts, gpus=gpus)
    check_resources(cpus, gpus, "resources per run (--cpus, --gpus or the preset's [resources])")
    return dataclasses.replace(opts, cpus=cpus, gpus=gpus)


def workers(opts: Options, n_runs: int) -> int:
    """How many runs can go at once (for the plan's wall time); connects to a named Ray cluster."""
    if opts.executor == "ray":
        if opts.ray_address:
            import ray

            ray.init(address=opts.ray_address, logging_level="ERROR")
            try:
                return max(1, int(ray.cluster_resources().get("CPU", 1) // opts.cpus))
            finally:
                ray.shutdown()
        return opts.workers or max(1, (os.cpu_count() or 1) // opts.cpus)
    if opts.executor == "slurm":
        return min(n_runs, opts.slurm_parallelism or n_runs) or 1
    return 1
