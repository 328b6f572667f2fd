"""Tables from hand-made records: best configuration per loss by validation (never test), the
bold winner per column, margin rows, paired comparisons against the reference with an
independent Holm correction, and byte-identical regeneration."""

import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from oneshot.report import frames, tables
from oneshot.report.write import write_report
from oneshot.study import records
from oneshot.config import from_dict

STUDY, PROTOCOL, EPISODES = "grid", "vinyals", 200
SETTINGS = [(5, 1, 5), (5, 5, 5), (20, 1, 5)]

# run -> (config keys, best validation accuracy, test mean per setting)
# Within triplet-hard (every setting) and contrastive-balanced (two settings of three) the run
# with the better *test* accuracy is not the one with the better *validation* accuracy, so
# choosing by test gives another table.
RUNS = {
    "trip-m0.2": (dict(loss="triplet", mining="hard", margin=0.2), 0.90,
                  {(5, 1): 0.855, (5, 5): 0.950, (20, 1): 0.695}),
    "trip-m0.5": (dict(loss="triplet", mining="hard", margin=0.5), 0.95,
                  {(5, 1): 0.845, (5, 5): 0.940, (20, 1): 0.690}),
    "con-m0.5": (dict(loss="contrastive", pos_weight="balanced", margin=0.5), 0.80,
                 {(5, 1): 0.850, (5, 5): 0.930, (20, 1): 0.680}),
    "con-m1.0": (dict(loss="contrastive", pos_weight="balanced", margin=1.0), 0.85,
                 {(5, 1): 0.848, (5, 5): 0.925, (20, 1): 0.700}),
    "proto": (dict(loss="proto", distance="sqeuclidean"), 0.92, {(5, 1): 0.860, (5, 5): 0.935, (20, 1): 0.685}),
}
SELECTED = {"triplet-hard": "trip-m0.5", "contrastive-balanced": "con-m1.0", "proto": "proto"}
# the best test mean among the selected runs; in 5w5s a run that is not shown (trip-m0.2) is higher
WINNER = {(5, 1): "proto", (5, 5): "trip-m0.5", (20, 1): "con-m1.0"}


def per_episode(run: str, ways: int, shots: int, mean: float) -> np.ndarray:
    """Accuracies [E] sharing a per-episode difficulty across runs (so pairs are correlated),
    shifted to exactly `mean`."""
    common = np.random.default_rng(ways * 100 + shots).normal(0, 0.04, EPISODES)
    own = np.random.default_rng([zlib.crc32(run.encode()), ways, shots]).normal(0, 0.05, EPISODES)
    a = common + own
    return a - a.mean() + mean


def make_record(run, keys, val_acc, ways, shots, queries, acc, classifier="nearest-support",
                distance="euclidean") -> dict:
    cfg = from_dict({"name": run, "steps": 100, **keys}).to_dict()
    sd = float(np.std(acc, ddof=1))
    versions = {"oneshot": "0", "python": "3", "torch": "2", "numpy": "1"}
    prov = {"commit": "0123abc", "versions": versions, "device": "cpu (2 cores, 2 threads)",
            "platform": "linux", "argv": ["oneshot"], "time": "2026-01-01T00:00:00+00:00"}
    curve = "step,loss,val_acc,images_per_s,lr\n50,0.8,%.4f,100,0.0005\n100,0.5,%.4f,100,0\n" % (val_acc - 0.05, val_acc)
    return {
        "study": STUDY, "run": run, "seed": cfg["seed"], "dataset": "omniglot", "protocol": PROTOCOL, "split": "test",
        "ways": ways, "shots": shots, "queries": queries, "episode_seed": 2026,
        "classifier": classifier, "distance": distance,
        "study_eval": {"protocols": [PROTOCOL], "episodes": EPISODES, "seed": 2026,
                       "classifiers": ["nearest-support", "nearest-prototype"],
                       "distances": ["euclidean", "cosine"], "settings": [list(s) for s in SETTINGS]},
        "mean": float(np.mean(acc)), "ci95": 1.96 * sd / np.sqrt(len(acc)),
        "t_ci95": float(stats.t.ppf(0.975, len(acc) - 1)) * sd / np.sqrt(len(acc)), "std": sd,
        "episodes": len(acc), "per_episode": [float(a) for a in acc], "config": cfg,
        "train": {"status": "finished", "seed": 0, **prov, "wall_time_s": 60.0, "best_val_acc": val_acc,
                  "steps": 100, "curve": curve},
        "eval": {"embed_s": 1.5, "score_s": 0.01, **prov},
    }


