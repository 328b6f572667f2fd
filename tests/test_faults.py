"""Faults a cluster brings: corrupt checkpoints and records, two drivers on one study, a full disk."""

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

import tiny
from oneshot.study import benchmark as bm
from oneshot.study import runs
from oneshot.study import lock
from oneshot.report import plots
from oneshot import provenance
from oneshot import checkpoint
from oneshot import step as step_mod
from oneshot.rundir import RunDir
from oneshot.cli import main
from oneshot.config import Config
from oneshot.errors import OneshotError
from oneshot.train import train

TINY = tiny.BASE  # a config of 4 steps


def write_preset(path, runs=tiny.RUNS) -> str:
    """Study "f" of two-step runs (contrastive-m0.5 and proto unless `runs` says otherwise)."""
    return tiny.write_preset(path, tiny.study("f", base={"steps": 2}, runs=runs), description="two runs")


pytestmark = pytest.mark.usefixtures("one_thread")


def counting_steps(monkeypatch) -> list:
    """Count the training steps taken from now on."""
    steps, real = [], step_mod.batch_loss
    monkeypatch.setattr(step_mod, "batch_loss", lambda *a: (steps.append(1), real(*a))[1])
    return steps


def same_weights(a, b) -> bool:
    a, b = (torch.load(p, weights_only=False)["model"] for p in (a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# 1. Corrupt checkpoints

def test_a_half_last_pt_is_set_aside_and_the_run_restarts_from_step_0(small_omniglot, tmp_path, monkeypatch, capsys):
    fresh = train(Config(**TINY), tmp_path / "fresh", small_omniglot, progress=False).run_dir
    real_curve = RunDir.write_curve
    monkeypatch.setattr(RunDir, "write_curve", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed right after the checkpoints of step 2
        train(Config(**TINY), tmp_path / "cut", small_omniglot, progress=False)
    monkeypatch.setattr(RunDir, "write_curve", real_curve)
    last = tmp_path / "cut" / "last.pt"
    cut_in_half(last)
    half = last.read_bytes()
    capsys.readouterr()
    steps = counting_steps(monkeypatch)
    train(Config(**TINY), tmp_path / "cut", small_omniglot, progress=False)
    err = capsys.readouterr().err
    assert f"{last} is unreadable" in err and "moved it to last.pt.corrupt" in err and len(err.splitlines()) == 1
    assert (tmp_path / "cut" / "last.pt.corrupt").read_bytes() == half  # kept, not deleted
    assert len(steps) == 4  # from step 0
    assert same_weights(fresh / "best.pt", tmp_path / "cut" / "best.pt")


def test_a_corrupt_best_pt_makes_a_finished_run_train_again(small_omniglot, tmp_path, monkeypatch, capsys):
    out = train(Config(**TINY), tmp_path / "r", small_omniglot, progress=False).run_dir
    (tmp_path / "fresh.pt").write_bytes((out / "best.pt").read_bytes())
    cut_in_half(out / "best.pt")
    capsys.readouterr()
    steps = counting_steps(monkeypatch)
    train(Config(**TINY), out, small_omniglot, progress=False)
    err = capsys.readouterr().err
    assert f"{out / 'best.pt'} is unreadable" in err and "best.pt.corrupt" in err
    assert (out / "best.pt.corrupt").exists() and len(steps) == 4
    assert same_weights(tmp_path / "fresh.pt", out / "best.pt")
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_eval_of_a_corrupt_best_pt_is_one_line_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(run / "best.pt", {"model": {"w": torch.zeros(100, 100)}, "config": {}})
    cut_in_half(run / "best.pt")
    assert main(["eval", "--encoder", str(run), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oneshot: error: ") and len(err.splitlines()) == 1
    assert str(run / "best.pt") in err and "unreadable" in err


# 2. Corrupt records

def test_a_truncated_record_stops_the_tables_and_is_listed_by_the_benchmark(small_omniglot, tmp_path, capsys):
    preset = write_preset(tmp_path / "f.toml")
    results = tmp_path / "results"

    def bench(**kw):
        bm.run_benchmark(preset, results, small_omniglot, runs_dir=tmp_path / "runs", progress=False, **kw)

    bench()
    record = next(results.glob("records/f/proto/seed0/*.json"))
    cut_in_half(record)
    for p in (results / "f").iterdir():
        p.unlink()
    capsys.readouterr()
    assert main(["table", str(results)]) == 2
    err = capsys.readouterr().err
    assert str(record) in err and "oneshot benchmark" in err and "delete" in err
    assert list((results / "f").iterdir()) == []  # no table from an incomplete set

    bench(dry_run=True)
    out = capsys.readouterr().out
    assert "plan: 1 of 2 runs" in out and "1 invalid record" in out and str(record) in out
    bench()
    assert "trained 1 of 2 runs" in capsys.readouterr().out
    assert json.loads(record.read_text())["run"] == "proto"
    assert main(["table", str(results)]) == 0


# 3. Two drivers, one study

DRIVER = """
import os, sys, time
from oneshot.data import omniglot
omniglot.SETS = {"images_background": (6, 2), "images_evaluation": (4, 2)}
omniglot.VINYALS_SPLITS = {"train": 24, "val": 4, "test": 12, "trainval": 28}
from oneshot.cli import main
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists(sys.argv[2]):  # both drivers start together
    time.sleep(0.02)
sys.exit(main(sys.argv[3:]))
"""


def test_two_drivers_train_each_run_once(small_omniglot, tmp_path):
    preset = write_preset(tmp_path / "two.toml", [tiny.contrastive(0.5), tiny.contrastive(1.0), tiny.PROTO])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    args = ["benchmark", "--preset", preset, "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--data-root", str(small_omniglot)]
    drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / f"d{k}"), str(go), *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for k in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"d{k}.ready").exists() for k in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    counts = []
    for out, _ in outs:
        last = [line for line in out.splitlines() if line.startswith("trained ")][-1]
        n, m = last.split()[1], last.split()[3]
        assert m == "3", last
        counts.append(int(n))
    # every run has its records, and the two drivers trained three runs in all: each once
    assert sum(counts) == 3, outs
    assert len(list((tmp_path / "results" / "records" / "f").glob("*/seed0/*.json"))) == 3
    assert not list((tmp_path / "runs").rglob(lock.LOCK_NAME))  # every claim given back
    # the benchmark's record (the last driver's) counts the other driver's runs too, and so does the README
    bench = json.loads((tmp_path / "results" / "records" / "benchmark-two.json").read_text())
    mine, others = bench["runs_trained_this_invocation"], bench.get("runs_trained_by_other_drivers", 0)
    assert mine + others == 3 and mine in counts, bench
    line = next(x for x in (tmp_path / "results" / "README.md").read_text().splitlines() if x.startswith("- wall time"))
    assert f"{mine} of 3 runs trained" in line and (f"({others} more by other drivers" in line) == (others > 0), line


def test_a_lock_of_a_dead_process_is_taken_over_a_live_one_is_respected(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    note = run / lock.LOCK_NAME
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()

    note.write_text(json.dumps({"host": host, "pid": os.getppid(), "token": "x"}))  # alive
    assert lock.claim(run) is None
    note.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))  # alive: a fresh heartbeat
    assert lock.claim(run) is None
    assert "elsewhere:1, heartbeat 0 s ago" == lock.holder(run)

    old = time.time() - 2 * lock.STALE_S  # a node that died: no heartbeat for long
    os.utime(note, (old, old))
    with lock.claim(run) as claimed:
        assert claimed is not None
    assert "taking over" in capsys.readouterr().err and not note.exists()

    note.write_text(json.dumps({"host": host, "pid": dead.pid, "token": "x"}))  # a dead process here
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    claimed = lock.claim(run)
    err = capsys.readouterr().err
    assert claimed is not None and f"{host}:{dead.pid}" in err and "no longer runs" in err
    assert json.loads(note.read_text())["pid"] == os.getpid()
    os.utime(note, (old, old))
    time.sleep(0.3)
    assert time.time() - note.stat().st_mtime < 5  # the heartbeat
    assert lock.claim(run) is None  # held by this claim
    claimed.release()
    assert not note.exists()


def test_run_one_skips_a_run_held_by_another_driver(tmp_path):
    from oneshot.scoring import EvalSpec
    from oneshot.study.presets import Study

    st = Study(name="s", runs=[], eval=EvalSpec.from_dict({"settings": [[5, 1, 15]]}, "vinyals"))
    cfg = Config(name="c")
    run = tmp_path / "runs" / "s" / "c" / "seed0"
    run.mkdir(parents=True)
    (run / lock.LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "token": "x"}))
    assert runs.run_one(st, cfg, tmp_path / "results", tmp_path / "runs") == "held"


