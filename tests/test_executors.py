"""The executors against the real engines: a local Ray cluster and a single-node Slurm
(`.ci/slurm-up.sh`, started by `.ci/run`). Each must give the local executor's records."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

import conftest
import tiny

from oneshot.study import benchmark as bm
from oneshot.study import lock
from oneshot.errors import OneshotError
from oneshot.study.benchmark import wall_time
from oneshot.study.executors import job
from oneshot.study.options import Options

pytestmark = pytest.mark.slow

# Long enough (a few seconds per run on one thread) to kill a worker after its first checkpoint.
STUDY = tiny.study("x", base={"steps": 160, "val_every": 20},
                   eval={"episodes": 20, "distances": ["euclidean", "cosine"]})


def write_preset(path: Path, **header) -> str:
    """Study "x" (contrastive-m0.5 and proto) at `path`, with the preset's top-level keys `header`."""
    return tiny.write_preset(path, STUDY, description="two runs", **header)


@pytest.fixture
def study(small_omniglot, tmp_path, monkeypatch):
    """(preset path, data root); worker processes see the tiny dataset and one thread each."""
    monkeypatch.setenv("PYTHONPATH", tiny.worker_pythonpath(tmp_path / "site"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield write_preset(tmp_path / "x.toml"), small_omniglot
    torch.set_num_threads(n)


def bench(preset, root, out: Path, opts=None):
    bm.run_benchmark(preset, out / "results", root, runs_dir=out / "runs", progress=False, executor=opts)


def scores(results: Path) -> dict:
    """Every record's per-episode accuracies and summary, by path."""
    recs = {p.relative_to(results).as_posix(): json.loads(p.read_text())
            for p in sorted((results / "records").glob("*/*/seed*/*.json"))}
    out = {k: (r["per_episode"], r["mean"], r["ci95"], r["train"]["best_val_acc"]) for k, r in recs.items()}
    for p in sorted((results / "records").glob("*/*/seed*/verification/*.json")):
        out[p.relative_to(results).as_posix()] = json.loads(p.read_text())["scores"]
    return out


@pytest.fixture
def local_scores(study, tmp_path):
    preset, root = study
    bench(preset, root, tmp_path / "local")
    s = scores(tmp_path / "local" / "results")
    assert len(s) == 6  # 2 runs x (2 distances + verification)
    return s


def test_wall_time_fills_the_least_loaded_worker():
    assert wall_time([3, 3, 2, 2], 2) == 5 and wall_time([4, 1, 1, 1, 1], 2) == 4
    assert wall_time([5, 1], 4) == 5 and wall_time([], 2) == 0


def test_a_worker_that_cannot_see_the_results_folder_fails_clearly(tmp_path):
    with pytest.raises(OneshotError, match="storage every node sees"):
        job(None, None, tmp_path / "results", tmp_path / "runs", None, "not-the-drivers-note", 1)


def test_dry_run_names_workers_and_wall_time(study, tmp_path, capsys):
    preset, root = study
    bm.run_benchmark(preset, tmp_path / "r", root, runs_dir=tmp_path / "runs", dry_run=True,
                     executor=Options(executor="ray", workers=2))
    out = capsys.readouterr().out
    assert "plan: 2 of 2 runs to do" in out and "executor ray: 2 workers available, wall time about" in out
    assert re.search(r"about \d+ min = \d+\.\d device-hours \(rates measured here: \d+ img/s\)", out)
    assert not (tmp_path / "runs").exists()


def test_the_plan_runs_every_configuration_at_a_seed_before_the_next_seed(study, tmp_path, capsys):
    _, root = study
    two_seeds = write_preset(tmp_path / "s.toml", seeds=[0, 1])
    bm.run_benchmark(two_seeds, tmp_path / "r", root, runs_dir=tmp_path / "runs", dry_run=True)
    lines = re.findall(r"^  x/(\S+) seed (\d):", capsys.readouterr().out, re.M)
    assert lines == [("contrastive-m0.5", "0"), ("proto", "0"), ("contrastive-m0.5", "1"), ("proto", "1")]


def test_resources_per_run_come_from_the_flags_else_the_preset_else_defaults():
    from oneshot.study.options import with_resources

    assert (with_resources(Options(executor="ray"), {}).cpus, with_resources(Options(), {}).gpus) == (1, 0)
    assert with_resources(Options(), {}).cpus is None  # local: PyTorch's own threads (all cores)
    assert with_resources(Options(), {"cpus": 1}).cpus == 1
    from_preset = with_resources(Options(executor="ray"), {"cpus": 4, "gpus": 0.5})
    assert (from_preset.cpus, from_preset.gpus) == (4, 0.5)
    flags = with_resources(Options(executor="ray", cpus=2, gpus=1), {"cpus": 4, "gpus": 0.5})
    assert (flags.cpus, flags.gpus) == (2, 1)
    with pytest.raises(OneshotError, match="takes cpus and gpus"):
        with_resources(Options(), {"memory": 4})
    with pytest.raises(OneshotError, match="whole number"):
        with_resources(Options(), {"cpus": 0})


@pytest.mark.parametrize("resources, flags, ok", [
    ({"gpus": 0.5}, {}, True), ({}, {"gpus": 0.5}, True),  # a fraction shares a GPU, from a preset or a flag
    ({"gpus": -1}, {}, False), ({}, {"gpus": -1}, False),
    ({"cpus": 1.5}, {}, False), ({}, {"cpus": 0}, False),
])
def test_resources_follow_one_rule_from_presets_and_flags(tmp_path, resources, flags, ok):
    from oneshot.study.options import with_resources
    from oneshot.study.presets import load_preset

    path = write_preset(tmp_path / "r.toml", **({"resources": resources} if resources else {}))

    def use():
        header, _ = load_preset(path)
        return with_resources(Options(executor="ray", **flags), header.get("resources", {}))

    if ok:
        assert use().gpus == 0.5
    else:
        with pytest.raises(OneshotError, match="cpus must be a whole number >= 1|gpus must be a number >= 0"):
            use()


def test_a_presets_resources_set_the_workers_of_the_plan(study, tmp_path, capsys):
    _, root = study
    two_cpus = write_preset(tmp_path / "r.toml", resources={"cpus": 2})
    bm.run_benchmark(two_cpus, tmp_path / "r", root, runs_dir=tmp_path / "runs", dry_run=True,
                     executor=Options(executor="ray"))
    n = max(1, (os.cpu_count() or 1) // 2)
    assert f"executor ray: {n} worker{'s' if n > 1 else ''} available" in capsys.readouterr().out


def test_the_local_executor_trains_and_scores_with_the_threads_per_run_it_is_given(study, tmp_path):
    preset, root = study
    torch.set_num_threads(2)
    bench(preset, root, tmp_path / "one", Options(executor="local", cpus=1))
    assert torch.get_num_threads() == 2  # given back afterwards
    recs = [json.loads(p.read_text()) for p in (tmp_path / "one" / "results" / "records").glob("*/*/seed*/*.json")]
    assert recs and {r["train"]["device"].split(", ")[1] for r in recs} == {"1 threads)"}
    assert {r["eval"]["device"].split(", ")[1] for r in recs} == {"1 threads)"}


# Ray: a real single-node cluster started by the executor, on loopback

def kill_first_worker_after_a_checkpoint(runs: Path, killed: list) -> None:
    """SIGKILL the process holding the first run that has written a checkpoint (a Ray worker)."""
    deadline = time.time() + 240
    while time.time() < deadline and not killed:
        for last in runs.rglob("last.pt"):
            try:
                pid = json.loads((last.parent / lock.LOCK_NAME).read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def test_ray_gives_the_local_records_and_retries_a_killed_worker(study, local_scores, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (make install installs it)")
    preset, root = study
    out = tmp_path / "ray"
    killed: list = []
    killer = threading.Thread(target=kill_first_worker_after_a_checkpoint, args=(out / "runs", killed))
    killer.start()
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    bench(preset, root, out, Options(executor="ray", workers=2, cpus=1, max_retries=2))
    killer.join()
    # the loopback-only setting was for the Ray started here, not for what runs after it
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    assert killed, "no worker was killed: the runs finished before a checkpoint was seen"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    text = capsys.readouterr()
    assert "finished x/contrastive-m0.5 seed 0" in text.err + text.out
    assert scores(out / "results") == local_scores
    assert (out / "results" / "x" / "main-vinyals.md").is_file()


# The smoke preset on the real Omniglot: every executor gives the local executor's records

@pytest.fixture(scope="module")
def one_thread_workers():
    """One thread here and in every worker process (Ray's, Slurm's), so the numbers are comparable."""
    n, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(n)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="module")
def smoke_local(real_root, one_thread_workers, tmp_path_factory):
    """The smoke preset's records from the local executor: (data root, scores)."""
    out = tmp_path_factory.mktemp("smoke-local")
    bench("smoke", real_root, out)
    return real_root, scores(out / "results")


def test_ray_runs_the_smoke_preset_to_the_local_records(smoke_local, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (make install installs it)")
    root, local = smoke_local
    bench("smoke", root, tmp_path, Options(executor="ray", workers=2, cpus=1))
    assert len(local) > 20 and scores(tmp_path / "results") == local


# Ray: a real two-node cluster, one node per network namespace joined by a veth pair (DESIGN)

NETNS = ("oneshotA", "oneshotB")


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@pytest.fixture
def two_node_ray(tmp_path):
    """The head in namespace A (10.201.0.1), a second node in B (10.201.0.2); one CPU each.
    Yields (address, env for a driver run inside A); stops every process of A and B by pid."""
    ray_bin = shutil.which("ray", path=os.path.dirname(os.sys.executable))
    if ray_bin is None or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("the two-node Ray needs ray, iproute2 and root (network namespaces)")
    a, b = NETNS
    for ns in NETNS:
        sh("ip", "netns", "del", ns, check=False)
    try:
        for cmd in (["netns", "add", a], ["netns", "add", b], ["link", "add", "osva", "type", "veth", "peer", "name", "osvb"],
                    ["link", "set", "osva", "netns", a], ["link", "set", "osvb", "netns", b],
                    ["-n", a, "addr", "add", "10.201.0.1/24", "dev", "osva"],
                    ["-n", b, "addr", "add", "10.201.0.2/24", "dev", "osvb"],
                    ["-n", a, "link", "set", "osva", "up"], ["-n", b, "link", "set", "osvb", "up"],
                    ["-n", a, "link", "set", "lo", "up"], ["-n", b, "link", "set", "lo", "up"]):
            sh("ip", *cmd)
        ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live here
        # a multi-node Ray: nothing of a single-node one (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, an address)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex, "RAY_TMPDIR": ray_tmp})
        start = [ray_bin, "start", "--num-cpus=1", "--disable-usage-stats"]
        for ns, args in ((a, ["--head", "--node-ip-address=10.201.0.1", "--port=6390", "--include-dashboard=false"]),
                         (b, ["--address=10.201.0.1:6390", "--node-ip-address=10.201.0.2"])):
            done = subprocess.run(["ip", "netns", "exec", ns, *start, *args], env=env, capture_output=True,
                                  text=True, timeout=180)
            assert done.returncode == 0, f"ray start in {ns} failed:\n{done.stdout}\n{done.stderr}"
        yield "10.201.0.1:6390", env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for ns in NETNS:
                for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), sig)
                    except ProcessLookupError:
                        pass
            time.sleep(2)
        for ns in NETNS:
            sh("ip", "netns", "del", ns, check=False)
        if "ray_tmp" in locals():
            shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_two_node_ray_runs_the_smoke_preset_to_the_local_records(smoke_local, two_node_ray, tmp_path):
    root, local = smoke_local
    address, env = two_node_ray
    out = tmp_path / "ray2"
    driver = subprocess.run(
        ["ip", "netns", "exec", NETNS[0], os.sys.executable, "-m", "oneshot.cli", "benchmark", "--preset", "smoke",
         "--results", str(out / "results"), "--runs", str(out / "runs"), "--data-root", str(root),
         "--executor", "ray", "--ray-address", address, "--cpus", "1"],
        env=env, capture_output=True, text=True, timeout=500)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    assert "executor ray: 2 workers available" in driver.stdout
    assert scores(out / "results") == local
    # Ray's token went to the tests' home folder, not to the home of whoever runs the tests
    assert conftest.home_files(conftest.REAL_HOME) == conftest.HOME_BEFORE


# Slurm: a real single-node Slurm (.ci/slurm-up.sh)

LOCAL_SLURM = "ClusterName=oneshot-ci"  # what .ci/slurm-up.sh writes into its slurm.conf
START_SLURM = ("start one with: export SLURM_CONF=\"$(.ci/slurm-up.sh)/slurm.conf\" "
               "(stop it with .ci/slurm-down.sh \"$(dirname \"$SLURM_CONF\")\")")


def local_slurm_partition(env: dict) -> tuple[str | None, str]:
    """(partition, "") of the local Slurm that `env`'s SLURM_CONF points at (.ci/slurm-up.sh's), or
    (None, why not). Only that Slurm is used: on a real cluster's login node `sinfo` answers with its
    real partitions, which the tests must never submit to."""
    conf = env.get("SLURM_CONF")
    if shutil.which("sinfo") is None:
        return None, f"Slurm is not installed (no sinfo); {START_SLURM}"
    if not conf or not Path(conf).is_file() or LOCAL_SLURM not in Path(conf).read_text():
        return None, f"SLURM_CONF does not point at a local test Slurm ({conf or 'unset'}); {START_SLURM}"
    parts = re.findall(r"^PartitionName=(\S+)", Path(conf).read_text(), re.M)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SLURM_CONF": conf})
    except subprocess.TimeoutExpired:
        return None, f"no Slurm controller answers for {conf} (sinfo timed out); {START_SLURM}"
    if out.returncode != 0 or not out.stdout.strip():
        return None, f"no Slurm controller answers for {conf} ({out.stderr.strip()}); {START_SLURM}"
    return parts[0], ""


@pytest.fixture
def slurm_partition() -> str:
    """The local Slurm's partition. Outside CI a missing one skips (saying how to start it); in CI
    (.ci/run starts it) it must be there, so a broken start fails instead of skipping."""
    pytest.importorskip("submitit", reason="submitit is not installed (make install installs it)")
    partition, why = local_slurm_partition(dict(os.environ))
    if partition is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the local Slurm that .ci/run starts: {why}")
        pytest.skip(why)
    return partition


def test_only_a_local_slurm_that_answers_is_used(tmp_path):
    if shutil.which("sinfo") is None:
        assert local_slurm_partition({})[0] is None
        return
    assert "SLURM_CONF does not point at a local test Slurm (unset)" in local_slurm_partition({})[1]
    real = tmp_path / "cluster.conf"  # a real cluster's configuration: never used
    real.write_text("ClusterName=bigcluster\nSlurmctldHost=login1\nPartitionName=gpu Nodes=n1\n")
    assert "does not point at a local test Slurm" in local_slurm_partition({"SLURM_CONF": str(real)})[1]
    dead = tmp_path / "slurm.conf"  # a local one whose controller is not running
    dead.write_text(f"{LOCAL_SLURM}\nSlurmctldHost=localhost\nSlurmctldPort=6999\nAuthType=auth/munge\n"
                    "NodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost\nMessageTimeout=2\n")
    partition, why = local_slurm_partition({"SLURM_CONF": str(dead)})
    assert partition is None and "no Slurm controller answers" in why and ".ci/slurm-up.sh" in why


def cancel_second_task(name: str, cancelled: list) -> None:
    """scancel the second task of the study's job array while it waits for the first."""
    deadline = time.time() + 120
    while time.time() < deadline:
        ids = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i"], capture_output=True,
                             text=True).stdout.split()
        second = [i for i in ids if i.endswith("_1")]
        if second:
            subprocess.run(["scancel", second[0]], check=True)
            cancelled.append(second[0])
            return
        time.sleep(0.1)


def test_slurm_gives_the_local_records_and_resubmits_only_a_cancelled_run(study, local_scores, slurm_partition,
                                                                          tmp_path, capsys):
    preset, root = study
    out = tmp_path / "slurm"
    opts = Options(executor="slurm", slurm_partition=slurm_partition, slurm_time=10, slurm_parallelism=1)
    cancelled: list = []
    canceller = threading.Thread(target=cancel_second_task, args=("oneshot-x", cancelled))
    canceller.start()
    with pytest.raises(OneshotError, match=r"(?s)1 of 2 runs failed.*x/proto seed 0.*left the queue without a result"):
        bench(preset, root, out, opts)
    canceller.join()
    assert cancelled
    first = capsys.readouterr().out
    assert "submitted x: 2 runs as Slurm job array" in first and "finished x/contrastive-m0.5 seed 0" in first
    logs = list((out / "results" / "slurm-logs" / "x").glob("*/*_log.out"))
    assert logs, "no per-run logs under the results folder"
    bench(preset, root, out, opts)  # the re-run submits only the cancelled run
    again = capsys.readouterr().out
    assert "plan: 1 of 2 runs to do" in again and "submitted x: 1 run as Slurm job array" in again
    assert scores(out / "results") == local_scores


def stop_the_controller_while_a_job_runs(name: str, down_s: float, seen: list) -> None:
    """Stop the local Slurm's controller (by its pid file) once job `name` is queued, keep it down for
    `down_s` seconds (every `squeue` of the driver fails meanwhile), then start it again on its saved
    state. Records what squeue said while it was down in `seen`."""
    conf = Path(os.environ["SLURM_CONF"])
    pidfile = conf.parent / "slurmctld.pid"
    deadline = time.time() + 120
    while time.time() < deadline and not subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                                                        text=True).stdout.strip():
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        down = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=120)
        seen.append(down.returncode)
        time.sleep(down_s)
    finally:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True)


def test_the_slurm_driver_waits_through_a_controller_that_stops_answering(study, local_scores, slurm_partition,
                                                                        tmp_path, capsys):
    preset, root = study
    seen: list = []
    stopper = threading.Thread(target=stop_the_controller_while_a_job_runs, args=("oneshot-x", 8.0, seen))
    stopper.start()
    try:
        bench(preset, root, tmp_path, Options(executor="slurm", slurm_partition=slurm_partition, slurm_time=10,
                                              cpus=1))
    finally:
        stopper.join()
    assert seen and seen[0] != 0  # squeue did fail while the controller was down
    out = capsys.readouterr().out
    assert "failed" not in out and "finished x/proto seed 0" in out
    assert scores(tmp_path / "results") == local_scores


def test_slurm_runs_the_smoke_preset_to_the_local_records(smoke_local, slurm_partition, tmp_path):
    root, local = smoke_local
    bench("smoke", root, tmp_path, Options(executor="slurm", slurm_partition=slurm_partition, slurm_time=10,
                                           cpus=1))
    assert scores(tmp_path / "results") == local
