"""Tables, plots and the results README, generated from the records alone.

`write_tables(results)` reads `results/records/**.json` and writes, per study, the main table
(Markdown, LaTeX, CSV), the margin table and plot, the paired comparison table, the
training curves and a CSV of every score; then `results/README.md`. The same records always
give the same bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .provenance import atomic_write_text
from .stats import holm, paired

FAMILY_NAMES = {"contrastive-hard": "Contrastive, hardest pairs", "contrastive-active": "Contrastive, active pairs",
                "contrastive-balanced": "Contrastive, all pairs",
                "contrastive-mean": "Contrastive, all pairs (plain mean)",
                "triplet-hard": "Triplet, batch-hard", "triplet-semihard": "Triplet, semi-hard",
                "triplet-all": "Triplet, batch-all", "koch": "Koch BCE (Siamese)", "proto": "Prototypical"}

# Published Conv-4 results (accuracy %, with 95% CI where the paper gives one).
PUBLISHED = {
    ("omniglot", "vinyals"): [
        ("Matching Nets", "Vinyals et al. 2016", {(5, 1): "98.1", (5, 5): "98.9", (20, 1): "93.8", (20, 5): "98.5"}),
        ("Siamese, cosine", "Koch et al. 2015 as quoted by Vinyals et al. 2016",
         {(5, 1): "96.7", (5, 5): "98.4", (20, 1): "88.0", (20, 5): "96.5"}),
        ("ProtoNet", "Snell et al. 2017", {(5, 1): "98.8", (5, 5): "99.7", (20, 1): "96.0", (20, 5): "98.9"}),
    ],
    ("omniglot", "lake-20runs"): [("Koch Siamese net (105x105)", "Koch et al. 2015", {(20, 1): "92.0"}),
                                  ("Humans", "Lake et al. 2015", {(20, 1): "95.5"})],
    ("miniimagenet", None): [
        ("ProtoNet", "Snell et al. 2017", {(5, 1): "49.42 ± 0.78", (5, 5): "68.20 ± 0.66"}),
        ("Matching Nets (Ravi split)", "Ravi & Larochelle 2017", {(5, 1): "43.56 ± 0.84", (5, 5): "55.31 ± 0.73"}),
        ("Relation Net", "Sung et al. 2018", {(5, 1): "50.44 ± 0.82", (5, 5): "65.32 ± 0.70"}),
        ("Baseline++", "Chen et al. 2019", {(5, 1): "48.24 ± 0.75", (5, 5): "66.43 ± 0.63"}),
    ],
}


def family(cfg: dict) -> str:
    """The loss as a table row: triplet by mining, contrastive by pair weighting."""
    if cfg["loss"] == "triplet":
        return f"triplet-{cfg['mining']}"
    if cfg["loss"] == "contrastive":
        return f"contrastive-{cfg['pos_weight']}"
    return cfg["loss"]


def has_margin(cfg: dict) -> bool:
    return cfg["loss"] in ("contrastive", "triplet")


def load_records(results: Path) -> pd.DataFrame:
    """Every score record under `results/records` as one row (per_episode kept as an array)."""
    rows = []
    for path in sorted((results / "records").glob("*/*/*.json")):
        r = json.loads(path.read_text())
        cfg = r["config"]
        rows.append({
            "study": r["study"], "run": r["run"], "dataset": r["dataset"], "protocol": r["protocol"],
            "ways": r["ways"], "shots": r["shots"], "queries": r["queries"], "classifier": r["classifier"],
            "distance": r["distance"], "mean": r["mean"], "ci95": r["ci95"], "t_ci95": r["t_ci95"],
            "episodes": r["episodes"], "family": family(cfg), "margin": cfg["margin"] if has_margin(cfg) else np.nan,
            "val_acc": r["train"]["best_val_acc"], "train_s": r["train"]["wall_time_s"], "steps": cfg["steps"],
            "normalize": cfg["normalize"], "per_episode": np.asarray(r["per_episode"]),
            "main": (r["study_eval"].get("main_classifier", "nearest-support"),
                     r["study_eval"].get("main_distance", "euclidean")),
            "curve": r["train"].get("curve", ""), "commit": r["train"]["commit"],
            "versions": r["train"]["versions"], "device": r["train"]["device"], "embed_s": r["eval"]["embed_s"],
        })
    if not rows:
        raise FileNotFoundError(f"no records under {results / 'records'}")
    return pd.DataFrame(rows)


def _cell(mean: float, ci: float) -> str:
    return f"{100 * mean:.2f} ± {100 * ci:.2f}"


def _col(ways: int, shots: int) -> str:
    return f"{ways}w{shots}s"


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


def _best_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Per loss family, the run with the best validation accuracy (margins chosen on val, not test)."""
    runs = df.drop_duplicates("run")
    best = runs.loc[runs.groupby("family")["val_acc"].idxmax()]
    order = [f for f in FAMILY_NAMES if f in set(best["family"])]
    return best.set_index("family").loc[order].reset_index()