# 4. A full disk

@pytest.fixture
def full_disk(monkeypatch):
    """Every write through `provenance.atomic_write` to a file named like `match` fails half way."""
    def install(match=""):
        real = provenance._write_file

        def write(path, data):
            if match not in path.name:
                return real(path, data)
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(provenance, "_write_file", write)
    return install


def _fails_cleanly(write, path, old: bytes):
    path.write_bytes(old)
    with pytest.raises(OneshotError) as e:
        write()
    assert str(e.value) == f"cannot write {path}: [Errno 28] No space left on device"
    assert path.read_bytes() == old and [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_full_disk_leaves_no_partial_file(tmp_path, full_disk):
    full_disk()
    for name, write in [
        ("record.json", lambda p: provenance.atomic_write_text(p, '{"new": 1}')),
        ("last.pt", lambda p: checkpoint.save(p, {"model": {"w": torch.ones(50)}})),
        ("plot.png", lambda p: plots._savefig(plots._pyplot().subplots()[0], p)),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        _fails_cleanly(lambda: write(folder / name), folder / name, b"old content")


def test_a_full_disk_during_training_is_one_line(small_omniglot, tmp_path, full_disk, capsys):
    full_disk(".pt")
    out = tmp_path / "r"
    args = ["train", "--data-root", str(small_omniglot), "--out", str(out)]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()  # the progress bars, then the error
    assert err[-1] == f"oneshot: error: cannot write {out / 'best.pt'}: [Errno 28] No space left on device"
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.suffix == ".pt"]
