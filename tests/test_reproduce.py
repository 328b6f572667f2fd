"""A study that reproduces a published recipe: the recipe row beside the published one, pairs
against the recipe, budget snapshots scored on the test episodes, the budget table and figure."""

import json

import numpy as np
import pandas as pd
import pytest

import tiny
from oneshot.report import budget, frames, published, readme, tables
from oneshot import stats
from oneshot.cli import main
from oneshot.study.presets import load_preset

SNELL = {"loss": "proto", "normalize": False, "distance": "sqeuclidean"}  # ProtoNet's own setting
REP = tiny.study("rep", base={"schedule": "step", "lr_decay_every": 2, "val_episodes": 10, "patience": 3,
                              "snapshot_images": [16, 48]},
                 eval={"settings": [[3, 1, 2], [3, 2, 2]], "episodes": 20, "verification_pairs": 0,
                       "classifiers": ["nearest-support", "nearest-prototype"], "main_classifier": "nearest-prototype",
                       "reproduces": [{"label": "ProtoNet, Snell recipe (reproduced here)", "published": "ProtoNet",
                                       "runs": {"1": "proto-1shot", "2": "proto-2shot"}}]},
                 runs=[{"name": "proto-1shot", **SNELL, "support_shots": 1},
                       {"name": "proto-2shot", **SNELL, "support_shots": 2},
                       {"loss": "triplet", "mining": ["hard"], "margin": [0.2, 0.5]}])


@pytest.fixture
def results(small_omniglot, tmp_path, one_thread, monkeypatch):
    preset = tiny.write_preset(tmp_path / "rep.toml", REP, description="fixture reproduction", seeds=[0, 1])
    argv = ["benchmark", "--preset", preset, "--results", str(tmp_path / "results"), "--runs",
            str(tmp_path / "runs"), "--data-root", str(small_omniglot)]
    monkeypatch.delenv("ONESHOT_COMMAND", raising=False)
    assert main(argv) == 0
    return tmp_path / "results"


def test_the_readme_names_the_command_that_was_run(results):
    bench = json.loads((results / "records" / "benchmark-rep.json").read_text())
    assert bench["command"].startswith(f"oneshot benchmark --preset {results.parent / 'rep.toml'} --results ")
    assert bench["preset_path"] == str(results.parent / "rep.toml")  # not a shipped preset: its own path
    assert f"- command: `{bench['command']}` (preset file `{bench['preset_path']}`)" in (results / "README.md").read_text()


def test_snapshots_are_scored_on_the_study_episodes(results):
    snap = sorted((results / "records" / "rep" / "proto-1shot" / "seed0" / "budget").glob("*/*.json"))
    # budgets 16 and 48 images (16 images a step: steps 1 and 3) x 2 settings, main scoring only
    assert [(p.parent.name, p.name) for p in snap] == [
        ("16", "vinyals-3w1s-nearest-prototype-euclidean.json"), ("16", "vinyals-3w2s-nearest-prototype-euclidean.json"),
        ("48", "vinyals-3w1s-nearest-prototype-euclidean.json"), ("48", "vinyals-3w2s-nearest-prototype-euclidean.json")]
    r16, final = (json.loads(p.read_text()) for p in (
        snap[0], results / "records" / "rep" / "proto-1shot" / "seed0" / "vinyals-3w1s-nearest-prototype-euclidean.json"))
    assert r16["budget_images"] == 16 and r16["train"]["best_step"] == 1 and r16["train"]["best_images"] == 16
    assert len(r16["per_episode"]) == len(final["per_episode"]) == 20
    assert final["train"]["images_seen"] == 4 * 16 and final["train"]["stopped_step"] == 4


def test_main_table_has_the_recipe_row_beside_the_published_one(results):
    df = frames.load_records(results)
    main, _ = tables.main_table(frames.configurations(df), "vinyals")
    labels = list(main.Loss)
    assert labels[:2] == ["Triplet, batch-hard", "ProtoNet, Snell recipe (reproduced here)"]
    assert "ProtoNet (published: Snell et al. 2017)" in labels and "Prototypical" not in labels
    row = main[main.Loss == labels[1]].iloc[0]
    assert row.Batch == "4x(1+3) / 4x(2+2)"
    conf = frames.configurations(df)
    for col, run, shots in (("3w1s", "proto-1shot", 1), ("3w2s", "proto-2shot", 2)):
        c = conf[(conf.run == run) & (conf.shots == shots) & (conf.classifier == "nearest-prototype")].iloc[0]
        assert row[col].replace("**", "").startswith(f"{100 * c['mean']:.2f} ± {100 * c['ci95']:.2f} (2 seeds")
    # pairs: against the recipe's run for the setting's shots
    pt = tables.paired_table(frames.configurations(frames.load_records(results)), "vinyals")
    assert set(pt[pt.Setting == "3w1s"].Reference) == {"proto-1shot"}
    assert set(pt[pt.Setting == "3w2s"].Reference) == {"proto-2shot"}
    configurations = {c.split(" ")[0] for c in pt[pt.Setting == "3w1s"].Configuration}  # without collapse marks
    assert configurations == {"proto-2shot", "triplet-hard-m0.2", "triplet-hard-m0.5"}


