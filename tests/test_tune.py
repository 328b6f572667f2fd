"""Tuning (`[study.tune]`): every bad table is one line and exit 2 before anything trains; a tiny
search runs end to end, resumes, gives the same trials for the same seed, and its runs are the
best trial's values, marked tuned in their records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tiny
from oneshot.cli import main
from test_executors import slurm_partition  # noqa: F401 - the local Slurm's partition (a fixture)
from oneshot.study import presets
from oneshot.study.tunespec import apply

SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}
TUNE = {"trials": 3, "steps": 12, "validations": 3, "startup_trials": 2, "space": SPACE,
        "runs": {"contrastive-m0.5": {"margin": {"low": 0.1, "high": 1.0}}}}


def tuned_study(name: str = "tt", **changes) -> dict:
    tune = {k: v for k, v in {**TUNE, **changes}.items() if v is not None}
    return tiny.study(name, base={"steps": 16, "val_every": 8}, tune=tune)


def refused(tmp_path, capsys, **changes) -> str:
    """The one line `oneshot benchmark --dry-run` prints for a preset whose tune table has `changes`."""
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study(**changes))
    code = main(["benchmark", "--preset", preset, "--dry-run", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    return err


@pytest.mark.parametrize("changes, says", [
    ({"tirals": 3}, "unknown key 'tirals'"),
    ({"space": {"lr": {"low": 1e-4, "hgh": 1e-2}}}, "unknown key hgh"),
    ({"space": {"lrr": {"low": 1e-4, "high": 1e-2}}}, "lrr: unknown key"),
    ({"runs": {"proto": {"margin": {"low": 0.1, "high": 1.0}}}}, "does not read 'loss_params.margin'"),
    ({"space": {"momentum": {"low": 0.5, "high": 0.9}}}, "does not read 'momentum'"),
    ({"space": {"steps": {"low": 10, "high": 20}}}, "steps is fixed"),
    ({"space": {"lr": {"low": 1e-2, "high": 1e-4}}}, "is inverted"),
    ({"space": {"lr": {"low": 1e-3, "high": 1e-3}}}, "is empty"),
    ({"space": {"weight_decay": {"low": 0, "high": 1e-3, "log": True}}}, "log range must lie above 0"),
    ({"space": {"augment": {"low": 0, "high": 1}}}, "augment takes str values"),
    ({"space": {"batch": {"choices": ["4x1", "4x4"]}}}, "batch_shots must be >= 2"),
    ({"space": {"lr": {"choices": []}}}, "choices must be a non-empty list"),
    ({"trials": 0}, "trials (per configuration) must be a whole number >= 1"),
    ({"runs": {"proto": {"trials": 0, "lr": {"low": 1e-4, "high": 1e-3}}}}, "runs.proto.trials"),
    ({"steps": None}, "give the budget of one trial"),
    ({"pruner": "mean"}, "pruner = 'mean'"),
    ({"runs": {"nope": {"lr": {"low": 1e-4, "high": 1e-3}}}}, "runs.nope is not a configuration"),
])
def test_a_bad_tune_table_is_one_line_and_exit_2(tmp_path, capsys, changes, says):
    assert says in refused(tmp_path, capsys, **changes)


def test_a_storage_that_does_not_answer_stops_before_any_trial(tmp_path, capsys, small_omniglot):
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study())
    code = main(["benchmark", "--preset", preset, "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs"),
                 "--data-root", str(small_omniglot), "--storage", "postgresql://nobody@127.0.0.1:9/none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not answer" in err, err
    assert not (tmp_path / "runs").exists() and not list((tmp_path / "r").rglob("*.json"))


def test_importing_oneshot_and_reading_a_tuned_preset_needs_no_optuna(tmp_path):
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study())
    code = (f"import sys; from oneshot.study.presets import load_preset; import oneshot.study.benchmark; "
            f"load_preset({preset!r}); assert 'optuna' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_search_value_goes_where_the_config_reads_it():
    _, (st,) = presets.load_preset("default")
    cfg = next(c for c in st.runs if c.loss == "triplet")
    tuned = apply(cfg, {"margin": 0.3, "lr": 0.002, "batch": "16x8", "augment": "affine"})
    assert (tuned.loss_params["margin"], tuned.lr, tuned.batch_classes, tuned.batch_shots, tuned.augment) == \
        (0.3, 0.002, 16, 8, "affine")


def _search(tmp_path, root, out: str):
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study())
    results = tmp_path / out / "results"
    code = main(["benchmark", "--preset", preset, "--results", str(results), "--runs", str(tmp_path / out / "runs"),
                 "--data-root", str(root)])
    assert code == 0
    return results


@pytest.mark.slow
def test_a_tiny_search_runs_resumes_and_repeats(small_omniglot, tmp_path, one_thread):
    results = _search(tmp_path, small_omniglot, "a")
    recs = {p.stem: json.loads(p.read_text()) for p in (results / "records" / "tt" / "tune").glob("*.json")}
    assert set(recs) == {"contrastive-m0.5", "proto"}
    for name, rec in recs.items():
        states = [t["state"] for t in rec["trials"]]
        assert rec["planned"] == 3 and len(states) == 3 and set(states) <= {"COMPLETE", "PRUNED"}
        assert all(t["curve"] and 0 <= t["curve"][-1][1] <= 1 and t["wall_s"] > 0 for t in rec["trials"])
        assert rec["search_wall_s"] == pytest.approx(sum(t["wall_s"] for t in rec["trials"]), abs=0.2)
        assert rec["commit"] and rec["versions"]["torch"] and rec["time"]
        best = max((t for t in rec["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
        assert rec["best"]["params"] == best["params"]
        score = json.loads(next((results / "records" / "tt" / name / "seed0").glob("*.json")).read_text())
        assert score["train"]["tuned"]["trials"] == 3 and score["train"]["tuned"]["params"] == best["params"]
        assert score["config"]["lr"] == best["params"]["lr"] and score["config"]["steps"] == 16
    assert set(recs["contrastive-m0.5"]["best"]["params"]) == {"lr", "margin"}
    # everything found: nothing searched or trained again, and neither Optuna nor the storage is needed
    argv = ["benchmark", "--preset", str(tmp_path / "t.toml"), "--results", str(results), "--runs",
            str(tmp_path / "a" / "runs"), "--data-root", str(small_omniglot)]
    code = f"import sys; sys.modules['optuna'] = None; from oneshot.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "PYTHONPATH": tiny.worker_pythonpath(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "search tt" not in out and "trained 0 of 2 runs" in out
    for f in (results / "tuning").glob("*"):  # the tables need the records only, never the storage
        f.unlink()
    assert main(["table", str(results)]) == 0
    table = (results / "tt" / "tuning-tt.md").read_text()
    for name, rec in recs.items():
        states = [t["state"] for t in rec["trials"]]
        assert (f"| {name} | 3 ({states.count('COMPLETE')} / {states.count('PRUNED')} / 0) | "
                f"{100 * rec['best']['value']:.2f} |") in table
    assert (results / "tt" / "tuning-tt.png").is_file()
    assert "(tuned, 3 trials)" in (results / "tt" / "main-vinyals.md").read_text()
    again = _search(tmp_path, small_omniglot, "b")  # the same seed, a new storage: the same trials
    for name, rec in recs.items():
        other = json.loads((again / "records" / "tt" / "tune" / f"{name}.json").read_text())
        assert [(t["params"], t["state"], t["value"]) for t in other["trials"]] == \
            [(t["params"], t["state"], t["value"]) for t in rec["trials"]]


def test_importances_come_from_the_record_alone_and_repeat():
    from oneshot.report.tuning import best_so_far, importances

    trials = [{"number": i, "state": "COMPLETE" if i != 3 else "PRUNED", "value": 0.5 + 0.3 * (i % 2) + 0.01 * i,
               "params": {"lr": 10 ** (-4 + i / 5), "batch": ["4x4", "8x2"][i % 2]}} for i in range(10)]
    rec = {"space": [{"key": "lr", "low": 1e-4, "high": 1e-2, "log": True}, {"key": "batch", "choices": ["4x4", "8x2"]}],
           "trials": trials}
    imp = importances(rec)
    assert set(imp) == {"lr", "batch"} and imp == importances(rec) and abs(sum(imp.values()) - 1) < 1e-6
    assert importances({**rec, "space": rec["space"][:1]}) is None  # one parameter: nothing to share out
    best = best_so_far(rec)
    assert list(best[:3]) == [0.5, 0.81, 0.81] and best[3] == 0.81 and best[-1] == max(t["value"] for t in trials
                                                                                          if t["state"] == "COMPLETE")


def test_the_tuned_preset_gives_every_loss_the_same_search_and_the_defaults_test(capsys):
    from oneshot.study.searches import plan_searches

    _, (st,) = presets.load_preset("tuned")
    _, (default,) = presets.load_preset("default")
    assert [s.trials for s in st.tune.searches] == [16] * 5 and st.tune.images == 128000
    assert {s.configuration for s in st.tune.searches} == {"contrastive-hard", "triplet-hard", "triplet-semihard",
                                                           "koch", "proto"}
    for s in st.tune.searches:
        assert {"lr", "weight_decay", "batch", "augment"} <= {d.key for d in s.dims}
    assert st.eval == default.eval and {c.steps for c in st.runs} == {c.steps for c in default.runs}
    assert sorted({c.seed for c in st.runs}) == [0, 1, 2]
    assert st.base == "omniglot-cpu" and default.base is None  # the study its tuned runs are paired against
    hours = plan_searches([st], Path("no-results"), lambda cfg: 1000.0) / 3600
    assert hours > 1 and "searches: 5 to run" in capsys.readouterr().out


def _search_on_executor(root, tmp_path, monkeypatch, *flags) -> None:
    """A tiny search (3 and 4 trials) on an executor's workers: each search ends with its plan."""
    import optuna

    monkeypatch.setenv("PYTHONPATH", tiny.worker_pythonpath(tmp_path / "site"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study(runs={"proto": {"trials": 4}}))
    results = tmp_path / "results"
    assert main(["benchmark", "--preset", preset, "--results", str(results), "--runs", str(tmp_path / "runs"),
                 "--data-root", str(root), "--cpus", "1", *flags]) == 0
    storage = f"sqlite:///{results / 'tuning' / 'tt.sqlite3'}"
    for name, planned in (("contrastive-m0.5", 3), ("proto", 4)):
        rec = json.loads((results / "records" / "tt" / "tune" / f"{name}.json").read_text())
        trials = optuna.load_study(study_name=rec["optuna_study"], storage=storage).get_trials()
        assert rec["planned"] == planned == len(trials) and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
        assert list((results / "records" / "tt" / name / "seed0").glob("*.json"))


@pytest.mark.slow
def test_ray_workers_take_the_trials_of_a_search_to_its_plan(small_omniglot, tmp_path, monkeypatch):
    _search_on_executor(small_omniglot, tmp_path, monkeypatch, "--executor", "ray", "--workers", "2")


@pytest.mark.slow
def test_slurm_workers_take_the_trials_of_a_search_to_its_plan(small_omniglot, slurm_partition, tmp_path,
                                                                monkeypatch):
    _search_on_executor(small_omniglot, tmp_path, monkeypatch, "--executor", "slurm", "--slurm-partition",
                        slurm_partition, "--slurm-time", "10")


@pytest.mark.slow
def test_an_interrupted_search_keeps_its_finished_trials_and_completes_on_rerun(small_omniglot, tmp_path, one_thread,
                                                                               monkeypatch):
    import optuna

    from oneshot import train as train_mod

    space = {**SPACE, "weight_decay": {"low": 0, "high": 1e-3}}  # a bound at 0 is kept in the record
    preset = tiny.write_preset(tmp_path / "t.toml", tuned_study(runs=None, space=space))  # contrastive-m0.5 first
    argv = ["benchmark", "--preset", preset, "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
            "--data-root", str(small_omniglot)]
    trials, real = {"n": 0, "stop_at": 2}, train_mod.train

    def interrupted(*a, on_validate, **k):  # trial `stop_at` of this call is interrupted at its first validation
        trials["n"] += 1

        def stop(step, acc):
            on_validate(step, acc)
            raise KeyboardInterrupt

        return real(*a, on_validate=stop if trials["n"] == trials["stop_at"] else on_validate, **k)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train", interrupted)
        assert main(argv) == 130
    storage = f"sqlite:///{tmp_path / 'results' / 'tuning' / 'tt.sqlite3'}"
    (name,) = optuna.study.get_all_study_names(storage)  # proto's search has not begun
    before = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.state.name for t in before[:2]] == ["COMPLETE", "FAIL"]
    tune_dir = tmp_path / "results" / "records" / "tt" / "tune"
    with monkeypatch.context() as m:  # stopped again in proto's search: contrastive's search keeps its record
        trials.update(n=0, stop_at=3)  # two trials complete contrastive's plan, the third is proto's first
        m.setattr(train_mod, "train", interrupted)
        assert main(argv) == 130
    assert (tune_dir / "contrastive-m0.5.json").is_file() and not (tune_dir / "proto.json").exists()
    assert main(argv) == 0
    rec = json.loads((tune_dir / "contrastive-m0.5.json").read_text())
    states = [t["state"] for t in rec["trials"]]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and states.count("FAIL") == 1
    assert (rec["trials"][0]["params"], rec["trials"][0]["value"]) == (before[0].params, before[0].value)
    assert {"key": "weight_decay", "low": 0.0, "high": 0.001} in rec["space"]
    from oneshot.report.tuning import importances

    importances(rec)  # computable or not, from the record alone


