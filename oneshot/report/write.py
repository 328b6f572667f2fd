"""`write_report`: every table, plot and the results README of a results folder, regenerated
from its records alone; the same records always give the same bytes."""

from __future__ import annotations

from pathlib import Path

from ..provenance import atomic_write_text
from .budget import budget_report
from .frames import configurations, load_records
from .readme import readme
from .tables import study_tables
from .tuning import tuned_vs_base, tuning_report
from .verification import verification_report


def write_report(results: Path, out: Path | None = None) -> list[Path]:
    """Read `results/records`, write each study folder's tables and plots and `README.md` under
    `out` (default: `results`); returns the paths written, texts before plots per job."""
    out = out or results
    df = load_records(results)
    conf = configurations(df)
    texts: dict[Path, str] = {}
    plots: list[Path] = []
    for study, sd in conf.groupby("study", sort=True):
        t, p = study_tables(study, df[df.study == study], sd, out / study)
        texts |= t
        plots += p
    t, p = verification_report(results, out)
    texts |= t
    plots += p
    t, p = tuning_report(results, out, {(r.study, r.run): r.family for r in df.itertuples()})
    texts |= t
    plots += p
    texts |= tuned_vs_base(conf, out)
    t, p, budget_lines = budget_report(results, out, df)
    texts |= t
    plots += p
    texts[out / "README.md"] = readme(results, df, conf, budget_lines)
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts) + plots
