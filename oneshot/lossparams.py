"""The built-in losses' settings (a config's `loss_params`): their defaults, the values each may
take, and which miner and reduction each mining setting names.

The one source of the built-ins' defaults: `oneshot.losses` takes its functions' defaults from
`BUILTIN_PARAMS`, and a config fills its `loss_params` from it (`full_params`).
"""

from __future__ import annotations

import math

from . import miners, reduce
from .distances import METRICS
from .errors import ConfigError

# A built-in's loss_params hold exactly its settings below, the defaults filled in; a `pml:` or
# user loss gets its loss_params as given.
BUILTIN_PARAMS = {
    "contrastive": {"margin": 0.5, "pos_weight": "balanced", "distance": "euclidean"},
    "triplet": {"margin": 0.5, "mining": "hard", "distance": "euclidean"},
    "koch": {},
    "proto": {"distance": "euclidean"},  # ProtoNet's own is "sqeuclidean"
    "softmax": {"head": "linear", "scale": 10.0},  # cross-entropy through a head over the training classes
}
# The built-ins' settings may also be written at the top level of a config or preset (the form of
# records before version 3, and of margin grids); `config.from_dict` folds them into loss_params.
SHORT_FORM = ("margin", "mining", "pos_weight", "distance")

# contrastive `pos_weight` -> (pair miner, reduction of the per-pair terms)
PAIR_RULES = {
    "balanced": (miners.all_pairs, reduce.balanced),
    "mean": (miners.all_pairs, reduce.pooled),
    "active": (miners.all_pairs, reduce.active),
    "hard": (miners.hard_pairs, reduce.balanced),
}
# triplet `mining` -> (triplet miner, reduction of the per-triplet terms)
TRIPLET_RULES = {
    "all": (miners.all_triplets, reduce.nonzero),
    "hard": (miners.hard_triplets, reduce.mean),
    "semihard": (miners.semihard_triplets, reduce.mean),
}
# The values a built-in's string settings may take.
LOSS_CHOICES = {
    "mining": tuple(TRIPLET_RULES),  # triplet: batch-all, batch-hard, semi-hard
    "pos_weight": tuple(PAIR_RULES),  # contrastive: all pairs reduced three ways; hardest pairs
    "distance": METRICS,
    "head": ("linear", "cosine"),  # softmax
}


def full_params(loss: str, params: dict) -> dict:
    """A built-in's loss_params in full: its settings, the defaults filled in, a margin a float;
    the settings only other built-ins read are dropped (never read, never identity), any other
    key is refused. A `pml:` or user loss's params are returned as they are."""
    if loss not in BUILTIN_PARAMS or not isinstance(params, dict):
        return params
    own = BUILTIN_PARAMS[loss]
    unknown = sorted(set(params) - set(SHORT_FORM) - {k for b in BUILTIN_PARAMS.values() for k in b})
    if unknown:
        raise ConfigError(f"loss {loss!r} takes loss_params {', '.join(own) or '(none)'}, not {', '.join(unknown)}")
    out = own | {k: v for k, v in params.items() if k in own}
    if "margin" in out:
        out["margin"] = _positive("margin", out["margin"], zero_allowed=True)
    for key, allowed in LOSS_CHOICES.items():
        if key in out and not isinstance(out[key], str):
            raise ConfigError(f"loss_params {key!r} must be a string, got {out[key]!r}")
        if key in out and out[key] not in allowed:
            raise ConfigError(f"loss {loss!r}: loss_params {key!r} = {out[key]!r}: choose one of {', '.join(allowed)}")
    if "scale" in out:
        out["scale"] = _positive("scale", out["scale"], zero_allowed=False)
    return out


def _positive(key: str, v, zero_allowed: bool) -> float:
    """`v` as a float, refused unless a finite number > 0 (or >= 0)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
            v == 0 and not zero_allowed):
        raise ConfigError(f"loss_params {key!r} = {v!r} is out of range: it must be a number "
                          f"{'>=' if zero_allowed else '>'} 0")
    return float(v)
