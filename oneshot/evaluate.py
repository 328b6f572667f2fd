"""Embed a split once, then score every episode from the cached embeddings by indexing.

Classifiers: `nearest-support` (1-NN over all N*K support items) and `nearest-prototype`
(nearest class mean of the K shots), under any distance of `oneshot.distances`.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from .errors import ConfigError
from .data.split import Split
from .distances import pairwise
from .precision import autocast
from .stats import summarize

CLASSIFIERS = ("nearest-support", "nearest-prototype")
# Episodes are scored in chunks so the gathered [chunk, N, K+Q, D] tensor stays near 256 MB.
_CHUNK_FLOATS = 1 << 26


@torch.no_grad()
def embed_split(
    encode: Callable[[torch.Tensor], torch.Tensor],
    split: Split,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    indices: torch.Tensor | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Embed every image of `split` (or only `indices`) once -> float32 [M, D] on the CPU.

    `encode` maps normalised float images [B, C, H, W] on `device` to embeddings [B, D];
    it runs under `precision` ("fp32", "bf16" or "fp16", see `oneshot.precision`).
    """
    idx = torch.arange(len(split.images)) if indices is None else indices
    idx = idx.to(split.images.device)
    out = []
    bar = tqdm(total=len(idx), desc=f"embedding {split.name}", unit="img", disable=not progress, leave=False)
    for start in range(0, len(idx), batch_size):
        x = split.to_float(split.images[idx[start:start + batch_size]]).to(device)
        if x.dim() == 4 and torch.device(device).type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            out.append(encode(x).float())
        bar.update(len(x))
    bar.close()
    return torch.cat(out).cpu()


def score_episodes(
    emb: torch.Tensor, episodes: torch.Tensor, n_shot: int,
    classifier: str = "nearest-support", distance: str = "euclidean",
) -> torch.Tensor:
    """Per-episode accuracy [E] (fractions) of classifying every query of each episode.

    emb: [M, D] embeddings of the split; episodes: [E, N, K+Q] indices into emb.
    """
    if classifier not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
    n_ep, n_way, width = episodes.shape
    n_query = width - n_shot
    if n_shot < 1 or n_query < 1:
        raise ConfigError(f"episodes of width {width} cannot hold {n_shot} shots and at least one query")
    chunk = max(1, _CHUNK_FLOATS // (n_way * width * emb.shape[1]))
    acc = []
    for start in range(0, n_ep, chunk):
        x = emb[episodes[start:start + chunk]]  # [e, N, K+Q, D]
        support, query = x[:, :, :n_shot], x[:, :, n_shot:].flatten(1, 2)  # query [e, N*Q, D]
        if classifier == "nearest-prototype":
            support = support.mean(2, keepdim=True)
        d = pairwise(query, support.flatten(1, 2), distance)  # [e, N*Q, N*S]
        pred = d.argmin(-1) // support.shape[2]
        truth = torch.arange(n_way).repeat_interleave(n_query)
        acc.append((pred == truth).float().mean(1))
    return torch.cat(acc)


def evaluate(
    encode: Callable[[torch.Tensor], torch.Tensor] | None,
    split: Split,
    episodes: torch.Tensor,
    n_shot: int,
    classifier: str = "nearest-support",
    distance: str = "euclidean",
    emb: torch.Tensor | None = None,
    **embed_kw,
) -> dict:
    """Embed (unless `emb` is given) and score -> summary dict with `per_episode` accuracies."""
    if emb is None:
        emb = embed_split(encode, split, **embed_kw)
    acc = score_episodes(emb, episodes, n_shot, classifier, distance)
    return {**summarize(acc.numpy()), "per_episode": acc.tolist()}
