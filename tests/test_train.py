"""Training: a few steps on the fixture, the run directory, resume, NaN, config checks."""

import json

import pytest
import torch

from oneshot import train as train_mod
from oneshot.cli import main
from oneshot.config import Config, load_config
from oneshot.errors import OneshotError
from oneshot.train import TrainingError, load_encoder, train

TINY = dict(steps=6, val_every=3, batch_classes=4, batch_shots=4, val_ways=3, val_queries=2,
            val_episodes=10, lr=1e-3)


def tiny(**kw) -> Config:
    return Config(**{**TINY, **kw})


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "koch", "proto"])
def test_every_loss_trains_a_few_steps(small_omniglot, tmp_path, loss):
    out = train(tiny(loss=loss, augment="affine"), tmp_path / loss, small_omniglot, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["steps"] == 6
    for key in ("seed", "commit", "versions", "device", "wall_time_s"):
        assert key in run
    assert json.loads((out / "config.json").read_text())["loss"] == loss
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss,val_acc") and len(curve) == 3
    assert not (out / "last.pt").exists()
    model, cfg = load_encoder(out)
    assert cfg.loss == loss and model(torch.zeros(2, 1, 28, 28)).shape == (2, 64)


def test_interrupted_run_resumes_to_the_same_model(small_omniglot, tmp_path, monkeypatch):
    straight = train(tiny(), tmp_path / "straight", small_omniglot, progress=False)
    calls = {"n": 0}
    real = train_mod.batch_loss

    def dies_at_step_5(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(train_mod, "batch_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(), tmp_path / "resumed", small_omniglot, progress=False)
    monkeypatch.setattr(train_mod, "batch_loss", real)
    assert (tmp_path / "resumed" / "last.pt").exists()
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["status"] == "running"
    train(tiny(), tmp_path / "resumed", small_omniglot, progress=False)
    a = torch.load(straight / "best.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "best.pt", weights_only=False)
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_nan_loss_stops_with_the_step(small_omniglot, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "batch_loss", lambda *a: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="nan at step 1"):
        train(tiny(), tmp_path / "nan", small_omniglot, progress=False)


def test_a_run_directory_refuses_another_config(small_omniglot, tmp_path):
    train(tiny(), tmp_path / "r", small_omniglot, progress=False)
    with pytest.raises(TrainingError, match="different config"):
        train(tiny(margin=0.9), tmp_path / "r", small_omniglot, progress=False)
    train(tiny(margin=0.9), tmp_path / "r", small_omniglot, resume=False, progress=False)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["margin"] == 0.9


def test_config_files_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('loss = "contrastive"\nmargin = 1\nsteps = 10\n')
    cfg = load_config(p, ["margin=0.25", "mining=semihard", "normalize=false"])
    assert (cfg.loss, cfg.margin, cfg.mining, cfg.normalize, cfg.steps) == ("contrastive", 0.25, "semihard", False, 10)
    with pytest.raises(OneshotError, match="unknown config keys"):
        p.write_text("marginn = 1\n")
        load_config(p)
    with pytest.raises(OneshotError, match="key=value"):
        load_config(None, ["bogus=1"])
    with pytest.raises(OneshotError, match="must be int"):
        load_config(None, ["steps=ten"])


def test_committed_configs_load():
    for name in ("omniglot_triplet", "omniglot_contrastive"):
        cfg = load_config(f"experiments/{name}.toml")
        assert cfg.dataset == "omniglot" and cfg.loss in name


def test_train_then_eval_from_the_command_line(small_omniglot, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--data-root", str(small_omniglot), "--out", str(out)]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    assert "best validation accuracy" in capsys.readouterr().out
    assert main(["eval", "--data-root", str(small_omniglot), "--encoder", str(out), "--ways", "3",
                 "--queries", "3", "--episodes", "10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["encoder"] == str(out) and len(r["per_episode"]) == 10


def test_training_without_a_validation_split_keeps_the_last_checkpoint(small_omniglot, tmp_path):
    out = train(tiny(protocol="lake", val_split="none"), tmp_path / "lake", small_omniglot, progress=False)
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["step"] == 6
    assert (out / "curve.csv").read_text().splitlines()[-1].split(",")[2] == "nan"
