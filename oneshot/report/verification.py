"""The verification table and ROC plot of a study, from its runs' verification records
(`records/<study>/<configuration>/seed<k>/verification/<protocol>.json`, see `oneshot.study.runs`).

A configuration trained with S seeds is shown as the mean over seeds of each metric; its 95%
interval is 1.96 * sqrt(sd^2 / S + mean se^2): sd the standard deviation of the per-seed values,
se each seed's bootstrap standard error over pairs. Every seed is scored on the same pairs, so
their pair-sampling errors are not independent and are not divided by S (conservative); with
one seed the interval is 1.96 * se.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..study import records
from ..errors import OneshotError
from .render import markdown

METRICS = [("roc_auc", "ROC AUC %", True), ("eer", "EER %", False),
           ("tar@0.001", "TAR at FAR 0.1% (%)", True), ("tar@0.01", "TAR at FAR 1% (%)", True)]
METHOD = ("95% CI: 1.96 sqrt(sd^2/S + mean se^2) over the S seeds (sd: across-seed standard deviation; se: "
          "each seed's percentile-bootstrap standard error over the pairs, same and different pairs resampled "
          "apart, 1,000 resamples, scipy.stats.bootstrap); one seed: 1.96 se. ROC from scikit-learn's roc_curve")


def load_verification(results: Path) -> pd.DataFrame:
    """One row per (study, run, seed, protocol, scorer) with each metric's value and bootstrap se,
    and the ROC (true accept rates at the record's false accept rates). Empty if none."""
    rows, bad = [], []
    for path in records.files(results, records.VERIFICATION):
        try:
            r = json.loads(path.read_text())
            tr = r["train"]
            for scorer, m in r["scores"].items():
                row = {"study": r["study"], "run": r["run"], "seed": r["seed"], "protocol": r["protocol"],
                       "scorer": scorer, "pairs": m["pairs"]["same"] + m["pairs"]["different"],
                       "pair_seed": r["pair_seed"], "loss": r["config"]["loss"],
                       "collapsed": tr.get("best_val_acc", np.nan) <= tr.get("pixels_val_acc", np.nan),
                       "far": np.asarray(m["roc"]["far"]), "tar": np.asarray(m["roc"]["tar"])}
                entries = {"roc_auc": m["roc_auc"], "eer": m["eer"],
                           **{f"tar@{k}": v for k, v in m["tar_at_far"].items()}}
                for key, e in entries.items():
                    row[key], row[f"{key}_se"] = e["value"], e["se"]
                rows.append(row)
        except (OSError, ValueError, KeyError, TypeError):
            bad.append(path)
    if bad:
        raise OneshotError(f"{len(bad)} unreadable verification record{'s' if len(bad) > 1 else ''}:\n"
                           + "".join(f"  {p}\n" for p in bad) + "delete them and run `oneshot benchmark` again")
    return pd.DataFrame(rows)


def summarize_seeds(v: pd.DataFrame) -> pd.DataFrame:
    """Per (study, protocol, run, scorer): seed count, and for each metric the seed mean, its 95%
    half-width (module docstring) and across-seed sd; `tar` the seed-mean ROC."""
    rows = []
    for (study, protocol, run, scorer), g in v.groupby(["study", "protocol", "run", "scorer"], sort=True):
        row = {"study": study, "protocol": protocol, "run": run, "scorer": scorer, "seeds": len(g),
               "pairs": g.pairs.iloc[0], "loss": g.loss.iloc[0], "collapsed": bool(g.collapsed.any()),
               "far": g.far.iloc[0], "tar": np.mean(np.stack(g.tar.to_numpy()), 0)}
        for key, _, _ in METRICS:
            vals, se = g[key].to_numpy(float), g[f"{key}_se"].to_numpy(float)
            sd = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            row[key], row[f"{key}_sd"] = float(vals.mean()), sd
            row[f"{key}_ci95"] = 1.96 * float(np.sqrt(sd ** 2 / len(vals) + np.mean(se ** 2)))
        rows.append(row)
    return pd.DataFrame(rows)


def verification_table(s: pd.DataFrame) -> pd.DataFrame:
    """Rows of `summarize_seeds` for one study and protocol -> the table, best of each column in
    bold (highest AUC and TAR, lowest EER)."""
    s = s.sort_values(["roc_auc", "run", "scorer"], ascending=[False, True, True])
    best = {key: (s[key].max() if high else s[key].min()) for key, _, high in METRICS}
    rows = []
    for r in s.to_dict("records"):
        row = {"Configuration": r["run"] + (" ‡" if r["collapsed"] else ""), "Scored by": _scorer(r["scorer"]),
               "Seeds": r["seeds"]}
        for key, label, _ in METRICS:
            cell = f"{100 * r[key]:.2f} ± {100 * r[key + '_ci95']:.2f}"
            if r["seeds"] > 1:
                cell += f" (sd {100 * r[key + '_sd']:.2f})"
            row[label] = f"**{cell}**" if r[key] == best[key] else cell
        rows.append(row)
    return pd.DataFrame(rows)


def _scorer(name: str) -> str:
    return "Koch head (sigmoid)" if name == "koch-head" else f"{name} distance"


def verification_report(results: Path, out: Path) -> tuple[dict[Path, str], list[Path]]:
    """`verification-<protocol>.md` and `roc-<protocol>.png` for each study folder under `out`
    whose runs have verification records: {path: text} to write, and the plots drawn."""
    from .plots import roc_plot

    v = load_verification(results)
    texts: dict[Path, str] = {}
    plots: list[Path] = []
    if v.empty:
        return texts, plots
    for (study, protocol), s in summarize_seeds(v).groupby(["study", "protocol"], sort=True):
        raw = v[(v.study == study) & (v.protocol == protocol)]
        pairs = sorted(set(raw.pairs))
        head = (f"# {study}: {protocol}, verification (same class or not?) on the test split, %\n\n"
                f"{'/'.join(map(str, pairs))} pairs, half same-class, half different-class, drawn with seed "
                f"{raw.pair_seed.iloc[0]}: the same pairs for every run. A pair's score is minus the embedding "
                "distance (the study's main distance), or, for Koch runs, also the probability of Koch's own "
                f"head. Mean over seeds ± {METHOD}. Sorted by ROC AUC.\n\n")
        table = verification_table(s)
        note = ("\n‡ collapsed: the best validation accuracy of at least one seed does not beat raw pixels.\n"
                if table.Configuration.str.endswith("‡").any() else "")
        folder = out / study
        texts[folder / f"verification-{protocol}.md"] = head + markdown(table) + note
        roc_plot(s, f"{study}: ROC on {pairs[0]} test pairs ({protocol}; seed mean)", folder / f"roc-{protocol}.png")
        plots.append(folder / f"roc-{protocol}.png")
    return texts, plots
