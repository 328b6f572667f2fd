"""The tables of a study, from its configurations (`frames.configurations`): the main table
(one row per loss at its configuration best on validation, published rows below), the margin
table, and the paired table against the reference; `study_tables` renders a study folder's.

A configuration trained with S seeds, each scored on the same E test episodes, is summarised
from its accuracy matrix [S, E] by `stats.crossed` (seed and episode variance both in the
interval); comparisons use `stats.paired_crossed` on matched seeds and the same episodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..stats import holm, paired_crossed
from .frames import FAMILY_NAMES, _col, _main_view, family_name, recipe_run, recipes, scoring_text
from .published import published_rows
from .render import METHOD, cell, latex, markdown

NO_VAL_MARK = " †"
NO_VAL_NOTE = ("† trained without a validation split: no margin could be chosen without looking at test, "
               "so every configuration of this loss is shown.")
COLLAPSED_MARK = " ‡"
COLLAPSED_NOTE = ("‡ collapsed: the best validation accuracy of at least one seed does not beat raw pixels "
                  "(nearest support, Euclidean) on the same validation episodes.")


def _marks(row) -> str:
    return ((NO_VAL_MARK if np.isnan(row.val_acc) else "") + (COLLAPSED_MARK if row.collapsed else "")
            + (f" (tuned, {row.tuned} trials)" if row.tuned else ""))


def _family_order(families) -> list[str]:
    known = [f for f in FAMILY_NAMES if f in set(families)]
    return known + sorted(set(families) - set(known))


def best_runs(d: pd.DataFrame) -> pd.DataFrame:
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
    best = best_runs(d[~d.run.isin(in_recipes)])
    # our rows: (label, margin, batch, {setting: the run scored there})
    ours = [(family_name(b.family) + _marks(b), "–" if np.isnan(b.margin) else f"{b.margin:g}", b.batch,
             {c: b.run for c in setting_cols}) for b in best.itertuples()]
    for r in recs:
        runs = {c: recipe_run(r, c[1]) for c in setting_cols if recipe_run(r, c[1])}
        shapes = " / ".join(dict.fromkeys(d[d.run == run].batch.iloc[0] for run in runs.values() if (d.run == run).any()))
        ours.append((r["label"], "–", shapes, runs))
    hits = {}
    for i, (*_, runs) in enumerate(ours):
        for c, run in runs.items():
            hit = d[(d.run == run) & (d.ways == c[0]) & (d.shots == c[1])]
            if not hit.empty:
                hits[i, c] = hit.iloc[0]
    winners = {c: max((h["mean"] for (_, c2), h in hits.items() if c2 == c), default=np.nan) for c in setting_cols}
    # an Augment column only where the study's rows were trained with different augmentations
    augments = [" / ".join(dict.fromkeys(d[d.run.isin(runs.values())].augment)) for *_, runs in ours]
    show_augment = len(set(augments)) > 1
    rows, bold = [], set()
    for i, (label, margin, batch, _) in enumerate(ours):
        row = ({"Loss": label, "Margin": margin} | ({"Batch": batch} if recs else {})
               | ({"Augment": augments[i]} if show_augment else {}))
        for c in setting_cols:
            h = hits.get((i, c))
            if h is None:
                row[_col(*c)] = ""
                continue
            text = cell(h["mean"], h["ci95"], h["seeds"], h["seed_sd"], say_one=d.seeds.nunique() > 1)
            if h["mean"] == winners[c]:
                text, _ = f"**{text}**", bold.add((i, _col(*c)))
            row[_col(*c)] = text
        rows.append(row)
    for name, source, cells in published_rows(d.dataset.iloc[0], protocol):
        row = ({"Loss": f"{name} (published: {source})", "Margin": ""} | ({"Batch": ""} if recs else {})
               | ({"Augment": ""} if show_augment else {}))
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
            row[_col(r.ways, r.shots)] = cell(r.mean, r.ci95, r.seeds, r.seed_sd, say_one=d.seeds.nunique() > 1)
        rows.append(row)
    return pd.DataFrame(rows)


def reference(df: pd.DataFrame) -> str | None:
    """The configuration with the best validation accuracy (seed mean); None if none was validated."""
    runs = df.drop_duplicates("run").dropna(subset=["val_acc"]).sort_values(["val_acc", "run"], ascending=[False, True])
    return None if runs.empty else runs.run.iloc[0]


def matched(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The accuracy matrices [S, E] of configurations' rows `a` and `b` on their common seeds
    (S = 0 without one), in seed order."""
    seeds = sorted(set(a.seed_list) & set(b.seed_list))
    return a.acc[[a.seed_list.index(k) for k in seeds]], b.acc[[b.seed_list.index(k) for k in seeds]]


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
            a, b = matched(r, top)
            if not len(a):
                continue
            p = paired_crossed(a, b)
            block.append({"Setting": _col(w, s), "Configuration": r.run + _marks(r), "Reference": ref,
                          "Seeds": len(a), "Difference": cell(p["diff"], p["diff_ci95"]), "p": p["p"]})
        if block:
            for b_, adj in zip(block, holm([b_["p"] for b_ in block])):
                b_["p"], b_["p Holm"] = f"{b_['p']:.2g}", f"{adj:.2g}"
            rows += block
    return pd.DataFrame(rows)


