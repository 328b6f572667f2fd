"""Presets: every committed one loads, builds its runs and takes a training step with each; grids, seeds and
`extends`."""

import dataclasses
import json

import pytest
import torch

import tiny
from oneshot.study import presets as st_mod
from oneshot.data.load import load_split
from oneshot.data.split import Split
from oneshot.errors import OneshotError
from oneshot.registry import build_model

COMMITTED = sorted(p.stem for p in st_mod.PRESETS.glob("*.toml"))


def test_the_committed_presets_are_the_documented_ones():
    assert {"default", "smoke", "mini-cpu", "paper", "precision"} <= set(COMMITTED)


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_preset_loads_and_its_models_build(name):
    header, studies = st_mod.load_preset(name)
    assert header["description"] and studies
    for st in studies:
        assert st.runs and st.configurations
        assert len({(c.name, c.seed) for c in st.runs}) == len(st.runs)
        assert {c.name for c in st.runs} == set(st.configurations)
        assert st.eval.settings or st.eval.protocols == ("lake-20runs",)
        for cfg in {c.name: c for c in st.runs}.values():  # one model per configuration
            channels = 3 if cfg.dataset == "miniimagenet" else 1
            model, loss = build_model(cfg, channels, num_classes=64)
            emb = model.eval()(torch.zeros(2, channels, cfg.image_size, cfg.image_size))
            assert emb.shape[0] == 2 and callable(loss)


def random_split(channels: int, size: int, n_classes: int = 24, per_class: int = 20) -> Split:
    """A training split of random images (miniImageNet's 3 channels, at a small size)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_classes * per_class, channels, size, size), dtype=torch.uint8, generator=g)
    return Split("train", images, torch.arange(n_classes).repeat_interleave(per_class),
                 [f"class{i}" for i in range(n_classes)], mean=(0.5,) * channels, std=(0.25,) * channels)


@pytest.mark.parametrize("name", COMMITTED)
def test_every_configuration_of_every_committed_preset_takes_a_training_step(name, small_omniglot, one_thread):
    """Each configuration's loss, miner, encoder, precision and augmentation on its own batch shape
    (shots and supports as configured; at most 6 classes), on the tiny Omniglot or, for
    miniImageNet, random 3-channel images at 20x20."""
    splits = {}
    for st in st_mod.load_preset(name)[1]:
        for cfg in {c.name: c for c in st.runs}.values():
            label = f"{name}/{st.name}/{cfg.name}"
            if cfg.dataset == "miniimagenet":
                cfg = dataclasses.replace(cfg, image_size=20, init_from={})  # a fine-tune's step from its own init
            key = (cfg.dataset, cfg.protocol, cfg.train_split, cfg.image_size)
            if key not in splits:
                splits[key] = (random_split(3, cfg.image_size) if cfg.dataset == "miniimagenet" else
                               load_split(cfg.dataset, cfg.protocol, cfg.train_split, small_omniglot, cfg.image_size))
            split = splits[key]
            cfg = dataclasses.replace(cfg, batch_classes=min(cfg.batch_classes, 6, split.n_classes),
                                      batch_size=min(cfg.batch_size, 24))
            loss, n, encoder_moved, own_moved = tiny.training_step(cfg, split)
            assert n == cfg.batch_images and loss.dim() == 0 and torch.isfinite(loss), label
            assert encoder_moved, f"{label}: the encoder did not move"
            assert own_moved in (True, None), f"{label}: the loss's parameters did not move"


def _key(c):
    variant = {"contrastive": "pos_weight", "triplet": "mining"}.get(c.loss)
    return c.loss, c.loss_params.get(variant, ""), c.loss_params["margin"] if variant else None


def test_default_grid_seeds_and_baselines():
    _, (study,) = st_mod.load_preset("default")
    assert sorted({c.seed for c in study.runs}) == [0, 1, 2]
    assert len(study.runs) == 3 * len(study.configurations)
    keys = {_key(c) for c in study.runs}
    assert {("contrastive", "hard", m) for m in (0.5, 1.0, 1.5)} <= keys
    assert {("triplet", "hard", m) for m in (0.2, 0.5, 1.0)} <= keys
    assert {("triplet", "semihard", 0.5), ("triplet", "all", 0.5), ("koch", "", None), ("proto", "", None)} <= keys
    by_name = {c.name: c for c in study.runs}
    assert by_name["triplet-hard-m0.2"].loss_params == {"margin": 0.2, "mining": "hard", "distance": "euclidean"}
    assert not by_name["koch"].normalize and not by_name["proto"].normalize
    assert by_name["proto"].loss_params == {"distance": "sqeuclidean"}


def test_paper_extends_the_default_grid_and_cannot_drift_from_it():
    _, (default,) = st_mod.load_preset("default")
    _, studies = st_mod.load_preset("paper")
    by_dataset = {st.runs[0].dataset: st for st in studies}
    assert set(by_dataset) == {"omniglot", "miniimagenet"}
    ignore = {"steps", "augment", "precision", "val_every", "val_episodes", "dataset", "protocol", "image_size",
              "val_ways", "val_shots", "val_queries", "schedule", "lr_decay_every", "lr_decay", "patience",
              "snapshot_images"}

    def grid(st):
        return sorted(json.dumps({k: v for k, v in c.to_dict().items() if k not in ignore}, sort_keys=True)
                      for c in st.runs)

    for st in studies:
        assert grid(st) == grid(default)
        assert all(c.precision == "auto" for c in st.runs)
    mini, omni = by_dataset["miniimagenet"], by_dataset["omniglot"]
    assert all(c.image_size == 84 and c.augment == "natural" and c.steps == 40000 for c in mini.runs)
    assert mini.eval.episodes >= 600 and {(5, 1, 15), (5, 5, 15)} == set(mini.eval.settings)
    assert omni.eval.episodes >= 1000 and all(c.steps == 30000 for c in omni.runs)
    _, (reproduce,) = st_mod.load_preset("reproduce")
    rule = ("schedule", "lr_decay", "patience", "val_ways", "val_shots", "val_queries", "val_episodes")
    siamese = next(c for c in reproduce.runs if c.loss == "contrastive")  # the reproduce preset's rule, per image
    for c in omni.runs:
        assert {k: getattr(c, k) for k in rule} == {k: getattr(siamese, k) for k in rule}
        assert (c.val_every * c.batch_images, c.lr_decay_every * c.batch_images) == (
            siamese.val_every * siamese.batch_images, siamese.lr_decay_every * siamese.batch_images)
        assert c.snapshot_budgets == [256000, 1024000, 1440000]
    assert set(omni.eval.settings) == {(5, 1, 15), (5, 5, 15), (20, 1, 5), (20, 5, 5)}


def test_mini_cpu_keeps_its_committed_runs():
    _, (mini,) = st_mod.load_preset("mini-cpu")
    assert mini.name == "miniimagenet-cpu"
    # the three best on validation have three seeds, the others one
    seeds = {}
    for c in mini.runs:
        seeds.setdefault(c.name, []).append(c.seed)
    assert seeds == {"contrastive-m0.5": [0], "triplet-hard-m0.2": [0], "koch": [0], "proto": [0],
                     "contrastive-allpairs-m1.0": [0, 1, 2], "triplet-all-m0.5": [0, 1, 2],
                     "triplet-semihard-m0.5": [0, 1, 2]}
    assert all(c.dataset == "miniimagenet" and c.image_size == 84 and c.augment == "natural" for c in mini.runs)
    assert {_key(c) for c in mini.runs} == {
        ("contrastive", "hard", 0.5), ("triplet", "hard", 0.2), ("koch", "", None), ("proto", "", None),
        ("contrastive", "balanced", 1.0), ("triplet", "all", 0.5), ("triplet", "semihard", 0.5)}


def test_grids_expand_to_named_runs_in_file_order(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text("""
description = "grid"
seeds = [3, 4]
[[study]]
name = "s"
[study.base]
steps = 5
[study.eval]
settings = [[5, 1, 5]]
[[study.runs]]
name = "koch"
loss = "koch"
seeds = [9]
[[study.runs]]
loss = "triplet"
mining = ["hard", "semihard"]
margin = [0.1, 0.2]
[[study.runs]]
name = "wd"
loss = "contrastive"
weight_decay = [0.0, 0.01]
""")
    _, (st,) = st_mod.load_preset(str(p))
    assert st.configurations == ["koch", "triplet-hard-m0.1", "triplet-hard-m0.2", "triplet-semihard-m0.1",
                                 "triplet-semihard-m0.2", "wd-weight_decay0.0", "wd-weight_decay0.01"]
    assert [(c.name, c.seed) for c in st.runs[:3]] == [("koch", 9), ("triplet-hard-m0.1", 3), ("triplet-hard-m0.1", 4)]
    sh = [c for c in st.runs if c.name == "triplet-semihard-m0.2"][0]
    assert (sh.loss_params["mining"], sh.loss_params["margin"], sh.steps) == ("semihard", 0.2, 5)


def test_extends_overrides_base_and_eval_and_keeps_runs(tmp_path):
    (tmp_path / "parent.toml").write_text("""
