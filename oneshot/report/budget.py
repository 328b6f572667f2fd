"""Accuracy against training budget: the budget table and figure of a study whose runs keep
snapshots (`snapshot_images`, scored into `records/<study>/<configuration>/seed<k>/budget/<N>/`).

A budget is a number of training images. At a snapshot budget a run is represented by the best
checkpoint (on validation) it had kept when it had seen that many images, which is what a run
capped there keeps; at its own cap, by its final record. Per budget and setting, each loss is
represented by its configuration with the best validation accuracy at that budget (seed mean;
margins are chosen again at every budget, never on test), a reproduced recipe by its run for the
setting's shots; losses are ranked by test accuracy, the seed mean with its crossed CI.
A fine-tune (a second stage from a trained encoder) is not a point on this axis: the main and
paired tables compare it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .published import published_rows, published_value
from .render import markdown
from ..stats import crossed, paired_crossed
from ..study.records import BUDGETS
from .frames import _col, _main_view, family_name, load_records, recipe_run, recipes



def budget_frame(results: Path, df: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, loss, configuration, budget, setting) for the studies with budget
    records: `loss` (a row label), `val_acc` (seed mean at that budget), `mean`, `ci95`, `seeds`,
    `acc` ({seed: per-episode accuracies [E]}, for paired comparisons).
    `df` is `load_records(results)`, whose main scores give each run's point at its cap."""
    snaps = load_records(results, BUDGETS)
    snaps = snaps[~snaps.fine_tune] if len(snaps) else snaps
    if snaps.empty:
        return pd.DataFrame()
    studies = set(snaps.study)
    final = df[df.study.isin(studies) & ~df.fine_tune]
    final = pd.concat([_main_view(g, p) for (_, p), g in final.groupby(["study", "protocol"])])
    both = pd.concat([snaps, final], ignore_index=True)
    rows = []
    for (study, protocol, run, budget, w, s), g in both.groupby(["study", "protocol", "run", "budget", "ways", "shots"]):
        g = g.sort_values("seed")
        c = crossed(np.stack(g.per_episode.to_numpy()))
        first = g.iloc[0]
        rows.append({"study": study, "dataset": first.dataset, "protocol": protocol, "run": run, "budget": int(budget), "ways": w, "shots": s,
                     "family": first.family, "reproduces": first.reproduces, "val_acc": g.val_acc.mean(),
                     "mean": c["mean"], "ci95": c["ci95"], "seeds": c["seeds"],
                     "acc": dict(zip(g.seed, g.per_episode))})
    return pd.DataFrame(rows)