def record_file(results: Path, run: str, ways: int, shots: int, classifier="nearest-support",
                distance="euclidean") -> Path:
    """Where the benchmark keeps this record (one seed per configuration here)."""
    path = records.record_path(results, STUDY, from_dict({"name": run, **RUNS[run][0]}), PROTOCOL, ways, shots,
                                 classifier, distance)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_records(results: Path) -> dict:
    """The records of RUNS where the benchmark writes them; returns {(run, ways, shots): acc}."""
    accs = {}
    for run, (keys, val_acc, means) in RUNS.items():
        for ways, shots, queries in SETTINGS:
            acc = per_episode(run, ways, shots, means[(ways, shots)])
            accs[(run, ways, shots)] = acc
            rec = make_record(run, keys, val_acc, ways, shots, queries, acc)
            record_file(results, run, ways, shots).write_text(json.dumps(rec, indent=1) + "\n")
    # another classifier and distance, far better: the tables are about the main one only
    keys, val_acc, _ = RUNS["trip-m0.2"]
    rec = make_record("trip-m0.2", keys, val_acc, 5, 1, 5, np.full(EPISODES, 0.99), "nearest-prototype", "cosine")
    record_file(results, "trip-m0.2", 5, 1, "nearest-prototype", "cosine").write_text(json.dumps(rec, indent=1) + "\n")
    bench = {"preset": "grid", "preset_file": "grid.toml", "description": "a test grid",
             "command": "make benchmark PRESET=grid", "runs": [f"{STUDY}/{r}" for r in RUNS],
             "wall_time_s_this_invocation": 300.0, "runs_trained_this_invocation": len(RUNS),
             "commit": "0123abc", "versions": {"oneshot": "0"}, "device": "cpu", "platform": "linux",
             "argv": [], "time": "2026-01-01T00:00:00+00:00"}
    (results / "records" / "benchmark-grid.json").write_text(json.dumps(bench, indent=1) + "\n")
    return accs


def configurations(root: Path):
    """What the table functions take: one row per configuration and setting."""
    return frames.configurations(frames.load_records(root))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    accs = write_records(root)
    return root, accs


def number(cell) -> float:
    """The first number of a table cell ('**85.00 ± 1.20**' -> 85.0)."""
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", str(cell))
    assert m, f"no number in {cell!r}"
    return float(m.group())


def column(df, word: str) -> str:
    """The one column whose name contains `word` (case-insensitive)."""
    hits = [c for c in df.columns if word.lower() in str(c).lower()]
    assert len(hits) == 1, (word, list(df.columns))
    return hits[0]


def our_rows(main) -> dict:
    """family -> row index of the main table (published rows left out)."""
    out = {}
    for i, loss in enumerate(main["Loss"]):
        fams = [f for f, name in frames.FAMILY_NAMES.items() if str(loss).startswith(name)]
        if fams and "published" not in str(loss):
            fam = max(fams, key=lambda f: len(frames.FAMILY_NAMES[f]))
            assert fam not in out, f"two rows for {fam}"
            out[fam] = i
    return out