def _search_record(configuration: str, trials: list[dict]) -> dict:
    """A search record of study `tt` as `oneshot.study.searches` writes one: planned 5 trials,
    these done, the best complete one chosen."""
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    space = [{"key": k, "low": 1e-4, "high": 1.0, "log": True} for k in best["params"]]
    spec = {"images": None, "steps": 12, "validations": 3, "val_episodes": None, "pruner": "median",
            "sampler_seed": 0, "startup_trials": 2}
    return {"version": 1, "study": "tt", "configuration": configuration, "optuna_study": f"tt/{configuration}/x",
            "planned": 5, "spec": spec, "space": space, "direction": "maximize", "trials": trials,
            "best": {"number": best["number"], "value": best["value"], "params": best["params"]}}


def test_a_study_tuned_in_another_takes_its_best_values_or_stops_before_training(small_omniglot, tmp_path, capsys,
                                                                               one_thread):
    """`tuned_in`: each configuration at the best values of the other study's search records; a
    configuration without one is one line and exit 2 before anything trains."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    preset = tiny.write_preset(tmp_path / "l.toml", tiny.study("long", base={"steps": 6}, tuned_in="tt"))
    argv = ["benchmark", "--preset", preset, "--results", str(results), "--runs", str(runs),
            "--data-root", str(small_omniglot)]
    best = {"contrastive-m0.5": {"lr": 0.002, "margin": 0.3}, "proto": {"lr": 0.0005}}
    folder = results / "records" / "tt" / "tune"
    folder.mkdir(parents=True)
    (folder / "contrastive-m0.5.json").write_text(json.dumps(_search_record(
        "contrastive-m0.5", [{"number": 0, "state": "COMPLETE", "params": best["contrastive-m0.5"], "value": 0.6}])))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished record of proto" in err and not runs.exists()
    (folder / "proto.json").write_text(json.dumps(_search_record(
        "proto", [{"number": 0, "state": "PRUNED", "params": {"lr": 0.01}, "value": None},
                  {"number": 1, "state": "COMPLETE", "params": best["proto"], "value": 0.5}])))
    assert main(argv) == 0
    for name, values in best.items():
        score = json.loads(next((results / "records" / "long" / name / "seed0").glob("*.json")).read_text())
        assert score["config"]["lr"] == values["lr"] and score["config"]["steps"] == 6
        assert score["config"]["loss_params"].get("margin") == values.get("margin", score["config"]["loss_params"].get(
            "margin"))
        assert score["train"]["tuned"]["searched_in"] == "tt" and score["train"]["tuned"]["trials"] == 5
    assert "(tuned, 5 trials)" in (results / "long" / "main-vinyals.md").read_text()


def test_tuned_long_takes_the_tuned_searches_at_the_reproduce_budget():
    _, (long,) = presets.load_preset("tuned-long")
    _, (tuned,) = presets.load_preset("tuned")
    _, (rep,) = presets.load_preset("reproduce")
    assert long.tuned_in == "omniglot-tuned" and long.base == "omniglot-reproduce"
    assert long.configurations == [s.configuration for s in tuned.tune.searches]
    assert long.eval.settings == rep.eval.settings and long.eval.episodes == rep.eval.episodes
    assert {c.batch_images * c.steps for c in long.runs} == {1_440_000}
    siamese = next(c for c in rep.runs if c.name == "contrastive-m0.5")
    for cfg in long.runs:
        assert (cfg.lr_decay_every, cfg.patience, cfg.val_ways, cfg.val_episodes) == \
            (siamese.lr_decay_every, siamese.patience, siamese.val_ways, siamese.val_episodes)
