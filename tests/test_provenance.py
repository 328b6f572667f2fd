"""Provenance: a record says how it was made without this machine's paths."""

import json
import subprocess
from pathlib import Path

from oneshot.provenance import git_commit, portable, provenance

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_a_command_line_keeps_no_absolute_path(tmp_path):
    repo = tmp_path / "repo"
    args = [str(repo / "oneshot" / "cli.py"), "benchmark", "--results", str(repo / "results"),
            f"--runs={repo}/runs/x", "--preset", "/elsewhere/mine.toml", "--cpus", "1", str(repo)]
    assert portable(args, [repo]) == ["oneshot/cli.py", "benchmark", "--results", "results", "--runs=runs/x",
                                      "--preset", ".../mine.toml", "--cpus", "1", "."]
    assert not any(a.startswith("/") for a in provenance()["argv"])


def test_no_committed_record_holds_a_path_of_the_machine_that_made_it():
    found = []
    for path in sorted((RESULTS / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        for where in (r, r.get("train", {}), r.get("eval", {})):
            argv = where.get("argv", []) if isinstance(where, dict) else []
            if any(a.startswith("/") or "=/" in a for a in argv):
                found.append(path.relative_to(RESULTS).as_posix())
    assert found == [], f"{len(found)} records with absolute paths, e.g. {found[:3]}"


def test_a_commit_is_dirty_when_code_differs_not_when_results_do(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results" / "records").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "records" / "benchmark-p.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "results" / "records" / "benchmark-p.json").write_text('{"runs": 1}\n')  # the benchmark's own record
    (tmp_path / "new.py").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"
