"""The tuning report of a tuned study, from its searches' records alone
(`records/<study>/tune/<configuration>.json`, written by `oneshot.study.searches`; no storage):
`tuning-<study>.md` (per configuration the best validation accuracy, its values and the trials
complete / pruned / failed; Optuna's parameter importances where they can be computed) and
`tuning-<study>.png` (best-so-far validation accuracy against trial number, one line per loss);
and, for a tuned study copied from another (`from`), `tuned-vs-<base>-<protocol>.md`: each tuned
loss against the same loss untuned and against the base study's best, on matched seeds and the
same test episodes (`tuned_vs_base`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import OneshotError
from ..stats import holm, paired_crossed
from ..study import records
from .frames import _col, _main_view, family_name, scoring_text
from .render import METHOD, cell, markdown
from .tables import best_runs, matched, reference


def load_searches(results: Path) -> dict[str, list[dict]]:
    """Every search record of `results`, by study (sorted by configuration); unreadable ones are
    an OneshotError naming them."""
    out: dict[str, list[dict]] = {}
    bad = []
    for path in records.files(results, records.TUNES):
        try:
            rec = json.loads(path.read_text())
            out.setdefault(rec["study"], []).append(rec)
        except (OSError, ValueError, KeyError, TypeError):
            bad.append(path)
    if bad:
        raise OneshotError(f"{len(bad)} unreadable search record{'s' if len(bad) > 1 else ''} (cut short or corrupt):"
                           + "".join(f"\n  {p}" for p in bad))
    return {s: sorted(recs, key=lambda r: r["configuration"]) for s, recs in sorted(out.items())}


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _space(dim: dict) -> str:
    if "choices" in dim:
        return "{" + ", ".join(map(str, dim["choices"])) + "}"
    return f"[{_value(dim['low'])}, {_value(dim['high'])}]" + (" log" if dim.get("log") else "") + (
        f" step {_value(dim['step'])}" if dim.get("step") else "")


def _loss(rec: dict, families: dict) -> str:
    fam = families.get(rec["configuration"])
    return family_name(fam) if fam is not None else rec["configuration"]


def importances(rec: dict) -> dict[str, float] | None:
    """Optuna's parameter importances (its default evaluator) over the complete trials of a
    search, rebuilt in memory from its record; None where they cannot be computed (one
    parameter, too few complete trials, or Optuna missing)."""
    try:
        import optuna
    except ImportError:
        return None
    complete = [t for t in rec["trials"] if t["state"] == "COMPLETE"]
    if len(rec["space"]) < 2 or len(complete) < 3:
        return None
    dists = {}
    for d in rec["space"]:
        if "choices" in d:
            dists[d["key"]] = optuna.distributions.CategoricalDistribution(d["choices"])
        elif isinstance(d["low"], int):
            dists[d["key"]] = optuna.distributions.IntDistribution(d["low"], d["high"], log=d.get("log", False),
                                                                   step=d.get("step") or 1)
        else:
            dists[d["key"]] = optuna.distributions.FloatDistribution(d["low"], d["high"], log=d.get("log", False),
                                                                     step=d.get("step"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for t in complete:
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=dists, value=t["value"]))
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return None


def search_table(recs: list[dict], families: dict) -> pd.DataFrame:
    """One row per searched configuration: its trials by state, the best validation accuracy and its values."""
    rows = []
    for r in recs:
        states = [t["state"] for t in r["trials"]]
        best = r["best"]
        rows.append({"Loss": _loss(r, families), "Configuration": r["configuration"],
                     "Trials (complete / pruned / failed)": f"{r['planned']} ({states.count('COMPLETE')} / "
                                                            f"{states.count('PRUNED')} / {states.count('FAIL')})",
                     "Best val acc %": f"{100 * best['value']:.2f}", "Best trial": best["number"],
                     "Its values": ", ".join(f"{k} {_value(v)}" for k, v in best["params"].items()),
                     "Searched": ", ".join(f"{d['key']} {_space(d)}" for d in r["space"]),
                     "Time of its finished trials": _finished_time(r)})
    return pd.DataFrame(rows)


def _finished_time(rec: dict) -> str:
    """The wall time of a search's complete and pruned trials, one after another (a failed trial's
    ends when its staleness is noticed, so it does not count)."""
    times = [t["wall_s"] for t in rec["trials"] if t["state"] in ("COMPLETE", "PRUNED") and "wall_s" in t]
    return f"{sum(times) / 3600:.2f} h" if times else "–"


def _importance_table(recs: list[dict]) -> pd.DataFrame:
    rows = []
    for r in recs:
        imp = importances(r)
        text = ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) if imp else "not computable (one parameter or " \
            "fewer than 3 complete trials)"
        rows.append({"Configuration": r["configuration"], "Importance (share of the variance explained)": text})
    return pd.DataFrame(rows)


def best_so_far(rec: dict) -> np.ndarray:
    """The best validation accuracy of the complete trials up to each trial number (NaN before the first)."""
    out, best = [], np.nan
    for t in sorted(rec["trials"], key=lambda t: t["number"]):
        if t["state"] == "COMPLETE" and not (t["value"] <= best):
            best = t["value"]
        out.append(best)
    return np.asarray(out, dtype=float)


def tuning_report(results: Path, out: Path, families: dict[tuple, str]) -> tuple[dict[Path, str], list[Path]]:
    """The tuning table and plot of every tuned study of `results`, into `out/<study>/`;
    `families`: (study, configuration) -> its loss family (`frames.family`), for the loss names."""
    from .plots import tuning_plot

    texts: dict[Path, str] = {}
    plots: list[Path] = []
    for study, recs in load_searches(results).items():
        names = {r["configuration"]: families.get((study, r["configuration"])) for r in recs}
        spec = recs[0]["spec"]
        budget = f"{spec['images']} training images" if spec.get("images") else f"{spec['steps']} steps"
        head = (f"# {study}: equal tuning, per configuration (validation only, never test)\n\n"
                f"Optuna, TPE sampler (seed {spec['sampler_seed']}, {spec['startup_trials']} random trials first), "
                f"{spec['pruner']} pruner on {spec['validations']} validation points; one trial = {budget}"
                + (f", scored on {spec['val_episodes']} validation episodes" if spec.get("val_episodes") else "")
                + ". A trial's value is its best validation accuracy; the best complete trial is retrained with "
                "the study's seeds and budget and scored on test in the main table.\n\n")
        imp = _importance_table(recs)
        texts[out / study / f"tuning-{study}.md"] = (head + markdown(search_table(recs, names))
                                                     + "\n## Parameter importances (Optuna, complete trials)\n\n"
                                                     + markdown(imp))
        path = out / study / f"tuning-{study}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tuning_plot([(_loss(r, names), r["configuration"], best_so_far(r)) for r in recs], study, path)
        plots.append(path)
    return texts, plots


def _paired(a, b) -> tuple[np.ndarray, np.ndarray] | None:
    """The accuracies [S, E] of configurations' rows `a` and `b` on their common seeds; None
    without one, or when they were not scored on the same test episodes."""
    if b is None or (a.episodes, a.queries, a.episode_seed) != (b.episodes, b.queries, b.episode_seed):
        return None
    x, y = matched(a, b)
    return (x, y) if len(x) else None


def _before_after(a, b) -> str:
    """Test % of `b` -> `a` on their matched seeds (the seeds their difference is taken over)."""
    m = _paired(a, b)
    if m is None:
        return f"{'–' if b is None else f'{100 * b.mean:.2f}'} → {100 * a.mean:.2f}" + (
            "" if b is None else " (no matched seeds on the same episodes)")
    x, y = m
    return f"{100 * y.mean():.2f} → {100 * x.mean():.2f} ({len(x)} matched seed{'s' * (len(x) > 1)})"


def _crossed(a, b) -> dict | None:
    m = _paired(a, b)
    return paired_crossed(*m) if m else None


def _holm_column(rows: list[dict], key: str) -> None:
    """Holm over a setting's rows of one comparison: its `key` holds the pairing (a dict), None
    when there are no matched seeds, or the cell already written (why there is no pairing)."""
    done = [r for r in rows if isinstance(r[key], dict)]
    for r, adj in zip(done, holm([r[key]["p"] for r in done])):
        r[key] = f"{cell(r[key]['diff'], r[key]['diff_ci95'])} (p Holm {adj:.2g})"
    for r in rows:
        r[key] = r[key] if isinstance(r[key], str) else "– (no matched seeds on the same episodes)"


def against_base(tuned: pd.DataFrame, base: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Per setting and tuned loss of a tuned study (`tuned`: its `configurations` rows): the same
    loss untuned (the base study's configuration of that loss best on validation) and the base's
    best on validation, each paired with the tuned runs (tuned - other, matched seeds, same
    episodes; Holm over the setting's rows per comparison)."""
    t = _main_view(tuned, protocol)
    clf, dist, tf = t["main"].iloc[0]
    b = base[(base.protocol == protocol) & (base.classifier == clf) & (base.distance == dist)
             & (base["transform"] == tf)]
    rows = []
    for (w, s), g in t[t.tuned > 0].groupby(["ways", "shots"], sort=True):
        bs = b[(b.ways == w) & (b.shots == s)]
        if bs.empty:
            continue
        ref = bs[bs.run == reference(bs)].iloc[0]
        own = {r.family: r for r in best_runs(bs).itertuples()}
        block = []
        for r in g.sort_values(["mean", "run"], ascending=[False, True]).itertuples():
            u = own.get(r.family)
            block.append({"Setting": _col(w, s), "Loss": family_name(r.family), "Untuned": u.run if u else "–",
                          "Val % untuned → tuned": f"{100 * u.val_acc:.2f} → {100 * r.val_acc:.2f}" if u else "–",
                          "Test % untuned → tuned": _before_after(r, u),
                          "Tuned - untuned": _crossed(r, u) if u else f"– (no untuned run in {base.study.iloc[0]})",
                          f"Tuned - {ref.run} (the base's best)": _crossed(r, ref)})
        for key in ("Tuned - untuned", f"Tuned - {ref.run} (the base's best)"):
            _holm_column(block, key)
        rows += block
    return pd.DataFrame(rows)


