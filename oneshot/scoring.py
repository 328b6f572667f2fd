"""How an encoder is scored: the evaluation spec and the one path from an encoder and a test
split to accuracies and verification scores. `oneshot eval` and every study run go through
`score_encoder`; a study's `[study.eval]` and `oneshot eval`'s flags both become an `EvalSpec`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch

from .data.episodes import test_episodes
from .data.protocols import fixed_task
from .data.split import Split
from .distances import METRICS
from .errors import OneshotError
from .evaluate import CLASSIFIERS, embed_split, score_episodes
from .features import TRANSFORMS, base_mean, transformed
from .stats import summarize
from .verification import PAIRS, pair_scores, sample_pairs, verification_metrics


def _whole(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _setting(x) -> bool:  # [ways >= 2, shots >= 1, queries >= 1]
    return isinstance(x, (list, tuple)) and len(x) == 3 and all(_whole(v, 1) for v in x) and x[0] >= 2


@dataclass(frozen=True)
class EvalSpec:
    """What an encoder is scored on: test episodes of each setting (ways, shots, queries) of each
    protocol, drawn with `seed`, scored by every classifier x distance x feature transform; the
    main ones are what a study's main tables show (default: the first of each list). A protocol
    with fixed episodes (`data.protocols.fixed_task`) is scored on its own task instead of `settings`.
    `verification_pairs` same/different test pairs are scored by the main distance (0: none);
    `reproduces` names published recipes a study reproduces (for its tables)."""

    protocols: tuple[str, ...]
    settings: tuple[tuple[int, int, int], ...] = ()
    episodes: int = 1000
    seed: int = 2026
    classifiers: tuple[str, ...] = ("nearest-support",)
    distances: tuple[str, ...] = ("euclidean",)
    transforms: tuple[str, ...] = ("UN",)
    main_classifier: str = ""
    main_distance: str = ""
    main_transform: str = ""
    verification_pairs: int = PAIRS
    reproduces: tuple[dict, ...] = ()

    @classmethod
    def from_dict(cls, d: dict, protocol: str | None = None, where: str = "[study.eval]") -> "EvalSpec":
        """A spec from its table form (a preset's `[study.eval]`, a record's "study_eval"), checked:
        any key it cannot score is refused with one line naming `where`. `protocol`: the default
        protocol list's one entry (a study's base protocol)."""
        if not isinstance(d, dict):
            raise OneshotError(f"{where} must be a table, got {d!r}")
        known = [f.name for f in fields(cls)]
        extra = sorted(set(d) - set(known))
        if extra:
            raise OneshotError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}; "
                               f"known keys: {', '.join(known)}")
        d = {"protocols": [protocol] if protocol else None} | d
        if not isinstance(d["protocols"], list) or not d["protocols"] or not all(isinstance(p, str) for p in d["protocols"]):
            raise OneshotError(f"{where}: protocols must be a non-empty list, got {d['protocols']!r}")
        only_fixed = all(fixed_task(p) for p in d["protocols"])
        listed = d.get("settings", [] if only_fixed else None)
        if listed is None:
            raise OneshotError(f"{where}: settings is required, e.g. settings = [[5, 1, 15], [20, 1, 5]] "
                               "(ways, shots, queries per class)")
        bad = [x for x in listed if not _setting(x)] if isinstance(listed, list) and (listed or only_fixed) else [listed]
        if bad:
            raise OneshotError(f"{where}: settings must be a non-empty list of [ways, shots, queries]: an episode "
                               f"needs at least 2 ways, 1 shot and 1 query, got {bad[0]!r}")
        for key, allowed in (("classifiers", CLASSIFIERS), ("distances", METRICS), ("transforms", TRANSFORMS)):
            v = d.get(key, list(getattr(cls, key)))
            if not (isinstance(v, list) and v and all(x in allowed for x in v)):
                raise OneshotError(f"{where}: {key} must be a non-empty list of {', '.join(allowed)}; got {v!r}")
        for key, among in (("main_classifier", "classifiers"), ("main_distance", "distances"),
                           ("main_transform", "transforms")):
            listed_among = d.get(among, list(getattr(cls, among)))
            if key in d and d[key] not in listed_among:
                raise OneshotError(f"{where}: {key} = {d[key]!r} is not among {among} = {listed_among}: its "
                                   "tables would have no scores")
        for key, lo in (("episodes", 1), ("seed", 0), ("verification_pairs", 0)):
            if key in d and not _whole(d[key], lo):
                raise OneshotError(f"{where}: {key} must be a whole number >= {lo}, got {d[key]!r}")
        if not isinstance(d.get("reproduces", []), list):
            raise OneshotError(f"{where}: reproduces must be a list of tables, got {d['reproduces']!r}")
        tupled = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                  for k, v in d.items()}
        spec = cls(**tupled)
        return spec.with_main()

    def with_main(self) -> "EvalSpec":
        """The same spec with the main classifier, distance and transform spelt out."""
        return replace(self, main_classifier=self.main_classifier or self.classifiers[0],
                        main_distance=self.main_distance or self.distances[0],
                        main_transform=self.main_transform or self.transforms[0])

    def to_dict(self) -> dict:
        """The table form (lists), as stored in records under "study_eval"."""
        return {k: ([list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @property
    def main(self) -> tuple[str, str, str]:
        """(classifier, distance, transform) of the main tables."""
        return self.main_classifier, self.main_distance, self.main_transform

    def settings_for(self, protocol: str) -> list[tuple[int, int, int]]:
        """(ways, shots, queries) a protocol is scored on: its fixed task, else the spec's settings."""
        task = fixed_task(protocol)
        return [task] if task else [tuple(s) for s in self.settings]

    def scorings(self) -> list[tuple[str, str, str]]:
        """Every (classifier, distance, transform) a setting is scored by."""
        return list(itertools.product(self.classifiers, self.distances, self.transforms))

    def main_only(self) -> "EvalSpec":
        """The spec narrowed to the main scoring, without verification (budget snapshots)."""
        c, d, t = self.main
        return replace(self, classifiers=(c,), distances=(d,), transforms=(t,), verification_pairs=0)