description = "parent"
seeds = [0, 1]
[[study]]
name = "a"
[study.base]
steps = 5
lr = 0.1
[study.eval]
settings = [[5, 1, 15]]
episodes = 100
[[study.runs]]
loss = "contrastive"
margin = [0.5, 1.0]
""")
    (tmp_path / "child.toml").write_text("""
extends = "PARENT"
[[study]]
name = "b"
from = "a"
[study.base]
steps = 50
[study.eval]
episodes = 7
""".replace("PARENT", str(tmp_path / "parent.toml")))
    header, (b,) = st_mod.load_preset(str(tmp_path / "child.toml"))
    assert header["description"] == "parent" and b.name == "b"
    assert b.configurations == ["contrastive-m0.5", "contrastive-m1.0"] and len(b.runs) == 4
    assert all(c.steps == 50 and c.lr == 0.1 for c in b.runs)
    assert b.eval.episodes == 7 and b.eval.settings == ((5, 1, 15),)
    (tmp_path / "bad.toml").write_text('extends = "PARENT"\n[[study]]\nname = "zz"\n'.replace(
        "PARENT", str(tmp_path / "parent.toml")))
    with pytest.raises(OneshotError, match="does not have"):
        st_mod.load_preset(str(tmp_path / "bad.toml"))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(OneshotError, match="known presets: .*default.*smoke"):
        st_mod.load_preset("no-such-preset")


def test_duplicate_run_names_are_refused(tmp_path):
    p = tmp_path / "dup.toml"
    p.write_text('[[study]]\nname = "s"\n[[study.runs]]\nname = "x"\n[[study.runs]]\nname = "x"\n')
    with pytest.raises(OneshotError, match="unique"):
        st_mod.load_preset(str(p))