def tuned_vs_base(conf: pd.DataFrame, out: Path) -> dict[Path, str]:
    """`out/<study>/tuned-vs-<base>-<protocol>.md` for every tuned study whose base study has
    records here; `conf` is `frames.configurations` of every record."""
    texts: dict[Path, str] = {}
    for study, sd in conf[conf.base_study.notna()].groupby("study", sort=True):
        base_name = sd.base_study.dropna().iloc[0]
        base = conf[conf.study == base_name]
        if base.empty:
            continue
        whole = conf[conf.study == study]
        for protocol in sorted(whole.protocol.unique()):
            table = against_base(whole, base, protocol)
            if table.empty:
                continue
            trials = sorted(set(sd.tuned))
            texts[out / study / f"tuned-vs-{base_name}-{protocol}.md"] = (
                f"# {study} against {base_name}: each loss tuned ({'/'.join(map(str, trials))} trials on "
                f"validation) against the same loss untuned, same test episodes ({protocol})\n\n"
                f"{scoring_text(whole['main'].iloc[0])}. Untuned: {base_name}'s configuration of the loss with the "
                "best validation accuracy (its main table's row); the base's best: its configuration with the best "
                "validation accuracy of all. Validation accuracy: seed mean of each run's best, on the study's "
                "validation episodes. Difference = tuned - other, accuracy points, per (seed, episode) on matched "
                f"seeds; {METHOD}; p from the same variance, Holm over the rows of a setting, per comparison.\n\n"
                + markdown(table))
    return texts