@dataclass
class Score:
    """One setting scored one way: per-episode accuracies `acc` [E] (fractions)."""

    ways: int
    shots: int
    queries: int
    classifier: str
    distance: str
    transform: str
    acc: torch.Tensor
    score_s: float

    def summary(self) -> dict:
        """mean, CIs, std and episodes (`stats.summarize`) and the per-episode accuracies."""
        return {**summarize(self.acc.numpy()), "per_episode": [round(a, 6) for a in self.acc.tolist()]}


@dataclass
class Scored:
    """Everything `score_encoder` measured on one protocol's test split."""

    scores: list[Score]
    embed_s: float
    verification: dict | None  # {scorer: verification_metrics(...)}; None when not scored
    verify_s: float = 0.0


def score_encoder(encode: Callable[[torch.Tensor], torch.Tensor], split: Split, protocol: str, spec: EvalSpec,
                  base: Callable[[], Split] | None = None, koch_head: Callable | None = None, device="cpu", precision: str = "fp32",
                  progress: bool = False) -> Scored:
    """Score an encoder (normalised images [B, C, H, W] -> embeddings [B, D]) on `split`, a test
    split of `protocol`: embed it once, then every setting, classifier, distance and transform of
    `spec` on its seeded episodes; then verification pairs (not for fixed episodes), by the
    main distance and, for a Koch run, by its head (`koch_head(dim)` gives it). `base()` gives the training
    split whose mean feature CL2N subtracts (embedded once, only when CL2N is asked for)."""
    embed_kw = dict(device=device, progress=progress, precision=precision)
    t0 = time.perf_counter()
    emb = embed_split(encode, split, **embed_kw)
    embed_s = time.perf_counter() - t0

    def mean_of():
        if base is None:
            raise OneshotError("transform CL2N needs the training split the encoder learnt from")
        return base_mean(encode, base(), **embed_kw)

    feats = transformed(emb, spec.transforms, mean_of)
    scores = []
    for ways, shots, queries in spec.settings_for(protocol):
        episodes, (ways, shots, queries) = test_episodes(split, protocol, ways, shots, queries, spec.episodes, spec.seed)
        for c, d, t in spec.scorings():
            t1 = time.perf_counter()
            acc = score_episodes(feats[t], episodes, shots, c, d)
            scores.append(Score(ways, shots, queries, c, d, t, acc, time.perf_counter() - t1))
    if split.episodes is not None or spec.verification_pairs == 0:
        return Scored(scores, embed_s, None)
    t0 = time.perf_counter()
    pairs, same = sample_pairs(split.labels, spec.verification_pairs, spec.seed)
    scorers = {spec.main_distance: None} | ({"koch-head": koch_head(emb.shape[1])} if koch_head else {})
    verification = {name: verification_metrics(pair_scores(emb, pairs, name, head), same.numpy(), seed=spec.seed)
                    for name, head in scorers.items()}
    return Scored(scores, embed_s, verification, time.perf_counter() - t0)
