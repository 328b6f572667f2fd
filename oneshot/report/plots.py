"""Plots of a study: accuracy against margin (with 95% CI bars) and the training curves."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..provenance import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    atomic_write(path, buf.getvalue())


def margin_plot(d: pd.DataFrame, protocol: str, path: Path, names: dict[str, str]) -> None:
    """Accuracy against margin, one line per loss family (and per other key that varies):
    `d` holds rows of `frames.configurations(...)` for one protocol, classifier and distance;
    `names` labels the families."""
    plt = _pyplot()
    clf, dist, tf = d["main"].iloc[0]
    d = d[d.margin.notna()]
    # configurations of a family that differ in more than the margin get lines of their own
    d = d.assign(line=[f"{f}{r.replace(f'm{m}', '')}" if r.replace(f"m{m}", "") != r else f
                       for f, r, m in zip(d.family, d.run, d.margin)])
    sets = sorted({(w, s) for w, s in zip(d.ways, d.shots)})
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.2), squeeze=False)
    for ax, (w, s) in zip(axes[0], sets):
        for line, g in d[(d.ways == w) & (d.shots == s)].groupby("line", sort=True):
            g = g.sort_values("margin")
            fam = g.family.iloc[0]
            label = names.get(fam, fam) + ("" if line == fam else f" ({g.run.iloc[0]})")
            ax.errorbar(g.margin, 100 * g["mean"], yerr=100 * g.ci95, marker="o", capsize=3, label=label)
        ax.set_title(f"{w}-way {s}-shot")
        ax.set_xlabel("margin")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy % (95% CI)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{d.study.iloc[0]}: accuracy against margin ({protocol}, {clf}, {dist}{'' if tf == 'UN' else ', ' + tf})", fontsize=9, y=1.03)
    _savefig(fig, path)
    plt.close(fig)


def curves_plot(df: pd.DataFrame, path: Path) -> None:
    """Training loss and validation accuracy of every run (`frames.load_records(...)` rows);
    the seeds of a configuration share a colour."""
    plt = _pyplot()
    runs = df.drop_duplicates(["run", "seed"]).sort_values(["run", "seed"])
    colours = {run: f"C{i % 10}" for i, run in enumerate(sorted(runs.run.unique()))}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs.itertuples():
        c = pd.read_csv(io.StringIO(r.curve))
        label = r.run if r.seed == runs[runs.run == r.run].seed.min() else None
        a1.plot(c.step, c.loss, label=label, color=colours[r.run], lw=1)
        a2.plot(c.step, 100 * c.val_acc, label=label, color=colours[r.run], lw=1)
    a1.set(xlabel="step", ylabel="training loss (mean since last point)", yscale="log")
    a2.set(xlabel="step", ylabel="validation accuracy %")
    a2.legend(fontsize=6, ncol=2)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"{runs.study.iloc[0]}: training curves", fontsize=9)
    _savefig(fig, path)
    plt.close(fig)


def roc_plot(s: pd.DataFrame, title: str, path: Path) -> None:
    """ROC curves, true accept rate against false accept rate (log), one per configuration and
    scorer: rows of `verification.summarize_seeds` with `far` and seed-mean `tar` arrays."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for i, r in enumerate(s.sort_values(["roc_auc", "run"], ascending=[False, True]).itertuples()):
        label = f"{r.run}{' (Koch head)' if r.scorer == 'koch-head' else ''}: AUC {100 * r.roc_auc:.2f}"
        ax.plot(r.far, 100 * r.tar, color=plt.cm.tab20(i % 20), lw=1.2, ls="--" if r.scorer == "koch-head" else "-",
                label=label)
    ax.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate %", xlim=(1e-4, 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(title, fontsize=9)
    _savefig(fig, path)
    plt.close(fig)


def budget_plot(b: pd.DataFrame, title: str, path: Path, published: dict | None = None) -> None:
    """Test accuracy against training images (log axis), one line per configuration with its
    95% crossed CI as a band, one panel per setting: rows of `budget.budget_frame`;
    `published` {(ways, shots): [(label, accuracy), ...]} draws dashed reference lines."""
    from matplotlib.ticker import FixedLocator, NullLocator

    plt = _pyplot()
    sets = sorted({(w, s) for w, s in zip(b.ways, b.shots)})
    budgets = sorted(set(b.budget))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.6), squeeze=False)
    colours = {run: plt.cm.tab10(i % 10) for i, run in enumerate(sorted(b.run.unique()))}
    for ax, (w, s) in zip(axes[0], sets):
        for run, g in b[(b.ways == w) & (b.shots == s)].groupby("run", sort=True):
            g = g.sort_values("budget")
            ax.plot(g.budget, 100 * g["mean"], marker="o", ms=3, lw=1.2, color=colours[run], label=run)
            ax.fill_between(g.budget, 100 * (g["mean"] - g.ci95), 100 * (g["mean"] + g.ci95),
                            color=colours[run], alpha=0.15, lw=0)
        for j, (label, value) in enumerate((published or {}).get((w, s), [])):
            ax.axhline(100 * value, color="0.3", ls="--", lw=0.9, dashes=(4, 2 + 2 * j), label=f"{label} (published)")
        ax.set(xscale="log", xlabel="training images seen", title=f"{w}-way {s}-shot")
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" for n in budgets])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy % (seed mean, 95% CI)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{title}: accuracy against training budget", fontsize=9, y=1.02)
    _savefig(fig, path)
    plt.close(fig)


def tuning_plot(lines: list[tuple[str, str, "object"]], study: str, path: Path) -> None:
    """Best-so-far validation accuracy against trial number, one line per searched configuration:
    `lines` holds (loss label, configuration, best-so-far values by trial number)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (label, conf, best) in enumerate(lines):
        ax.plot(range(len(best)), 100 * best, drawstyle="steps-post", marker="o", ms=3, color=f"C{i % 10}", lw=1.4,
                label=f"{label} ({conf})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial number", ylabel="best validation accuracy so far %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(f"{study}: equal tuning, best so far", fontsize=9)
    _savefig(fig, path)
    plt.close(fig)