def main_table(df: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, set]:
    """One row per loss (best margin by validation), columns per setting, published rows below."""
    clf, dist = df["main"].iloc[0]
    d = df[(df.protocol == protocol) & (df.classifier == clf) & (df.distance == dist)]
    setting_cols = sorted({(w, s) for w, s in zip(d.ways, d.shots)}, key=lambda t: (t[0], t[1]))
    best = _best_runs(d)
    rows, bold = [], set()
    winners = {c: d[d.run.isin(best.run) & (d.ways == c[0]) & (d.shots == c[1])]["mean"].max() for c in setting_cols}
    for i, b in enumerate(best.itertuples()):
        row = {"Loss": FAMILY_NAMES.get(b.family, b.family),
               "Margin": "–" if np.isnan(b.margin) else f"{b.margin:g}"}
        for c in setting_cols:
            hit = d[(d.run == b.run) & (d.ways == c[0]) & (d.shots == c[1])]
            if hit.empty:
                row[_col(*c)] = ""
                continue
            h = hit.iloc[0]
            text = _cell(h["mean"], h["ci95"])
            if h["mean"] == winners[c]:
                text, _ = f"**{text}**", bold.add((i, _col(*c)))
            row[_col(*c)] = text
        rows.append(row)
    key = (d.dataset.iloc[0], protocol) if (d.dataset.iloc[0], protocol) in PUBLISHED else (d.dataset.iloc[0], None)
    for name, source, cells in PUBLISHED.get(key, []):
        row = {"Loss": f"{name} (published: {source})", "Margin": ""}
        row.update({_col(*c): cells.get(c, "") for c in setting_cols})
        rows.append(row)
    return pd.DataFrame(rows), bold


