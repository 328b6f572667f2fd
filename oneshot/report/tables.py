"""Tables and the results README, generated from the records alone.

`write_tables(results)` reads `results/records/<study>/<configuration>/seed<k>/*.json` and
writes, per study, the main table (Markdown, LaTeX, CSV), the margin table and plot, the
paired comparison table, the training curves and a CSV of every score; then
`results/README.md`. The same records always give the same bytes.

A configuration trained with S seeds, each scored on the same E test episodes, is summarised
from its accuracy matrix [S, E] by `stats.crossed` (seed and episode variance both in the
interval); comparisons use `stats.paired_crossed` on matched seeds and the same episodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..study import records
from ..provenance import atomic_write_text
from .published import published_rows, published_value
from .frames import FAMILY_NAMES, _col, _main_view, configurations, family_name, load_records, recipe_run, recipes
from ..stats import holm, paired_crossed

NO_VAL_MARK = " †"
NO_VAL_NOTE = ("† trained without a validation split: no margin could be chosen without looking at test, "
               "so every configuration of this loss is shown.")
COLLAPSED_MARK = " ‡"
COLLAPSED_NOTE = ("‡ collapsed: the best validation accuracy of at least one seed does not beat raw pixels "
                  "(nearest support, Euclidean) on the same validation episodes.")
METHOD = ("95% CI from the crossed seeds x episodes design: two-way random-effects variance of the grand "
          "mean (seed, episode and interaction parts), Cochran-Cox critical value; with one seed, "
          "1.96 s / sqrt(E) over episodes")


def _cell(mean: float, ci: float, seeds: int = 1, seed_sd: float = np.nan) -> str:
    text = f"{100 * mean:.2f} ± {100 * ci:.2f}"
    return text if seeds == 1 else f"{text} ({seeds} seeds, sd {100 * seed_sd:.2f})"


def _marks(row) -> str:
    return (NO_VAL_MARK if np.isnan(row.val_acc) else "") + (COLLAPSED_MARK if row.collapsed else "")


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex(df: pd.DataFrame, bold: set[tuple[int, str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%").replace("**", "")

    out = [r"\begin{tabular}{" + "l" * 2 + "c" * (len(df.columns) - 2) + "}", r"\toprule",
           " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    for i, row in enumerate(df.itertuples(index=False)):
        cells = [esc(str(v)) for v in row]
        cells = [r"\textbf{" + c + "}" if (i, col) in bold else c for c, col in zip(cells, df.columns)]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def _family_order(families) -> list[str]:
    known = [f for f in FAMILY_NAMES if f in set(families)]
    return known + sorted(set(families) - set(known))


def _best_runs(d: pd.DataFrame) -> pd.DataFrame:
    """Per loss family, the configuration with the best validation accuracy (seed mean; margins
    chosen on validation, not test). A family none of whose configurations was validated
    (val_split = "none") cannot be chosen without looking at test: all of them are kept."""
    runs = d.drop_duplicates("run")
    validated = runs[runs.val_acc.notna()]
    best = validated.loc[validated.groupby("family")["val_acc"].idxmax()]
    rest = runs[runs.val_acc.isna() & ~runs.family.isin(best.family)]
    out = pd.concat([best, rest])
    rank = {f: i for i, f in enumerate(_family_order(out.family))}
    return out.assign(_rank=out.family.map(rank)).sort_values(["_rank", "run"]).drop(columns="_rank")


def main_table(df: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, set]:
    """One row per loss (best configuration by validation), columns per setting, published rows
    below. `df` is `configurations(...)`."""
    d = _main_view(df, protocol)
    setting_cols = sorted({(w, s) for w, s in zip(d.ways, d.shots)})
    recs = recipes(d)
    in_recipes = {run for r in recs for run in r["runs"].values()}
    best = _best_runs(d[~d.run.isin(in_recipes)])
    # our rows: (label, margin, batch, {setting: the run scored there})
    ours = [(family_name(b.family) + _marks(b), "–" if np.isnan(b.margin) else f"{b.margin:g}", b.batch,
             {c: b.run for c in setting_cols}) for b in best.itertuples()]
    for r in recs:
        runs = {c: recipe_run(r, c[1]) for c in setting_cols if recipe_run(r, c[1])}
        shapes = " / ".join(dict.fromkeys(d[d.run == run].batch.iloc[0] for run in runs.values() if (d.run == run).any()))
        ours.append((r["label"], "–", shapes, runs))
    cell = {}
    for i, (*_, runs) in enumerate(ours):
        for c, run in runs.items():
            hit = d[(d.run == run) & (d.ways == c[0]) & (d.shots == c[1])]
            if not hit.empty:
                cell[i, c] = hit.iloc[0]
    winners = {c: max((h["mean"] for (_, c2), h in cell.items() if c2 == c), default=np.nan) for c in setting_cols}
    rows, bold = [], set()
    for i, (label, margin, batch, _) in enumerate(ours):
        row = {"Loss": label, "Margin": margin} | ({"Batch": batch} if recs else {})
        for c in setting_cols:
            h = cell.get((i, c))
            if h is None:
                row[_col(*c)] = ""
                continue
            text = _cell(h["mean"], h["ci95"], h["seeds"], h["seed_sd"])
            if h["mean"] == winners[c]:
                text, _ = f"**{text}**", bold.add((i, _col(*c)))
            row[_col(*c)] = text
        rows.append(row)
    for name, source, cells in published_rows(d.dataset.iloc[0], protocol):
        row = {"Loss": f"{name} (published: {source})", "Margin": ""} | ({"Batch": ""} if recs else {})
        row.update({_col(*c): cells.get(c, "") for c in setting_cols})
        rows.append(row)
    return pd.DataFrame(rows), bold


def margin_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per configuration of a margin-based loss (configurations that share a family and
    a margin but differ in another key each keep their row), by family, margin and name."""
    d = _main_view(df, protocol)
    d = d[d.margin.notna()]
    rank = {f: i for i, f in enumerate(_family_order(d.family))}
    d = d.assign(_rank=d.family.map(rank))
    rows = []
    for (_, margin, run), g in d.groupby(["_rank", "margin", "run"], sort=True):
        r0 = g.iloc[0]
        row = {"Loss": family_name(r0.family) + _marks(r0), "Margin": f"{margin:g}",
               "Configuration": run, "Val acc": "–" if np.isnan(r0.val_acc) else f"{100 * r0.val_acc:.2f}"}
        for r in g.sort_values(["ways", "shots"]).itertuples():
            row[_col(r.ways, r.shots)] = _cell(r.mean, r.ci95, r.seeds, r.seed_sd)
        rows.append(row)
    return pd.DataFrame(rows)