def test_budget_table_ranks_each_loss_at_each_budget_and_the_readme_says_what_flips(results):
    df = frames.load_records(results)
    frame = budget.budget_frame(results, df)
    ranked = budget.losses_at_budgets(frame)
    assert sorted(set(ranked.budget)) == [16, 48, 64]
    for (n, w, s), g in ranked.groupby(["budget", "ways", "shots"]):
        assert sorted(g["rank"]) == [1, 2] and list(g.sort_values("rank")["mean"]) == sorted(g["mean"], reverse=True)
        trip = g[g.loss == "Triplet, batch-hard"].iloc[0]  # the margin best on validation at that budget
        margins = frame[(frame.budget == n) & (frame.ways == w) & (frame.shots == s) & (frame.family == "triplet-hard")]
        assert trip.run == margins.sort_values(["val_acc", "run"], ascending=[False, True]).run.iloc[0]
    text = (results / "rep" / "budget-vinyals.md").read_text()
    assert all(f"| {w} @ {n}" in text or f" | {w} @ {n} |" in text for w in ("3w1s", "3w2s") for n in (16, 48, 64))
    assert (results / "rep" / "budget-vinyals.png").stat().st_size > 1000
    readme = (results / "README.md").read_text()
    assert "Rankings against budget, rep (vinyals" in readme
    flipped = budget.flips(ranked)
    assert all(f"- {f}" in readme for f in flipped)


def test_a_flip_says_whether_either_order_is_significant():
    """Loss A ahead of B at the small budget by 10 points (significant), behind it at the large one by
    half a point in noise of 5 (within the CI); 2 seeds x 40 episodes, paired as the tables pair."""
    g = np.random.default_rng(0)
    base = {n: g.uniform(0.5, 0.9, (2, 40)) for n in (16, 64)}
    acc = {("A", 16): base[16] + 0.1 + g.normal(0, 0.02, (2, 40)), ("B", 16): base[16],
           ("A", 64): base[64] - 0.005 + g.normal(0, 0.05, (2, 40)), ("B", 64): base[64]}
    rows = [{"loss": loss, "budget": n, "ways": 3, "shots": 1, "rank": 1 + ((loss == "B") ^ (n == 64)),
             "acc": {0: a[0], 1: a[1]}} for (loss, n), a in acc.items()]
    want = {n: stats.paired_crossed(acc["A", n], acc["B", n]) for n in (16, 64)}
    assert want[16]["p"] < 0.05 < want[64]["p"]
    (line,) = budget.flips(pd.DataFrame(rows))
    lo, hi = (f"{100 * want[n]['diff']:+.2f} ± {100 * want[n]['diff_ci95']:.2f}, p {want[n]['p']:.2g}, 2 seeds"
              for n in (16, 64))
    assert line == (f"3w1s: A ahead of B at 16 ({lo}: significant), behind it at 64 ({hi}: within the CI)")
    rows[3]["acc"] = {2: acc["B", 64][0]}  # B at 64 images has only seed 2, which A lacks
    (line,) = budget.flips(pd.DataFrame(rows))
    assert line.endswith("behind it at 64 (no seed in common: not paired)")


def test_reproduced_lines_compare_with_the_published_cell(results, monkeypatch):
    conf = frames.configurations(frames.load_records(results))
    assert readme.reproduced(conf) == []  # the published ProtoNet row has no 3-way cells: nothing to compare
    monkeypatch.setitem(published.PUBLISHED, ("omniglot", "vinyals"),
                        [("ProtoNet", "Snell et al. 2017", {(3, 1): "50.0", (3, 2): "99.9"})])
    conf = frames.configurations(frames.load_records(results))
    rows = {r["setting"]: r for r in readme.reproduced(conf)}
    assert set(rows) == {"3w1s", "3w2s"} and rows["3w1s"]["run"] == "proto-1shot"
    for r in rows.values():
        assert r["inside"] == (abs(r["published"] - r["mean"]) <= r["ci95"])
    lines = readme._reproduced_lines(conf)
    assert any("3w2s (run proto-2shot): published 99.9" in line for line in lines)


def test_the_reproduce_preset_builds():
    _, studies = load_preset("reproduce")
    st = studies[0]
    assert len(st.runs) == 21 and {c.seed for c in st.runs} == {0, 1, 2}
    proto = [c for c in st.runs if c.name == "proto-snell-1shot"][0]
    assert (proto.batch_classes, proto.n_support, proto.batch_shots - proto.n_support) == (60, 1, 5)
    caps = {c.steps * c.batch_images for c in st.runs}
    assert caps == {1_440_000}