def study_tables(study: str, runs: pd.DataFrame, sd: pd.DataFrame, folder: Path) -> tuple[dict[Path, str], list[Path]]:
    """The tables of one study for `folder`, from its records' rows `runs` (`frames.load_records`)
    and its configurations `sd`: {path: text} to write, and the plots drawn into `folder`
    (margins, training curves)."""
    from .plots import curves_plot, margin_plot

    texts: dict[Path, str] = {}
    plots: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    scoring = scoring_text(sd["main"].iloc[0])
    clf, dist, tf = sd["main"].iloc[0]
    where = f"{clf}, {dist}" + (f", {tf}" if tf != "UN" else "")
    for protocol in sorted(sd.protocol.unique()):
        pd_ = sd[sd.protocol == protocol]
        main, bold = main_table(pd_, protocol)
        q = ", ".join(f"{_col(w, s)}: {qq} quer{'y' if qq == 1 else 'ies'}/class" for w, s, qq in
                      sorted({(w, s, qq) for w, s, qq in zip(pd_.ways, pd_.shots, pd_.queries)}))
        seeds = sorted(set(pd_.seeds))
        head = (f"# {study}: {protocol}, test accuracy % (mean ± 95% CI over {pd_.episodes.iloc[0]} episodes "
                f"and {'/'.join(map(str, seeds))} training seed{'s' if seeds != [1] else ''}; {q})\n\n"
                f"{scoring}. Each loss at its configuration with the best "
                f"validation accuracy (mean over seeds); best of our rows per column in bold. {METHOD}; "
                "sd: standard deviation of the per-seed means.\n\n")
        notes = [n for mark, n in ((NO_VAL_MARK, NO_VAL_NOTE), (COLLAPSED_MARK, COLLAPSED_NOTE))
                 if main.Loss.str.contains(mark.strip()).any()]
        texts[folder / f"main-{protocol}.md"] = head + markdown(main) + "".join(f"\n{n}\n" for n in notes)
        texts[folder / f"main-{protocol}.tex"] = latex(main, bold)
        texts[folder / f"main-{protocol}.csv"] = main.to_csv(index=False)
        mt = margin_table(pd_, protocol)
        if not mt.empty:
            texts[folder / f"margins-{protocol}.md"] = (
                f"# {study}: accuracy against margin ({protocol}, {where}; {METHOD})\n\n" + markdown(mt))
            margin_plot(_main_view(pd_, protocol), protocol, folder / f"margins-{protocol}.png", FAMILY_NAMES)
            plots.append(folder / f"margins-{protocol}.png")
        pt = paired_table(pd_, protocol)
        recs = recipes(pd_)
        ref_text = (f"the reproduced recipe ({recs[0]['label']}) trained for the setting's shots, where it has one; "
                    "else the configuration with the best validation accuracy (mean over seeds)" if recs else
                    "the configuration with the best validation accuracy (mean over seeds), never chosen on test")
        if not pt.empty:
            texts[folder / f"paired-{protocol}.md"] = (
                f"# {study}: every configuration against the reference, same episodes ({protocol}, "
                f"{where})\n\nReference: {ref_text}. Difference = configuration - reference, accuracy points, per "
                "(seed, episode) on matched seeds, with its 95% CI and p-value from the same crossed seeds x "
                "episodes variance; Holm correction over the rows of each setting.\n\n" + markdown(pt))
    plain = (runs["transform"] == "UN").all()  # a study without transforms keeps the columns it always had
    one_augment = runs.augment.nunique() == 1  # likewise the augmentation, where every run had the same
    full = runs.drop(columns=["per_episode", "curve", "main", "versions", "reproduces", "budget", "fine_tune",
                              "base_study", "episode_seed"]
                     + (["transform"] if plain else []) + (["augment"] if one_augment else [])
                     + ([] if runs.tuned.any() else ["tuned"])).sort_values(
        ["protocol", "run", "seed", "ways", "shots", "classifier", "distance"] + ([] if plain else ["transform"]))
    texts[folder / "all-scores.csv"] = full.to_csv(index=False, float_format="%.6f")
    curves_plot(runs, folder / "curves.png")
    plots.append(folder / "curves.png")
    return texts, plots