def reference(df: pd.DataFrame) -> str | None:
    """The configuration with the best validation accuracy (seed mean); None if none was validated."""
    runs = df.drop_duplicates("run").dropna(subset=["val_acc"]).sort_values(["val_acc", "run"], ascending=[False, True])
    return None if runs.empty else runs.run.iloc[0]


def paired_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Per setting: every configuration against the reference (the study's first reproduced
    recipe for the setting's shots, else the best on validation), on matched seeds and the same
    episodes; Holm over the rows of a setting."""
    d = _main_view(df, protocol)
    recs = recipes(d)
    rows = []
    for (w, s), g in d.groupby(["ways", "shots"], sort=True):
        ref = recipe_run(recs[0], s) if recs and recipe_run(recs[0], s) else reference(d)
        top = g[g.run == ref]
        if top.empty:
            continue
        top = top.iloc[0]
        block = []
        for r in g[g.run != ref].sort_values(["mean", "run"], ascending=[False, True]).itertuples():
            seeds = sorted(set(r.seed_list) & set(top.seed_list))
            if not seeds:
                continue
            a = r.acc[[r.seed_list.index(k) for k in seeds]]
            b = top.acc[[top.seed_list.index(k) for k in seeds]]
            p = paired_crossed(a, b)
            block.append({"Setting": _col(w, s), "Configuration": r.run + _marks(r), "Reference": ref,
                          "Seeds": len(seeds), "Difference": _cell(p["diff"], p["diff_ci95"]), "p": p["p"]})
        if block:
            for b_, adj in zip(block, holm([b_["p"] for b_ in block])):
                b_["p"], b_["p Holm"] = f"{b_['p']:.2g}", f"{adj:.2g}"
            rows += block
    return pd.DataFrame(rows)


def write_tables(results: Path, out: Path | None = None) -> list[Path]:
    """Regenerate every table and plot from `results/records`; returns the paths written."""
    from .plots import curves_plot, margin_plot
    from .budget import write_budget
    from .verification import write_verification

    out = out or results
    df = load_records(results)
    conf = configurations(df)
    written = []

    def put(path: Path, text: str):
        atomic_write_text(path, text)
        written.append(path)

    for study, sd in conf.groupby("study", sort=True):
        folder = out / study
        folder.mkdir(parents=True, exist_ok=True)
        clf, dist = sd["main"].iloc[0]
        for protocol in sorted(sd.protocol.unique()):
            pd_ = sd[sd.protocol == protocol]
            main, bold = main_table(pd_, protocol)
            q = ", ".join(f"{_col(w, s)}: {qq} quer{'y' if qq == 1 else 'ies'}/class" for w, s, qq in
                          sorted({(w, s, qq) for w, s, qq in zip(pd_.ways, pd_.shots, pd_.queries)}))
            seeds = sorted(set(pd_.seeds))
            head = (f"# {study}: {protocol}, test accuracy % (mean ± 95% CI over {pd_.episodes.iloc[0]} episodes "
                    f"and {'/'.join(map(str, seeds))} training seed{'s' if seeds != [1] else ''}; {q})\n\n"
                    f"Classifier: {clf}, distance: {dist}. Each loss at its configuration with the best "
                    f"validation accuracy (mean over seeds); best of our rows per column in bold. {METHOD}; "
                    "sd: standard deviation of the per-seed means.\n\n")
            notes = [n for mark, n in ((NO_VAL_MARK, NO_VAL_NOTE), (COLLAPSED_MARK, COLLAPSED_NOTE))
                     if main.Loss.str.contains(mark.strip()).any()]
            put(folder / f"main-{protocol}.md", head + _markdown(main) + "".join(f"\n{n}\n" for n in notes))
            put(folder / f"main-{protocol}.tex", _latex(main, bold))
            put(folder / f"main-{protocol}.csv", main.to_csv(index=False))
            mt = margin_table(pd_, protocol)
            if not mt.empty:
                put(folder / f"margins-{protocol}.md", f"# {study}: accuracy against margin ({protocol}, {clf}, "
                    f"{dist}; {METHOD})\n\n" + _markdown(mt))
                margin_plot(_main_view(pd_, protocol), protocol, folder / f"margins-{protocol}.png", FAMILY_NAMES)
                written.append(folder / f"margins-{protocol}.png")
            pt = paired_table(pd_, protocol)
            recs = recipes(pd_)
            ref_text = (f"the reproduced recipe ({recs[0]['label']}) trained for the setting's shots, where it has one; "
                        "else the configuration with the best validation accuracy (mean over seeds)" if recs else
                        "the configuration with the best validation accuracy (mean over seeds), never chosen on test")
            if not pt.empty:
                put(folder / f"paired-{protocol}.md", f"# {study}: every configuration against the reference, "
                    f"same episodes ({protocol}, {clf}, {dist})\n\nReference: {ref_text}. Difference = configuration - "
                    "reference, accuracy points, per (seed, episode) on matched seeds, with its 95% CI "
                    "and p-value from the same crossed seeds x episodes variance; Holm correction over the rows "
                    "of each setting.\n\n" + _markdown(pt))
        runs = df[df.study == study]
        full = runs.drop(columns=["per_episode", "curve", "main", "versions", "reproduces", "budget"]).sort_values(
            ["protocol", "run", "seed", "ways", "shots", "classifier", "distance"])
        put(folder / "all-scores.csv", full.to_csv(index=False, float_format="%.6f"))
        curves_plot(runs, folder / "curves.png")
        written.append(folder / "curves.png")
    written += write_verification(results, out, put, _markdown)
    budget_plots, budget_lines = write_budget(results, out, df, put, _markdown)
    written += budget_plots
    put(out / "README.md", _readme(results, df, conf, budget_lines))
    return written


def reproduced(conf: pd.DataFrame) -> list[dict]:
    """Every published cell a study's recipes reproduce: study, label, protocol, setting, the
    published value, oneshot's seed mean and crossed CI, seeds, and whether the published value
    lies inside the CI."""
    out = []
    for study, sd in conf.groupby("study", sort=True):
        for protocol in sorted(sd.protocol.unique()):
            d = _main_view(sd, protocol)
            published = {name: cells for name, _, cells in published_rows(d.dataset.iloc[0], protocol)}
            for r in recipes(d):
                for (w, s), value in sorted(published.get(r["published"], {}).items()):
                    hit = d[(d.run == recipe_run(r, s)) & (d.ways == w) & (d.shots == s)] if recipe_run(r, s) else d[:0]
                    if hit.empty:
                        continue
                    h, pub = hit.iloc[0], published_value(value)
                    out.append({"study": study, "label": r["label"], "protocol": protocol, "setting": _col(w, s),
                                "run": h.run, "published": pub, "mean": h["mean"], "ci95": h["ci95"],
                                "seeds": h.seeds, "inside": abs(pub - h["mean"]) <= h["ci95"]})
    return out


def _reproduced_lines(conf: pd.DataFrame) -> list[str]:
    rows = reproduced(conf)
    if not rows:
        return []
    lines = ["Reproduced published numbers (published; oneshot's mean over seeds ± 95% crossed CI; whether the "
             "published value lies inside the CI; the gap, and whether oneshot is within 0.5 points below it or above):", ""]
    for r in rows:
        gap = 100 * (r["mean"] - r["published"])
        lines.append(f"- {r['study']}, {r['label']}, {r['protocol']} {r['setting']} (run {r['run']}): published "
                     f"{100 * r['published']:.1f}; reproduced {100 * r['mean']:.2f} ± {100 * r['ci95']:.2f} "
                     f"({r['seeds']} seed{'s' if r['seeds'] > 1 else ''}); published value inside the CI: "
                     f"{'yes' if r['inside'] else 'no'}; gap {gap:+.2f} points "
                     f"({'within' if gap >= -0.5 else 'not within'} 0.5 points)")
    return lines + [""]


def _how(argv: list[str]) -> list[str]:
    """The flags of a benchmark's command line that say how its runs were executed."""
    keep = ("--executor", "--workers", "--cpus", "--gpus", "--device", "--precision")
    out = []
    for i, a in enumerate(argv):
        if a.split("=")[0] in keep:
            out += [a] if "=" in a or i + 1 == len(argv) else [a, argv[i + 1]]
    return out


def _readme(results: Path, df: pd.DataFrame, conf: pd.DataFrame, budget_lines: list[str] = ()) -> str:
    lines = ["# results/", "",
             "Generated by `oneshot benchmark` and `oneshot table`; never edited by hand. Every number comes "
             "from the records in `records/` (one JSON per run, protocol and setting, with config, seed, "
             "commit, versions, device, wall times and per-episode accuracies). Regenerate every table and "
             "plot from the records, byte for byte, with:", "", "    oneshot table results/ --out results/", ""]
    for path in records.files(results, records.BENCHMARKS):
        b = json.loads(path.read_text())
        studies = sorted({r.split("/")[0] for r in b["runs"]})
        sub = df[df.study.isin(studies)]
        train_s = sub.drop_duplicates(["study", "run", "seed"]).train_s.sum()
        embed_s = sub.drop_duplicates(["study", "run", "seed", "protocol"]).embed_s.sum()
        lines += [f"## Preset `{b['preset']}`", "", b.get("description", ""), "",
                  f"- command: `{b['command']}` (preset file `{b.get('preset_path', 'oneshot/presets/' + b['preset_file'])}`)"
                  + (f"; last run with `{' '.join(_how(b['argv']))}`" if _how(b.get("argv", [])) else ""),
                  f"- studies: {', '.join(studies)}; {len(b['runs'])} runs",
                  f"- training time, summed over runs: {train_s / 60:.1f} min; test-set embedding: "
                  f"{embed_s / 60:.1f} min; device: {sub.device.iloc[0] if len(sub) else b['device']}",
                  f"- wall time of the last `{b['command']}` (it trains only the runs without records): "
                  f"{b['wall_time_s_this_invocation'] / 60:.1f} min"
                  + (f", {b['runs_trained_this_invocation']} of {len(b['runs'])} runs trained"
                     if "runs_trained_this_invocation" in b else "")
                  + (" (stopped before its end; the same command continues)"
                     if b.get("invocation_finished") is False else ""),
                  f"- records: {sub.drop_duplicates(['study', 'run', 'seed']).shape[0]} of {len(b['runs'])} runs",
                  f"- commits of the runs: {', '.join(sorted(sub.commit.unique()))}",
                  f"- versions: {json.dumps(sub.versions.iloc[0] if len(sub) else b['versions'])}", ""]
        collapsed = conf[conf.study.isin(studies) & (conf.collapsed > 0)].drop_duplicates(["study", "run"])
        unchecked = sub[sub.pixels_val_acc.isna() & sub.val_acc.notna()].drop_duplicates(["study", "run", "seed"])
        if len(collapsed):
            lines += ["- collapsed (best validation accuracy of a seed not above raw pixels on the same "
                      "validation episodes): " + ", ".join(f"{r.study}/{r.run} ({r.collapsed} of {r.seeds} seeds)"
                                                           for r in collapsed.itertuples()), ""]
        if len(unchecked):
            lines += [f"- {len(unchecked)} runs were trained before runs recorded the raw-pixels validation "
                      "accuracy: the collapse check does not cover them", ""]
    reproduced_lines = _reproduced_lines(conf)
    if reproduced_lines or budget_lines:
        lines += ["## Published recipes, reproduced, and the budget", ""] + reproduced_lines + list(budget_lines)
    lines += ["## Files, per study folder", "",
              "- `main-<protocol>.{md,tex,csv}`: one row per loss at its best configuration (chosen on validation "
              "accuracy, mean over seeds), columns per setting as `mean ± 95% CI (S seeds, sd)`, best per "
              "column in bold, published anchors below (marked published, with their source).",
              f"- Intervals: {METHOD}. The mean is the mean of the per-seed means, every seed scored on the "
              "same test episodes; sd is the standard deviation of the per-seed means.",
              "- `margins-<protocol>.{md,png}`: accuracy against margin for each margin-based configuration, "
              "95% CI bars.",
              "- `paired-<protocol>.md`: every configuration against the reference (best on validation) on the "
              "same test episodes and matched seeds: mean difference with 95% CI and p-value from the same "
              "crossed variance, Holm-corrected per setting.",
              "- `curves.png`: training loss and validation accuracy of every run.",
              "- `verification-<protocol>.md`, `roc-<protocol>.png` (studies whose runs were scored for "
              "verification): ROC AUC, EER and TAR at FAR 0.1% and 1% on the same seeded same/different test "
              "pairs for every run, with 95% CIs, and the ROC curves.",
              "- `all-scores.csv`: every run x protocol x setting x classifier x distance.",
              "- `budget-<protocol>.{md,png}` (studies whose runs keep snapshots): test accuracy against training "
              "images, each loss at its best configuration on validation at every budget, ranked.", ""]
    return "\n".join(lines)