def margin_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    clf, dist = df["main"].iloc[0]
    d = df[(df.protocol == protocol) & (df.classifier == clf) & (df.distance == dist) & df.margin.notna()]
    rows = []
    for (fam, margin), g in d.groupby(["family", "margin"], sort=True):
        row = {"Loss": FAMILY_NAMES.get(fam, fam), "Margin": f"{margin:g}",
               "Val acc": f"{100 * g.val_acc.iloc[0]:.2f}"}
        for r in g.sort_values(["ways", "shots"]).itertuples():
            row[_col(r.ways, r.shots)] = _cell(r.mean, r.ci95)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Per setting: every configuration against the best one, on the same episodes."""
    clf, dist = df["main"].iloc[0]
    d = df[(df.protocol == protocol) & (df.classifier == clf) & (df.distance == dist)]
    rows = []
    for (w, s), g in d.groupby(["ways", "shots"], sort=True):
        g = g.sort_values(["mean", "run"], ascending=[False, True])
        top = g.iloc[0]
        block = []
        for r in g.iloc[1:].itertuples():
            p = paired(r.per_episode, top.per_episode)
            block.append({"Setting": _col(w, s), "Configuration": r.run, "Best": top.run,
                          "Difference": _cell(p["diff"], p["diff_ci95"]), "p (t-test)": p["p_t"],
                          "p (Wilcoxon)": p["p_wilcoxon"]})
        if block:
            adj = holm([b["p (t-test)"] for b in block])
            for b, a in zip(block, adj):
                b["p Holm"] = f"{a:.2g}"
                b["p (t-test)"] = f"{b['p (t-test)']:.2g}"
                b["p (Wilcoxon)"] = f"{b['p (Wilcoxon)']:.2g}"
            rows += block
    return pd.DataFrame(rows)


def _savefig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def margin_plot(df: pd.DataFrame, protocol: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clf, dist = df["main"].iloc[0]
    d = df[(df.protocol == protocol) & (df.classifier == clf) & (df.distance == dist) & df.margin.notna()]
    sets = sorted({(w, s) for w, s in zip(d.ways, d.shots)})
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.2), squeeze=False)
    for ax, (w, s) in zip(axes[0], sets):
        for fam, g in d[(d.ways == w) & (d.shots == s)].groupby("family", sort=True):
            g = g.sort_values("margin")
            ax.errorbar(g.margin, 100 * g["mean"], yerr=100 * g.ci95, marker="o", capsize=3,
                        label=FAMILY_NAMES.get(fam, fam))
        ax.set_title(f"{w}-way {s}-shot")
        ax.set_xlabel("margin")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy % (95% CI)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{d.study.iloc[0]}: accuracy against margin ({protocol}, {clf}, {dist})", fontsize=9, y=1.03)
    _savefig(fig, path)
    plt.close(fig)


def curves_plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = df.drop_duplicates("run").sort_values("run")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs.itertuples():
        c = pd.read_csv(io.StringIO(r.curve))
        a1.plot(c.step, c.loss, label=r.run)
        a2.plot(c.step, 100 * c.val_acc, label=r.run)
    a1.set(xlabel="step", ylabel="training loss (mean since last point)", yscale="log")
    a2.set(xlabel="step", ylabel="validation accuracy %")
    a2.legend(fontsize=6, ncol=2)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"{runs.study.iloc[0]}: training curves", fontsize=9)
    _savefig(fig, path)
    plt.close(fig)


def write_tables(results: Path, out: Path | None = None) -> list[Path]:
    """Regenerate every table and plot from `results/records`; returns the paths written."""
    out = out or results
    df = load_records(results)
    written = []

    def put(path: Path, text: str):
        atomic_write_text(path, text)
        written.append(path)

    for study, sd in df.groupby("study", sort=True):
        folder = out / study
        folder.mkdir(parents=True, exist_ok=True)
        clf, dist = sd["main"].iloc[0]
        for protocol in sorted(sd.protocol.unique()):
            pd_ = sd[sd.protocol == protocol]
            main, bold = main_table(pd_, protocol)
            q = ", ".join(f"{_col(w, s)}: {qq} quer{'y' if qq == 1 else 'ies'}/class" for w, s, qq in
                          sorted({(w, s, qq) for w, s, qq in zip(pd_.ways, pd_.shots, pd_.queries)}))
            head = (f"# {study}: {protocol}, test accuracy % (mean ± 95% CI over {pd_.episodes.iloc[0]} episodes; "
                    f"{q})\n\nClassifier: {clf}, distance: {dist}. Each loss at its margin with the best "
                    f"validation accuracy; best of our rows per column in bold.\n\n")
            put(folder / f"main-{protocol}.md", head + _markdown(main))
            put(folder / f"main-{protocol}.tex", _latex(main, bold))
            put(folder / f"main-{protocol}.csv", main.to_csv(index=False))
            mt = margin_table(pd_, protocol)
            if not mt.empty:
                put(folder / f"margins-{protocol}.md", f"# {study}: accuracy against margin ({protocol}, {clf}, "
                    f"{dist})\n\n" + _markdown(mt))
                margin_plot(pd_, protocol, folder / f"margins-{protocol}.png")
                written.append(folder / f"margins-{protocol}.png")
            pt = paired_table(pd_, protocol)
            if not pt.empty:
                put(folder / f"paired-{protocol}.md", f"# {study}: every configuration against the best, "
                    f"same episodes ({protocol}, {clf}, {dist})\n\nDifference = configuration - best, "
                    "accuracy points with 95% CI; paired t-test and Wilcoxon signed-rank p-values; "
                    "Holm correction over the rows of each setting.\n\n" + _markdown(pt))
        full = sd.drop(columns=["per_episode", "curve", "main", "versions"]).sort_values(
            ["protocol", "run", "ways", "shots", "classifier", "distance"])
        put(folder / "all-scores.csv", full.to_csv(index=False, float_format="%.6f"))
        curves_plot(sd, folder / "curves.png")
        written.append(folder / "curves.png")
    put(out / "README.md", _readme(results, df))
    return written


def _readme(results: Path, df: pd.DataFrame) -> str:
    lines = ["# results/", "",
             "Generated by `oneshot benchmark` and `oneshot table`; never edited by hand. Every number comes "
             "from the records in `records/` (one JSON per run, protocol and setting, with config, seed, "
             "commit, versions, device, wall times and per-episode accuracies). Regenerate every table and "
             "plot from the records, byte for byte, with:", "", "    oneshot table results/ --out results/", ""]
    for path in sorted((results / "records").glob("benchmark-*.json")):
        b = json.loads(path.read_text())
        studies = sorted({r.split("/")[0] for r in b["runs"]})
        sub = df[df.study.isin(studies)]
        train_s = sub.drop_duplicates(["study", "run"]).train_s.sum()
        embed_s = sub.drop_duplicates(["study", "run", "protocol"]).embed_s.sum()
        lines += [f"## Preset `{b['preset']}`", "", b.get("description", ""), "",
                  f"- command: `{b['command']}` (preset file `experiments/presets/{b['preset_file']}`)",
                  f"- studies: {', '.join(studies)}; {len(b['runs'])} runs",
                  f"- training time, summed over runs: {train_s / 60:.1f} min; test-set embedding: "
                  f"{embed_s / 60:.1f} min; device: {sub.device.iloc[0] if len(sub) else b['device']}",
                  f"- wall time of the last `{b['command']}` (it trains only the runs without records): "
                  f"{b['wall_time_s_this_invocation'] / 60:.1f} min"
                  + (f", {b['runs_trained_this_invocation']} of {len(b['runs'])} runs trained"
                     if "runs_trained_this_invocation" in b else ""),
                  f"- commits of the runs: {', '.join(sorted(sub.commit.unique()))}",
                  f"- versions: {json.dumps(sub.versions.iloc[0] if len(sub) else b['versions'])}", ""]
    lines += ["## Files, per study folder", "",
              "- `main-<protocol>.{md,tex,csv}`: one row per loss at its best margin (chosen on validation "
              "accuracy), columns per setting as `mean ± 95% CI`, best per column in bold, published anchors "
              "below (marked published, with their source).",
              "- `margins-<protocol>.{md,png}`: accuracy against margin for each margin-based loss, 95% CI bars.",
              "- `paired-<protocol>.md`: every configuration against the best on the same test episodes: mean "
              "difference with 95% CI, paired t-test and Wilcoxon p-values, Holm-corrected per setting.",
              "- `curves.png`: training loss and validation accuracy of every run.",
              "- `all-scores.csv`: every run x protocol x setting x classifier x distance.", ""]
    return "\n".join(lines)
