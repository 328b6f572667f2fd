"""A search against a real PostgreSQL (Debian's package, started here as the unprivileged
`postgres` user on a unix socket in a temporary folder, stopped by pid): two drivers take trials
of one search at once, one is killed mid-trial, and the search still ends with its planned
trials finished and none left RUNNING."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import tiny

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

PLANNED = 4
STUDY = tiny.study("pg", base={"steps": 16, "val_every": 8}, runs=[tiny.PROTO],
                   tune={"trials": PLANNED, "steps": 150, "validations": 5, "startup_trials": 2,
                         "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})


def _initdb() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql "
                    "(.ci/run installs it when missing)")
    return Path(found[-1])


@pytest.fixture
def postgres():
    """A PostgreSQL of this test's own -> its SQLAlchemy URL (unix socket only, no TCP)."""
    bin_dir = _initdb().parent
    folder = Path(tempfile.mkdtemp(prefix="oneshot-pg-"))
    data, sock = folder / "data", folder / "sock"
    sock.mkdir()
    for p in (folder, sock):
        shutil.chown(p, "postgres", "postgres")

    def as_postgres(*cmd):
        return ["runuser", "-u", "postgres", "--", *map(str, cmd)]

    server = None
    try:
        subprocess.run(as_postgres(bin_dir / "initdb", "-D", data, "--auth=trust", "-U", "postgres", "--no-sync"),
                       check=True, capture_output=True, cwd=folder)
        log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed with the server
        server = subprocess.Popen(as_postgres(bin_dir / "postgres", "-D", data, "-k", sock, "-c", "listen_addresses=",
                                              "-c", "fsync=off"), stdout=log, stderr=log, cwd=folder)
        deadline = time.time() + 60
        while subprocess.run(as_postgres(bin_dir / "pg_isready", "-q", "-h", sock), cwd=folder).returncode != 0:
            assert time.time() < deadline and server.poll() is None, (folder / "server.log").read_text()
            time.sleep(0.3)
        subprocess.run(as_postgres(bin_dir / "createdb", "-h", sock, "-U", "postgres", "oneshot"), check=True,
                       cwd=folder)
        yield f"postgresql+psycopg://postgres@/oneshot?host={sock}"
    finally:
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # fast shutdown, by the postmaster's pid
        if server is not None:
            server.wait(timeout=120)
            log.close()
        shutil.rmtree(folder)


def _driver(preset: str, root: Path, out: Path, storage: str, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "oneshot.cli", "benchmark", "--preset", preset, "--results", str(out / "results"),
           "--runs", str(out / "runs"), "--data-root", str(root), "--storage", storage, "--heartbeat", "1"]
    log = open(out / f"driver-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _running_trial_of(storage: str, pid: int):
    """A RUNNING trial of the driver `pid` that has reported a validation point (None: none yet)."""
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{pid}") and t.intermediate_values:
                return t
    return None


def test_two_drivers_share_a_postgres_search_and_survive_a_killed_one(postgres, small_omniglot, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": tiny.worker_pythonpath(tmp_path / "site")}
    preset = tiny.write_preset(tmp_path / "pg.toml", STUDY)
    out = tmp_path / "out"
    out.mkdir()
    first, second = _driver(preset, small_omniglot, out, postgres, env), _driver(preset, small_omniglot, out, postgres, env)
    try:
        deadline, killed = time.time() + 300, None
        while killed is None:
            assert time.time() < deadline and first.poll() is None, "the first driver never ran a trial"
            killed = _running_trial_of(postgres, first.pid)
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        assert second.wait(timeout=600) == 0, [p.read_text()[-2000:] for p in out.glob("driver-*.log")]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
                p.wait()
    (name,) = optuna.study.get_all_study_names(postgres)
    trials = optuna.load_study(study_name=name, storage=postgres).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == PLANNED, states
    assert "RUNNING" not in states and "WAITING" not in states, states
    dead = trials[killed.number]
    assert dead.state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state.name in ("COMPLETE", "PRUNED")
    assert (out / "results" / "records" / "pg" / "tune" / "proto.json").is_file()
    assert list((out / "results" / "records" / "pg" / "proto" / "seed0").glob("*.json"))
