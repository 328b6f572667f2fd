"""Tiny presets for the tests: studies the `small_omniglot` fixture trains in seconds, written once;
and one training step of a configuration (`training_step`).

    tiny_preset()                                        # one study "tiny": contrastive-m0.5 and proto
    tiny_preset(study("f", base={"steps": 2}), description="two runs", seeds=[0, 1])
    write_preset(tmp_path / "p.toml", study("x", eval={"episodes": 20}, runs=[contrastive(0.5)]))

A study's `base` and `eval` are changes to BASE and EVAL (a value None drops the key); its `runs`
replace RUNS; other keyword arguments are keys of the study's table. Keyword arguments of a preset
are its top-level keys (`seeds = [0, 1]`, `resources = {"cpus": 2}` as a table)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from oneshot.config import Config
from oneshot.data.episodes import generator
from oneshot.data.split import Split
from oneshot.registry import build_model
from oneshot.step import place, resolved, step_loss

# A P x K batch of 4 x 4 and 3-way validation episodes: what the tiny Omniglot's 24 training and
# 4 validation classes allow (the `small_omniglot` fixture); also the config of a tiny `train` call.
BASE = {"steps": 4, "batch_classes": 4, "batch_shots": 4, "val_every": 2, "val_ways": 3, "val_queries": 2,
        "val_episodes": 5}
EVAL = {"protocols": ["vinyals"], "settings": [[3, 1, 2]], "episodes": 10, "seed": 7,
        "classifiers": ["nearest-support"], "distances": ["euclidean"]}
PROTO = {"name": "proto", "loss": "proto"}


def contrastive(margin: float) -> dict:
    """A contrastive run (the default pair weighting) named like a preset's grid names it."""
    return {"name": f"contrastive-m{margin}", "loss": "contrastive", "margin": margin}


def triplet(margin: float) -> dict:
    """A triplet run (the default mining, batch-hard) named like a preset's grid names it."""
    return {"name": f"triplet-hard-m{margin}", "loss": "triplet", "margin": margin}


RUNS = (contrastive(0.5), PROTO)


def _changed(table: dict, changes: dict | None) -> dict:
    out = {**table, **(changes or {})}
    return {k: v for k, v in out.items() if v is not None}


def study(name: str = "tiny", base: dict | None = None, eval: dict | None = None, runs=RUNS, **keys) -> dict:
    """A `[[study]]` table: BASE and EVAL with `base` / `eval` applied, `runs` (dicts, one a run block)."""
    return {"name": name, **keys, "base": _changed(BASE, base), "eval": _changed(EVAL, eval), "runs": list(runs)}


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v) -> str:
    """A TOML value: booleans, numbers, strings, lists, dicts (inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML value for {v!r}")


def _table(header: str, table: dict) -> list[str]:
    return [header] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]


def tiny_preset(*studies: dict, description: str = "a tiny study", **header) -> str:
    """The TOML text of a preset of `studies` (default: one `study()`)."""
    top = {"description": description, **header}
    lines = [f"{_key(k)} = {_value(v)}" for k, v in top.items() if not isinstance(v, dict)]
    for k, v in top.items():
        if isinstance(v, dict):
            lines += _table(f"[{_key(k)}]", v)
    for st in studies or (study(),):
        lines += _table("[[study]]", {k: v for k, v in st.items() if k not in ("base", "eval", "runs")})
        lines += _table("[study.base]", st["base"]) + _table("[study.eval]", st["eval"])
        for run in st["runs"]:
            lines += _table("[[study.runs]]", run)
    return "\n".join(lines) + "\n"


def write_preset(path: Path, *studies: dict, **header) -> str:
    """Write `tiny_preset(*studies, **header)` to `path`; returns the path as a string (a preset name)."""
    path.write_text(tiny_preset(*studies, **header))
    return str(path)


# Worker processes (Ray's, Slurm's) import this from $PYTHONPATH (`worker_pythonpath`): the tiny Omniglot's sizes,
# patched into `oneshot.data.omniglot` as it is imported (as the `small_omniglot` fixture does here).
SITECUSTOMIZE = '''
import importlib.abc, importlib.machinery, sys

class _Tiny(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "oneshot.data.omniglot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.SETS = {"images_background": (6, 2), "images_evaluation": (4, 2)}
            module.VINYALS_SPLITS = {"train": 24, "val": 4, "test": 12, "trainval": 28}
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Tiny())
'''


def worker_pythonpath(folder: Path) -> str:
    """$PYTHONPATH for worker processes of a test (Ray's, Slurm's, drivers it starts): `folder`
    made to hold SITECUSTOMIZE, first, then this checkout and the current $PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    parts = [str(folder), str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def training_step(cfg: Config, split: Split) -> tuple[torch.Tensor, int, bool, bool | None]:
    """One Adam step of `cfg` (its precision resolved) on a batch of `split`, drawn, augmented and
    embedded as `oneshot.train` does -> (the loss, the batch's images, whether the encoder's
    parameters moved, whether the loss's own moved: None for a loss without parameters)."""
    cfg = resolved(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model, loss_fn = build_model(cfg, split.images.shape[1], split.n_classes)
    place(cfg, model, loss_fn)
    encoder, own = list(model.parameters()), list(loss_fn.parameters())
    before = [p.detach().clone() for p in encoder + own]
    opt = torch.optim.Adam(encoder + own, lr=cfg.lr)
    loss, n = step_loss(cfg, split, model, loss_fn, generator(cfg.seed))
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, encoder + own)]
    return loss.detach(), n, any(moved[:len(encoder)]), (any(moved[len(encoder):]) if own else None)


def interrupt_at_step(n: int, cfg: Config, out: Path, root: Path, monkeypatch) -> None:
    """Train `cfg` into `out` and stop it by a KeyboardInterrupt in its n-th step, as a killed run
    would stop (after the checkpoint of the last validation before it)."""
    import pytest

    from oneshot import step as step_mod
    from oneshot import train as train_mod

    calls = {"n": 0}
    real = step_mod.batch_loss

    def dies(*a):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a)

    with monkeypatch.context() as m:
        m.setattr(step_mod, "batch_loss", dies)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train(cfg, out, root, progress=False)
