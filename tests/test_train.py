"""Training: a few steps on the fixture, the run directory, resume, NaN, config checks."""

import csv
import io
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch

from oneshot import rundir as rundir_mod
from oneshot import step as step_mod
from oneshot import train as train_mod
from tiny import interrupt_at_step
from oneshot.cli import main
from oneshot.config import Config, from_dict, load_config, migrate
from oneshot.errors import OneshotError
from oneshot.lossparams import BUILTIN_PARAMS
from oneshot.data.episodes import generator
from oneshot.checkpoint import load_checkpoint, load_encoder
from oneshot.checkpoint import restore
from oneshot.errors import TrainingError
from oneshot.registry import build_model
from oneshot.train import train

TINY = dict(steps=6, val_every=3, batch_classes=4, batch_shots=4, val_ways=3, val_queries=2,
            val_episodes=10, lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> Config:
    return from_dict({**TINY, **kw})


def interrupt_at_step_5(out, root, monkeypatch) -> None:
    """Train tiny() into `out` and stop it in its fifth step (after the checkpoint of step 3)."""
    interrupt_at_step(5, tiny(), out, root, monkeypatch)


def initial_weights(cfg: Config) -> dict:
    """The parameters a run of `cfg` starts from (train seeds the initialisation with cfg.seed)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model, _ = build_model(cfg, 1)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "koch", "proto"])
def test_every_loss_trains_moves_the_weights_and_lowers_the_loss(small_omniglot, tmp_path, monkeypatch, loss):
    # every step sees the same batch, so the training loss must fall from one window to the next
    real = step_mod.sample_batch
    monkeypatch.setattr(step_mod, "sample_batch", lambda split, p, k, g: real(split, p, k, generator(123)))
    # (Koch's head learns slowly on L2-normalised embeddings, whose differences are tiny)
    cfg = tiny(loss=loss, steps=12, val_every=6, normalize=loss != "koch")
    out = train(cfg, tmp_path / loss, small_omniglot, progress=False).run_dir
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["steps"] == 12
    for key in ("seed", "commit", "versions", "device", "wall_time_s"):
        assert key in run
    assert not (out / "last.pt").exists()

    curve = list(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    assert [int(r["step"]) for r in curve] == [6, 12]
    first, last = float(curve[0]["loss"]), float(curve[-1]["loss"])
    assert math.isfinite(first) and first > 0
    assert last < 0.85 * first, f"{loss}: the loss on a fixed batch did not fall ({first} -> {last})"

    best = torch.load(out / "best.pt", weights_only=False)
    start = initial_weights(cfg)
    assert set(start) <= set(best["model"])
    for k, w0 in start.items():
        w = best["model"][k]
        assert torch.isfinite(w).all(), k
        step = float((w - w0).abs().max())
        # Adam moves a weight by about lr per step: more means training did not start from cfg.seed
        assert step <= 3.5 * cfg.lr * best["step"], (k, step)
        if w0.dim() > 1:
            assert step > 0.1 * cfg.lr, f"{k} did not move"

    model, saved = load_encoder(out)
    assert saved.to_dict() == cfg.to_dict()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    with torch.no_grad():  # the encoder that load_encoder returns is the best checkpoint's
        for k, v in model.state_dict().items():
            assert torch.equal(v, best["model"][k]), k


def test_interrupted_run_resumes_to_the_same_model(small_omniglot, tmp_path, monkeypatch):
    straight = train(tiny(), tmp_path / "straight", small_omniglot, progress=False).run_dir
    interrupt_at_step_5(tmp_path / "resumed", small_omniglot, monkeypatch)
    assert (tmp_path / "resumed" / "last.pt").exists()
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["status"] == "running"
    train(tiny(), tmp_path / "resumed", small_omniglot, progress=False)
    a = torch.load(straight / "best.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "best.pt", weights_only=False)
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_nan_loss_stops_before_any_checkpoint(small_omniglot, tmp_path, monkeypatch):
    monkeypatch.setattr(step_mod, "batch_loss", lambda *a: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match=r"nan .*step.* 1\b"):
        train(tiny(), tmp_path / "nan", small_omniglot, progress=False)
    assert not (tmp_path / "nan" / "best.pt").exists() and not (tmp_path / "nan" / "last.pt").exists()
    assert json.loads((tmp_path / "nan" / "run.json").read_text())["status"] != "finished"


def test_a_run_directory_refuses_another_config(small_omniglot, tmp_path):
    train(tiny(), tmp_path / "r", small_omniglot, progress=False)
    with pytest.raises(TrainingError, match="different config"):
        train(tiny(margin=0.9), tmp_path / "r", small_omniglot, progress=False)
    train(tiny(margin=0.9), tmp_path / "r", small_omniglot, resume=False, progress=False)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["loss_params"]["margin"] == 0.9


def test_config_files_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('loss = "contrastive"\nmargin = 1\nsteps = 10\n')
    cfg = load_config(p, ["margin=0.25", "pos_weight=hard", "normalize=false"])
    assert (cfg.loss, cfg.normalize, cfg.steps) == ("contrastive", False, 10)
    assert cfg.loss_params == {"margin": 0.25, "pos_weight": "hard", "distance": "euclidean"}
    with pytest.raises(OneshotError, match="unknown config keys"):
        p.write_text("marginn = 1\n")
        load_config(p)
    with pytest.raises(OneshotError, match="key=value"):
        load_config(None, ["bogus=1"])
    with pytest.raises(OneshotError, match="must be int"):
        load_config(None, ["steps=ten"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "experiments").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_committed_configs_load_as_written(path):
    raw = migrate(tomllib.loads(path.read_text()))  # the short form (margin = ...) read into loss_params
    params = raw.pop("loss_params", {})
    cfg = load_config(path)
    got, default = cfg.to_dict(), Config().to_dict()
    assert {k: got[k] for k in raw} == {k: float(v) if isinstance(default[k], float) else v for k, v in raw.items()}
    assert got["loss_params"] == BUILTIN_PARAMS[cfg.loss] | params
    assert {k: v for k, v in got.items() if k not in raw and k != "loss_params"} == {
        k: v for k, v in default.items() if k not in raw and k != "loss_params"}
    model, loss = build_model(cfg, 1)  # the config names a buildable model and loss
    assert (len(list(loss.parameters())) > 0) == (cfg.loss == "koch")  # only Koch's loss trains a head


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
    out = train(tiny(protocol="lake", val_split="none"), tmp_path / "lake", small_omniglot, progress=False).run_dir
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["step"] == 6
    assert (out / "curve.csv").read_text().splitlines()[-1].split(",")[2] == "nan"


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_a_checkpoint_restores_onto_any_device(small_omniglot, tmp_path, monkeypatch):
    """What a resumed `--device cuda` run does, without a GPU: the checkpoint is read on the
    CPU and mapped onto a model and optimiser living elsewhere (here the meta device); the
    generator state, which only a CPU byte tensor may set, stays on the CPU."""
    interrupt_at_step_5(tmp_path / "r", small_omniglot, monkeypatch)
    state = load_checkpoint(tmp_path / "r" / "last.pt")
    tensors = [state["rng"], *state["model"].values()] + [
        v for s in state["opt"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert all(t.device.type == "cpu" for t in tensors)

    model, head = build_model(tiny(), 1)
    model.to("meta")
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    g = generator(123)
    restore(state, model, head, opt, sched, g)
    assert all(p.device.type == "meta" for p in model.parameters())
    moments = [v for s in opt.state.values() for k, v in s.items() if k != "step"]
    assert moments and all(v.device.type == "meta" for v in moments)
    assert torch.equal(g.get_state(), state["rng"])
    with pytest.raises(Exception):  # the old way: mapping the whole checkpoint onto the device
        generator(0).set_state(torch.load(tmp_path / "r" / "last.pt", map_location="meta",
                                          weights_only=False)["rng"])


def test_a_run_may_be_finished_on_another_device_or_layout(small_omniglot, tmp_path):
    out = train(tiny(), tmp_path / "r", small_omniglot, progress=False).run_dir
    before = (out / "best.pt").read_bytes()
    train(tiny(channels_last=False), out, small_omniglot, progress=False)  # not "a different config"
    assert (out / "best.pt").read_bytes() == before, "a finished run is not trained again"
    from oneshot.precision import bf16_supported

    if bf16_supported("cpu"):  # precision changes the numbers: part of a run's identity
        with pytest.raises(TrainingError, match="different config"):
            train(tiny(precision="bf16"), out, small_omniglot, progress=False)


def test_the_prototypical_loss_uses_the_distance_its_config_names():
    from oneshot import losses

    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(16, 8, generator=g), torch.arange(4).repeat_interleave(4)
    for distance in ("euclidean", "sqeuclidean", "cosine"):
        cfg = tiny(loss="proto", distance=distance)
        got = step_mod.batch_loss(cfg, emb, labels, None)
        assert torch.equal(got, losses.proto(emb, labels, cfg.batch_shots - 1, distance))
    assert not torch.equal(step_mod.batch_loss(tiny(loss="proto", distance="euclidean"), emb, labels, None),
                           step_mod.batch_loss(tiny(loss="proto", distance="sqeuclidean"), emb, labels, None))


# ---- recipes: episode-shaped proto batches, step decay, early stopping, budget snapshots ----

def test_proto_batch_uses_support_shots_as_support_and_the_rest_as_queries():
    from oneshot.registry import build_loss

    cfg = tiny(loss="proto", batch_classes=3, batch_shots=6, support_shots=1, normalize=False, distance="sqeuclidean")
    loss = build_loss(cfg)
    assert loss.params["n_support"] == 1
    assert tiny(loss="proto", batch_shots=6).n_support == 5  # support_shots 0: K - 1, as before


def test_step_schedule_halves_every_n_steps_and_cosine_stays_the_default():
    cfg = tiny(schedule="step", lr_decay_every=4, lr_decay=0.5, steps=20)
    assert [cfg.lr_factor(s) for s in (0, 3, 4, 7, 8, 12)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    cos = tiny(steps=10)
    assert cos.schedule == "cosine" and cos.lr_factor(0) == 1 and cos.lr_factor(10) == pytest.approx(0)


def test_early_stopping_stops_after_patience_validations_without_a_new_best(small_omniglot, tmp_path, monkeypatch):
    accs = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.95])  # best at the 2nd validation, then 2 without gain
    monkeypatch.setattr(train_mod, "validate", lambda model, *a: 0.1 if model is None else next(accs))
    out = train(tiny(steps=12, val_every=2, patience=2), tmp_path / "run", small_omniglot, progress=False).run_dir
    rec = json.loads((out / "run.json").read_text())
    assert (rec["stopped_step"], rec["stopped_early"], rec["best_step"]) == (8, True, 4)
    assert rec["images_seen"] == 8 * 16 and rec["best_images"] == 4 * 16 and rec["best_val_acc"] == 0.6
    assert torch.load(out / "best.pt", weights_only=False)["step"] == 4
    assert [int(row["step"]) for row in csv.DictReader(io.StringIO((out / "curve.csv").read_text()))] == [2, 4, 6, 8]


def test_patience_zero_trains_every_step(small_omniglot, tmp_path, monkeypatch):
    accs = iter([0.9, 0.1, 0.1, 0.1])
    monkeypatch.setattr(train_mod, "validate", lambda model, *a: 0.1 if model is None else next(accs))
    trained = train(tiny(steps=8, val_every=2), tmp_path / "run", small_omniglot, progress=False)
    rec = json.loads((trained.run_dir / "run.json").read_text())
    assert {k: v for k, v in trained.record.items() if k != "curve"} == rec  # train returns what it wrote
    assert trained.record["curve"] == (trained.run_dir / "curve.csv").read_text()
    assert (rec["stopped_step"], rec["stopped_early"], rec["best_step"]) == (8, False, 2)


def test_a_run_stopped_early_and_killed_before_it_finished_does_not_train_on(small_omniglot, tmp_path, monkeypatch):
    accs = iter([0.5, 0.4])
    monkeypatch.setattr(train_mod, "validate", lambda model, *a: 0.1 if model is None else next(accs))
    real_write = rundir_mod.atomic_write_text

    def dies_when_finishing(path, text):
        if Path(path).name == "run.json" and '"finished"' in text:
            raise KeyboardInterrupt
        real_write(path, text)

    cfg = tiny(steps=12, val_every=2, patience=1)
    with monkeypatch.context() as m:
        m.setattr(rundir_mod, "atomic_write_text", dies_when_finishing)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "run", small_omniglot, progress=False)
    monkeypatch.setattr(train_mod, "step_loss", lambda *a: pytest.fail("a stopped run trained again"))
    rec = json.loads((train(cfg, tmp_path / "run", small_omniglot, progress=False).run_dir / "run.json").read_text())
    assert (rec["status"], rec["stopped_step"], rec["best_step"]) == ("finished", 4, 2)


def test_snapshots_keep_the_best_checkpoint_at_each_budget(small_omniglot, tmp_path, monkeypatch):
    # 16 images a step; snapshots at 40 images (step 3: validated there though val_every is 4) and
    # 112 (step 7); 400 is past the cap of 8 steps and is not kept
    accs = iter([0.5, 0.7, 0.6, 0.65, 0.66])
    monkeypatch.setattr(train_mod, "validate", lambda model, *a: 0.1 if model is None else next(accs))
    out = train(tiny(steps=8, val_every=4, snapshot_images=[40, 112, 400]), tmp_path / "run", small_omniglot,
                progress=False).run_dir
    steps = [int(r["step"]) for r in csv.DictReader(io.StringIO((out / "curve.csv").read_text()))]
    assert steps == [3, 4, 7, 8]
    snap = {n: torch.load(out / f"best@{n}.pt", weights_only=False) for n in (40, 112)}
    assert (snap[40]["step"], snap[40]["val_acc"]) == (3, 0.5)
    assert (snap[112]["step"], snap[112]["val_acc"]) == (4, 0.7)
    assert not (out / "best@400.pt").exists()


def test_a_snapshot_after_an_early_stop_is_the_final_best(small_omniglot, tmp_path, monkeypatch):
    accs = iter([0.5, 0.4, 0.3])
    monkeypatch.setattr(train_mod, "validate", lambda model, *a: 0.1 if model is None else next(accs))
    out = train(tiny(steps=12, val_every=2, patience=2, snapshot_images=[160]), tmp_path / "run", small_omniglot,
                progress=False).run_dir
    assert json.loads((out / "run.json").read_text())["stopped_step"] == 6
    assert torch.load(out / "best@160.pt", weights_only=False)["step"] == 2


def test_tensorboard_events_hold_the_curve(small_omniglot, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (make install installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tiny(steps=40, val_every=20), tmp_path / "run", small_omniglot, progress=False).run_dir
    ev = EventAccumulator(str(out / "tb"))
    ev.Reload()
    assert {"train/loss", "train/lr", "train/images_per_s", "val/accuracy"} <= set(ev.Tags()["scalars"])
    curve = list(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    val = ev.Scalars("val/accuracy")
    assert [e.step for e in val] == [int(r["step"]) for r in curve] == [20, 40]
    assert [e.value for e in val] == pytest.approx([float(r["val_acc"]) for r in curve], abs=1e-5)
    assert [e.step for e in ev.Scalars("train/loss")] == [20, 40]
    # what the step computed anyway: the encoder's output norm and the gradient norm, in both
    for tag in ("emb_norm", "grad_norm"):
        logged = [e.value for e in ev.Scalars(f"train/{tag}") if e.step in (20, 40)]
        assert logged == pytest.approx([float(r[tag]) for r in curve], rel=1e-4) and all(v > 0 for v in logged)


def test_a_mined_loss_shows_its_mining_while_it_trains(small_omniglot, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (make install installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tiny(steps=40, val_every=20, loss="triplet", mining="semihard", margin=0.5), tmp_path / "run",
                small_omniglot, progress=False).run_dir
    ev = EventAccumulator(str(out / "tb"))
    ev.Reload()
    curve = list(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    for tag in ("active", "hardest_pos", "hardest_neg"):
        logged = [e.value for e in ev.Scalars(f"train/{tag}") if e.step in (20, 40)]
        assert logged == pytest.approx([float(r[tag]) for r in curve], rel=1e-4)
    assert all(0 < float(r["active"]) <= 1 and 0 < float(r["hardest_pos"]) for r in curve)
    # a loss that mines nothing has no such columns: NaN in curve.csv, no TensorBoard tag
    out = train(tiny(steps=20, val_every=20, loss="proto"), tmp_path / "plain", small_omniglot, progress=False).run_dir
    row = next(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    assert row["active"] == "nan" and float(row["emb_norm"]) > 0


def test_without_tensorboard_a_run_trains_and_says_so_once(small_omniglot, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **kw):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(rundir_mod, "_EVENTS_OFF_SAID", [])
    for name in ("a", "b"):
        train(tiny(), tmp_path / name, small_omniglot, progress=False)
    err = capsys.readouterr().err
    assert err.count("TensorBoard events off: the tensorboard package is not installed") == 1
    assert not (tmp_path / "a" / "tb").exists() and (tmp_path / "a" / "best.pt").is_file()
