"""How every report renders: table cells, Markdown and LaTeX tables, and the sentence on the
intervals that the tables quote."""

from __future__ import annotations

import numpy as np
import pandas as pd

METHOD = ("95% CI from the crossed seeds x episodes design: two-way random-effects variance of the grand "
          "mean (seed, episode and interaction parts), Cochran-Cox critical value; with one seed, "
          "1.96 s / sqrt(E) over episodes")


def cell(mean: float, ci: float, seeds: int = 1, seed_sd: float = np.nan, say_one: bool = False) -> str:
    """"mean ± ci" in percent; with several seeds, how many and the sd of their means; with one
    seed, "(1 seed)" when `say_one` (a table whose rows have different numbers of seeds)."""
    text = f"{100 * mean:.2f} ± {100 * ci:.2f}"
    if seeds == 1:
        return f"{text} (1 seed)" if say_one else text
    return f"{text} ({seeds} seeds, sd {100 * seed_sd:.2f})"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex(df: pd.DataFrame, bold: set[tuple[int, str]]) -> str:
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
