"""A run's identity holds only what it reads, and every committed record stays valid for the
committed presets: a no-op `make benchmark` trains nothing."""

import json
from pathlib import Path

import pytest
import torch

from oneshot.study import records
from oneshot.study import presets as st_mod
from oneshot.config import Config, from_dict, migrate
from oneshot.errors import ConfigError, OneshotError
from oneshot.losses import triplet
from oneshot.registry import build_loss

RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("loss, unread, read", [
    ("triplet", {"pos_weight": "balanced", "support_shots": 3}, {"margin": 0.3, "mining": "all", "distance": "cosine"}),
    ("contrastive", {"mining": "all", "support_shots": 3}, {"margin": 0.3, "pos_weight": "mean", "distance": "cosine"}),
    ("koch", {"margin": 0.9, "mining": "all", "pos_weight": "mean", "distance": "cosine"}, {"normalize": False}),
    ("proto", {"margin": 0.9, "mining": "all", "pos_weight": "mean"}, {"distance": "euclidean", "support_shots": 2}),
    ("pml:TripletMarginLoss", {"margin": 0.9, "mining": "all", "distance": "cosine", "support_shots": 3},
     {"loss_params.margin": 0.1}),
])
def test_a_key_the_loss_never_reads_is_not_identity(loss, unread, read):
    base = Config(loss=loss, batch_shots=4, loss_params={"distance": "sqeuclidean"} if loss == "proto" else {})
    for key, value in unread.items():  # as a preset's base gives them to every run
        assert from_dict({**base.to_dict(), key: value}).identity() == base.identity(), key
    for key, value in read.items():
        other = base.with_overrides([f"{key}={json.dumps(value)}"])
        assert other.identity() != base.identity(), key


def test_every_loss_reads_its_settings_from_loss_params_and_the_short_form_folds_into_them():
    short = from_dict({"loss": "triplet", "margin": 0.2, "mining": "all", "pos_weight": "hard"})
    params = Config(loss="triplet", loss_params={"margin": 0.2, "mining": "all"})
    assert short == params and params.loss_params == {"margin": 0.2, "mining": "all", "distance": "euclidean"}
    assert short.identity() == params.identity()
    emb, labels = torch.randn(16, 8), torch.arange(4).repeat_interleave(4)
    assert torch.equal(build_loss(params)(emb, labels), triplet(emb, labels, 0.2, mining="all"))
    assert Config().with_overrides(["margin=0.3"]).loss_params["margin"] == 0.3
    assert Config().with_overrides(["loss=pml:TripletMarginLoss"]).loss_params == {}  # the built-in's settings go
    with pytest.raises(ConfigError, match="takes loss_params margin, pos_weight, distance, not margn"):
        Config(loss="contrastive", loss_params={"margn": 0.3})
    with pytest.raises(ConfigError, match="given twice"):
        from_dict({"loss": "triplet", "margin": 0.2, "loss_params": {"margin": 0.4}})
    with pytest.raises(OneshotError, match="write --set loss_params.margin=0.3"):
        Config().with_overrides(["loss=pml:TripletMarginLoss", "margin=0.3"])
    with pytest.raises(ConfigError, match="'margin' = -1"):
        Config(loss="triplet", loss_params={"margin": -1})


def test_a_record_of_every_version_reads_into_the_same_config():
    v2 = {"loss": "contrastive", "margin": 1, "mining": "hard", "pos_weight": "hard", "distance": "euclidean",
          "loss_params": {}, "steps": 5}
    now = from_dict(v2)
    assert now.loss_params == {"margin": 1.0, "pos_weight": "hard", "distance": "euclidean"}
    assert from_dict(now.to_dict()) == now  # today's form reads back unchanged
    assert migrate({**v2, "loss": "pml:ContrastiveLoss"}) == {"loss": "pml:ContrastiveLoss", "loss_params": {}, "steps": 5}


def test_schedule_and_validation_keys_count_only_where_they_are_read():
    cos = Config()
    assert Config(lr_decay=0.1).identity() == cos.identity()  # cosine decay never reads it
    step = Config(schedule="step")
    assert Config(schedule="step", lr_decay=0.1).identity() != step.identity()
    no_val = Config(val_split="none")
    assert Config(val_split="none", val_ways=7, patience=3).identity() == no_val.identity()
    assert Config(val_ways=7).identity() != cos.identity()
    assert Config(device="cuda", channels_last=False).identity() == cos.identity()  # how, not what


def test_every_committed_record_reads_into_a_config_whose_loss_builds():
    """The loss-params checks (choices, defaults) accept every committed record as it was written,
    and the loss it names builds: mining and pair weighting of any record name a miner and a reduction."""
    seen = {}
    for path in sorted((RESULTS / "records").rglob("*.json")):
        raw = json.loads(path.read_text()).get("config")
        if raw is not None:
            cfg = from_dict(raw)
            seen.setdefault((cfg.loss, json.dumps(cfg.loss_params, sort_keys=True)), cfg)
    assert {"contrastive", "triplet", "koch", "proto"} <= {loss for loss, _ in seen}
    for cfg in seen.values():
        if not cfg.loss.startswith("pml:") and cfg.loss not in ("koch", "softmax"):  # those need the run's sizes
            build_loss(cfg)


@pytest.mark.parametrize("preset", ["default", "mini-cpu", "zoo", "precision"])
def test_the_committed_records_finish_every_run_of_their_preset(preset):
    from oneshot.precision import resolve
    from oneshot.step import resolved

    if resolve("auto", "cpu") != "bf16":  # the records were made where "auto" is bf16
        pytest.skip("this CPU has no native bf16: precision auto is fp32 here, so the bf16 records do not count")
    _, studies = st_mod.load_preset(preset)

    for st in studies:
        for cfg in st.runs:
            cfg = resolved(cfg.with_overrides(["device=cpu"]))
            assert records.run_done(RESULTS, st, cfg), f"{st.name}/{cfg.name} seed {cfg.seed} would train again"