def losses_at_budgets(b: pd.DataFrame) -> pd.DataFrame:
    """Per (study, protocol, budget, setting) one row per loss: a recipe's run for the setting's
    shots, else the family's configuration best on validation at that budget; `rank` 1 = best test
    accuracy."""
    out = []
    for _, g in b.groupby(["study", "protocol", "budget", "ways", "shots"], sort=True):
        recs = recipes(g)
        in_recipes = {run for r in recs for run in r["runs"].values()}
        picked = []
        for r in recs:
            hit = g[g.run == recipe_run(r, g.shots.iloc[0])]
            picked += [hit.iloc[0].to_dict() | {"loss": r["label"]}] if len(hit) else []
        rest = g[~g.run.isin(in_recipes)]
        for fam, f in rest.groupby("family", sort=True):
            best = f.sort_values(["val_acc", "run"], ascending=[False, True]).iloc[0]
            picked.append(best.to_dict() | {"loss": family_name(fam)})
        if not picked:  # a recipe without its run for these shots (yet), and no other loss
            continue
        block = pd.DataFrame(picked).sort_values(["mean", "loss"], ascending=[False, True])
        out.append(block.assign(rank=np.arange(1, len(block) + 1)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _images(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.0f}k" if n >= 10_000 else str(n)


def rank_table(ranked: pd.DataFrame) -> pd.DataFrame:
    """Losses x (setting, budget): `rank. accuracy ± CI (configuration)`."""
    cols = sorted({(w, s, n) for w, s, n in zip(ranked.ways, ranked.shots, ranked.budget)})
    rows = []
    for loss, g in ranked.groupby("loss", sort=False):
        row = {"Loss": loss}
        for w, s, n in cols:
            hit = g[(g.ways == w) & (g.shots == s) & (g.budget == n)]
            row[f"{_col(w, s)} @ {_images(n)}"] = "" if hit.empty else (
                f"{hit['rank'].iloc[0]}. {100 * hit['mean'].iloc[0]:.2f} ± {100 * hit.ci95.iloc[0]:.2f} "
                f"({hit.run.iloc[0]})")
        rows.append(row)
    first = ranked[ranked.budget == ranked.budget.min()]
    order = first.groupby("loss")["rank"].mean().sort_values()
    return pd.DataFrame(rows).set_index("Loss").loc[[l for l in order.index] +
                                                    sorted(set(ranked.loss) - set(order.index))].reset_index()


def _paired(a: pd.Series, b: pd.Series) -> str:
    """`a` against `b` (rows of one budget) on their common seeds and the same episodes: the
    difference in points with its 95% CI and p-value (`stats.paired_crossed`, not adjusted)."""
    seeds = sorted(set(a["acc"]) & set(b["acc"]))
    if not seeds:
        return "no seed in common: not paired"
    d = paired_crossed(np.stack([a["acc"][k] for k in seeds]), np.stack([b["acc"][k] for k in seeds]))
    verdict = "significant" if d["p"] < 0.05 else "within the CI"
    return (f"{100 * d['diff']:+.2f} ± {100 * d['diff_ci95']:.2f}, p {d['p']:.2g}, "
            f"{len(seeds)} seed{'s' * (len(seeds) > 1)}: {verdict}")


def flips(ranked: pd.DataFrame) -> list[str]:
    """Per setting, the pairs of losses whose order at the smallest budget is reversed at the
    largest, each with its paired difference (the first loss minus the second) at both budgets."""
    out = []
    for (w, s), g in ranked.groupby(["ways", "shots"], sort=True):
        lo, hi = g[g.budget == g.budget.min()], g[g.budget == g.budget.max()]
        r_lo, r_hi = dict(zip(lo.loss, lo["rank"])), dict(zip(hi.loss, hi["rank"]))
        common = sorted(set(r_lo) & set(r_hi), key=lambda l: r_lo[l])
        at_lo, at_hi = lo.set_index("loss"), hi.set_index("loss")
        for i, a in enumerate(common):
            for b_ in common[i + 1:]:
                if r_hi[a] > r_hi[b_]:
                    out.append(f"{_col(w, s)}: {a} ahead of {b_} at {_images(int(g.budget.min()))} "
                               f"({_paired(at_lo.loc[a], at_lo.loc[b_])}), behind it at "
                               f"{_images(int(g.budget.max()))} ({_paired(at_hi.loc[a], at_hi.loc[b_])})")
    return out


def _published(g: pd.DataFrame, protocol: str) -> dict:
    """{(ways, shots): [(label, accuracy)]} of the published rows the study's recipes reproduce."""
    names = {r["published"] for r in recipes(g)}
    out: dict = {}
    for name, source, cells in published_rows(g.dataset.iloc[0], protocol):
        if name in names:
            for c, v in cells.items():
                out.setdefault(c, []).append((f"{name}, {source}", published_value(v)))
    return out


def budget_report(results: Path, out: Path, df: pd.DataFrame) -> tuple[dict[Path, str], list[Path], list[str]]:
    """`budget-<protocol>.md` and `budget-<protocol>.png` for each study folder under `out` with
    budget records: ({path: text} to write, the plots drawn, README lines: the rankings that
    flip between budgets)."""
    from .plots import budget_plot

    b = budget_frame(results, df)
    texts: dict[Path, str] = {}
    plots: list[Path] = []
    lines: list[str] = []
    if b.empty:
        return texts, plots, lines
    for (study, protocol), g in b.groupby(["study", "protocol"], sort=True):
        ranked = losses_at_budgets(g)
        budgets = ", ".join(_images(n) for n in sorted(set(g.budget)))
        texts[out / study / f"budget-{protocol}.md"] = (
            f"# {study}: {protocol}, test accuracy % against training images ({budgets})\n\n"
            "Per budget and setting each loss at its configuration with the best validation accuracy at that "
            "budget (a reproduced recipe: its run for the setting's shots); cell: rank by test accuracy, mean over "
            "seeds ± 95% crossed CI, the configuration. At a budget below a run's cap: the best checkpoint on "
            "validation the run had kept when it had seen that many images."
            + (" Fine-tunes (a second stage) are compared in the main and paired tables, not here."
               if df[df.study == study].fine_tune.any() else "") + "\n\n" + markdown(rank_table(ranked)))
        path = out / study / f"budget-{protocol}.png"
        one_shot = g[g.shots == 1]  # the figure: the 1-shot settings (Omniglot: 5w1s and 20w1s)
        budget_plot(one_shot if len(one_shot) else g, f"{study}: {protocol}", path, _published(g, protocol))
        plots.append(path)
        flipped = flips(ranked)
        lines += [f"Rankings against budget, {study} ({protocol}; `{study}/budget-{protocol}.md`): "
                  + ("no loss changes place between the smallest and the largest budget." if not flipped else
                     "between the smallest and the largest budget these orders flip:"), ""]
        lines += [f"- {f}" for f in flipped] + ([""] if flipped else [])
    return texts, plots, lines
