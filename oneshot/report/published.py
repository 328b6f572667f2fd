"""Published results the tables print beside oneshot's own (accuracy %, Conv-4 backbone unless
said, with the 95% CI where the paper gives one): (dataset, protocol) -> [(name, source, cells)],
cells {(ways, shots): "value"}; protocol None: every protocol of the dataset."""

from __future__ import annotations

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
        ("SimpleShot, CL2N", "Wang et al. 2019", {(5, 1): "49.69 ± 0.19", (5, 5): "66.92 ± 0.17"}),
        ("RFS-simple, Conv64F", "LibFewShot's rerun of Tian et al. 2020", {(5, 1): "47.97", (5, 5): "65.88"}),
    ],
}


def published_rows(dataset: str, protocol: str) -> list[tuple[str, str, dict]]:
    """The published rows for a protocol of a dataset (those of the dataset as a whole if none)."""
    return PUBLISHED.get((dataset, protocol), PUBLISHED.get((dataset, None), []))


def published_value(cell: str) -> float:
    """A published cell ("98.8", "49.42 ± 0.78") as a fraction."""
    return float(cell.split()[0]) / 100