def holm_reference(p) -> list[float]:
    """Holm-Bonferroni step-down, written out: sort, multiply by (m - rank), running max, cap 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_fixture_records_have_the_intended_means(results):
    root, accs = results
    for run, (_, _, means) in RUNS.items():
        for (w, s), m in means.items():
            assert np.mean(accs[(run, w, s)]) == pytest.approx(m, abs=1e-9)
    df = frames.load_records(root)
    assert len(df) == len(SETTINGS) * len(RUNS) + 1


def test_main_table_picks_each_loss_by_validation_and_bolds_the_column_winner(results):
    root, accs = results
    main, bold = tables.main_table(configurations(root), PROTOCOL)
    rows = our_rows(main)
    assert set(rows) == set(SELECTED), "one row per loss family"
    for fam, run in SELECTED.items():
        keys, _, _ = RUNS[run]
        margin = main["Margin"].iloc[rows[fam]]
        if "margin" in keys:
            assert number(margin) == pytest.approx(keys["margin"]), f"{fam}: not the best-by-validation margin"
        for (w, s), acc in ((k[1:], v) for k, v in accs.items() if k[0] == run):
            cell = main[f"{w}w{s}s"].iloc[rows[fam]]
            assert number(cell) == pytest.approx(100 * np.mean(acc), abs=0.006), (fam, w, s, cell)
    # the bold set: exactly the best selected run per column, nothing in the published rows
    family_of = {run: fam for fam, run in SELECTED.items()}
    want = {(rows[family_of[run]], f"{w}w{s}s") for (w, s), run in WINNER.items()}
    assert bold == want
    for fam, i in rows.items():
        for w, s, _ in SETTINGS:
            cell = str(main[f"{w}w{s}s"].iloc[i])
            assert ("**" in cell) == ((i, f"{w}w{s}s") in want), (fam, cell)
    published = [i for i in range(len(main)) if i not in rows.values()]
    assert published and not any("**" in str(v) for i in published for v in main.iloc[i])


def test_margin_table_has_one_row_per_margin_run(results):
    root, accs = results
    mt = tables.margin_table(configurations(root), PROTOCOL)
    margin_runs = {r for r, (k, _, _) in RUNS.items() if "margin" in k}
    assert len(mt) == len(margin_runs), "proto (no margin) has no row; every margin run has one"
    seen = set()
    for _, row in mt.iterrows():
        fam = [f for f, name in frames.FAMILY_NAMES.items() if row["Loss"].split(" †")[0].split(" ‡")[0] == name]
        assert len(fam) == 1, row["Loss"]
        run = [r for r in margin_runs if frames.family(from_dict(RUNS[r][0]).to_dict()) == fam[0]
               and RUNS[r][0]["margin"] == number(row["Margin"])]
        assert len(run) == 1, (row["Loss"], row["Margin"])
        run = run[0]
        seen.add(run)
        assert number(row[column(mt, "val")]) == pytest.approx(100 * RUNS[run][1], abs=0.006)
        for w, s, _ in SETTINGS:
            assert number(row[f"{w}w{s}s"]) == pytest.approx(100 * np.mean(accs[(run, w, s)]), abs=0.006)
    assert seen == margin_runs


def test_paired_table_against_the_reference_with_holm_computed_here(results):
    root, accs = results
    pt = tables.paired_table(configurations(root), PROTOCOL)
    c_set, c_cfg, c_ref = column(pt, "setting"), column(pt, "configuration"), column(pt, "reference")
    c_diff, c_holm = column(pt, "difference"), column(pt, "holm")
    c_p = [c for c in pt.columns if str(c).lower().startswith("p") and not {"holm", "wilcoxon"} & set(str(c).lower().split())]
    assert len(c_p) == 1, list(pt.columns)
    reference = max(RUNS, key=lambda r: RUNS[r][1])  # the best validation accuracy, never test
    assert reference == "trip-m0.5"
    for w, s, _ in SETTINGS:
        block = pt[pt[c_set] == f"{w}w{s}s"]
        assert set(block[c_ref]) == {reference}
        assert sorted(block[c_cfg]) == sorted(set(RUNS) - {reference}), "every other configuration once"
        raw = [stats.ttest_rel(accs[(r, w, s)], accs[(reference, w, s)]).pvalue for r in block[c_cfg]]
        adj = holm_reference(raw)
        bonferroni = [min(1.0, len(raw) * p) for p in raw]
        # the fixture separates Holm from no correction and from Bonferroni
        assert max(abs(a - p) / a for a, p in zip(adj, raw)) > 0.3
        assert max(abs(a - b) / a for a, b in zip(adj, bonferroni)) > 0.2
        for (_, row), p, a in zip(block.iterrows(), raw, adj):
            run = row[c_cfg]
            diff = 100 * (np.mean(accs[(run, w, s)]) - np.mean(accs[(reference, w, s)]))
            assert number(row[c_diff]) == pytest.approx(diff, abs=0.006), "difference = configuration - reference"
            assert float(row[c_p[0]]) == pytest.approx(p, rel=0.06)
            assert float(row[c_holm]) == pytest.approx(a, rel=0.06), (run, row[c_holm], a)


def test_write_tables_regenerates_the_same_bytes(results):
    root, _ = results
    out = root.parent / "out"
    written = write_report(root, out)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {out / p for p in files} == set(map(Path, written)), "every file written is listed, and only those"
    names = {str(p) for p in files}
    for want in (f"{STUDY}/main-{PROTOCOL}.md", f"{STUDY}/main-{PROTOCOL}.tex", f"{STUDY}/main-{PROTOCOL}.csv",
                 f"{STUDY}/margins-{PROTOCOL}.md", f"{STUDY}/margins-{PROTOCOL}.png",
                 f"{STUDY}/paired-{PROTOCOL}.md", f"{STUDY}/all-scores.csv", f"{STUDY}/curves.png", "README.md"):
        assert want in names, want
    assert all(files.values()), "no empty file"

    # a second call over the same tree, then a regeneration from scratch: the same bytes
    assert write_report(root, out) == written
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    shutil.rmtree(out)
    write_report(root, out)
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again.keys() == files.keys()
    for name in files:
        assert again[name] == files[name], f"{name} differs when regenerated"


def test_losses_from_pml_or_user_code_are_families_of_their_own():
    cfg = lambda **kw: from_dict(kw).to_dict()  # noqa: E731
    assert frames.family(cfg(loss="triplet", mining="semihard")) == "triplet-semihard"
    assert frames.family(cfg(loss="pml:CircleLoss")) == "pml:CircleLoss"
    ms = frames.family(cfg(loss="pml:MultiSimilarityLoss", miner="pml:MultiSimilarityMiner"))
    assert ms == "pml:MultiSimilarityLoss+pml:MultiSimilarityMiner"
    assert frames.family({"loss": "proto"}) == "proto"  # a record written before miners existed
    assert frames.family_name(ms) == "MultiSimilarity + MultiSimilarity miner (PML)"
    assert frames.family_name("pml:ArcFaceLoss") == "ArcFace (PML)"
    assert frames.family_name("mylab.losses:focal_triplet") == "focal_triplet (mylab.losses)"
    assert frames.family_name("triplet-hard") == frames.FAMILY_NAMES["triplet-hard"]
    assert not frames.has_margin(cfg(loss="pml:TripletMarginLoss"))


def test_the_results_readme_says_how_a_benchmark_was_executed():
    from oneshot.report.readme import _how

    argv = ["cli.py", "benchmark", "--preset", "zoo", "--results", "r", "--executor", "ray", "--workers", "2",
            "--cpus=1"]
    assert _how(argv) == ["--executor", "ray", "--workers", "2", "--cpus=1"]
    assert _how(["cli.py", "benchmark", "--preset", "default"]) == []


def test_a_tuned_study_is_paired_against_the_same_loss_untuned_and_the_base_best(results):
    """A tuned study copied from `grid`: each tuned loss against grid's configuration of that loss
    best on validation (trip-m0.5, though trip-m0.2 is better on test) and against grid's best,
    the differences and Holm p-values computed here; other test episodes are not paired."""
    root, accs = results
    # "semi" is a loss grid does not train: no untuned run, but still paired with grid's best
    tuned = {"trip": (dict(loss="triplet", mining="hard", margin=0.3), 0.96, 0.012),
             "proto": (dict(loss="proto", distance="sqeuclidean"), 0.94, -0.004),
             "semi": (dict(loss="triplet", mining="semihard", margin=0.2), 0.93, 0.003)}
    untuned = {"trip": "trip-m0.5", "proto": "proto", "semi": None}
    mine = {}
    for run, (keys, val_acc, shift) in tuned.items():
        base_run = untuned[run] or "trip-m0.5"
        for ways, shots, queries in SETTINGS:
            acc = accs[(base_run, ways, shots)] + shift + np.random.default_rng([ways, shots, len(run)]).normal(
                0, 0.01, EPISODES)
            mine[(run, ways, shots)] = acc
            rec = make_record(run, keys, val_acc, ways, shots, queries, acc)
            rec["study"] = "grid-tuned"
            rec["train"]["tuned"] = {"trials": 4, "params": {"lr": 0.001}, "base_study": STUDY}
            if (run, ways) == ("proto", 20):
                rec["episode_seed"] = 7
            path = records.record_path(root, "grid-tuned", from_dict({"name": run, **keys}), PROTOCOL, ways, shots,
                                       "nearest-support", "euclidean")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec) + "\n")
    # a second seed of the untuned triplet, which the tuned study lacks: the differences and the
    # "before -> after" column are taken over seed 0 alone
    keys, val_acc, _ = RUNS["trip-m0.5"]
    for ways, shots, queries in SETTINGS:
        rec = make_record("trip-m0.5", {**keys, "seed": 1}, val_acc, ways, shots, queries,
                          accs[("trip-m0.5", ways, shots)] + 0.05)
        path = records.record_path(root, STUDY, from_dict({"name": "trip-m0.5", **keys, "seed": 1}), PROTOCOL,
                                   ways, shots, "nearest-support", "euclidean")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec) + "\n")
    write_report(root)
    text = (root / "grid-tuned" / f"tuned-vs-{STUDY}-{PROTOCOL}.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and "Setting" not in line}
    for ways, shots, _ in SETTINGS:
        setting = f"{ways}w{shots}s"
        paired = [run for run in tuned if (run, ways) != ("proto", 20)]
        pairs = [(run, untuned[run]) for run in paired if untuned[run]]
        p_own = [stats.ttest_rel(mine[(r, ways, shots)], accs[(u, ways, shots)]).pvalue for r, u in pairs]
        p_best = {r: p for r, p in zip(paired, holm_reference(
            [stats.ttest_rel(mine[(r, ways, shots)], accs[("trip-m0.5", ways, shots)]).pvalue for r in paired]))}
        for (run, base_run), adj_own in zip(pairs, holm_reference(p_own)):
            name = frames.family_name(frames.family(from_dict({"name": run, **tuned[run][0]}).to_dict()))
            row = rows[(setting, name, base_run)]
            adj_best = p_best[run]
            diff = 100 * np.mean(mine[(run, ways, shots)] - accs[(base_run, ways, shots)])
            assert number(row[5]) == pytest.approx(diff, abs=0.005)
            assert f"p Holm {adj_own:.2g})" in row[5] and f"p Holm {adj_best:.2g})" in row[6]
            assert row[3] == f"{100 * RUNS[base_run][1]:.2f} → {100 * tuned[run][1]:.2f}"
            before, after = 100 * accs[(base_run, ways, shots)].mean(), 100 * mine[(run, ways, shots)].mean()
            assert row[4] == f"{before:.2f} → {after:.2f} (1 matched seed)"
        row = rows[(setting, "Triplet, semi-hard", "–")]
        assert row[3] == "–" and row[4] == f"– → {100 * mine[('semi', ways, shots)].mean():.2f}"
        assert row[5] == f"– (no untuned run in {STUDY})"
        diff = 100 * np.mean(mine[("semi", ways, shots)] - accs[("trip-m0.5", ways, shots)])
        assert number(row[6]) == pytest.approx(diff, abs=0.005) and f"p Holm {p_best['semi']:.2g})" in row[6]
        if ways == 20:
            row = rows[(setting, "Prototypical", "proto")]
            assert row[5].startswith("– (no matched seeds") and row[6].startswith("– (no matched seeds")
    assert "base's best" in text and "trip-m0.5 (the base's best)" in text


def test_a_table_whose_rows_have_different_seed_counts_says_so_on_every_cell(results):
    root, _ = results
    main, _ = tables.main_table(configurations(root), PROTOCOL)
    assert not any("seed" in str(v) for v in main.drop(columns=["Loss", "Margin"]).to_numpy().ravel())  # all one seed
    keys, val_acc, means = RUNS["proto"]  # a second seed of proto, 1 point lower everywhere
    for ways, shots, queries in SETTINGS:
        rec = make_record("proto", {**keys, "seed": 1}, val_acc, ways, shots, queries,
                          per_episode("proto-1", ways, shots, means[(ways, shots)] - 0.01))
        path = records.record_path(root, STUDY, from_dict({"name": "proto", **keys, "seed": 1}), PROTOCOL, ways,
                                   shots, "nearest-support", "euclidean")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec) + "\n")
    main, _ = tables.main_table(configurations(root), PROTOCOL)
    rows = our_rows(main)
    for fam, i in rows.items():
        for w, s, _ in SETTINGS:
            cell = str(main[f"{w}w{s}s"].iloc[i]).strip("*")
            assert cell.endswith("(2 seeds, sd 0.71)" if fam == "proto" else "(1 seed)"), (fam, cell)
    mt = tables.margin_table(configurations(root), PROTOCOL)  # proto has no margin: its rows are all one seed
    assert all(not str(row[f"{w}w{s}s"]).endswith("seed)") for _, row in mt.iterrows() for w, s, _ in SETTINGS)
