"""The registry: names -> losses and encoders, user code by import path, dict-valued config keys."""

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from oneshot import registry
from oneshot import progress as progress_mod
from oneshot.cli import main
from oneshot.config import Config, from_dict, load_config
from oneshot.encoders import Conv4
from oneshot.data.episodes import generator, sample_batch
from oneshot.errors import ConfigError, OneshotError
from oneshot.losses import FunctionLoss, KochLoss, triplet
from oneshot.registry import build_encoder, build_loss, import_object
from oneshot.checkpoint import load_encoder
from oneshot.checkpoint import restore
from oneshot.registry import build_model
from oneshot.step import step_loss
from oneshot.train import train

TINY = dict(steps=4, val_every=2, batch_classes=4, batch_shots=4, val_ways=3, val_queries=2,
            val_episodes=10)

USER_CODE = '''
import torch
from torch import nn

SEEN = []

def scaled_triplet(emb, labels, scale=1.0):
    """A loss function: fn(emb, labels, **loss_params) -> scalar."""
    from oneshot.losses import triplet
    SEEN.append(labels.clone())
    return scale * triplet(emb, labels, 0.2)

class CenterLoss(nn.Module):
    """A loss module that owns parameters: one centre per training class."""
    def __init__(self, num_classes, embedding_size, weight=1.0):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_size))
        self.weight = weight
    def forward(self, emb, labels):
        return self.weight * (emb - self.centers[labels]).pow(2).sum(1).mean()

class TinyNet(nn.Module):
    """An encoder that takes in_channels (supplied by oneshot) and its own width."""
    def __init__(self, in_channels, width=8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten())
    def forward(self, x):
        return self.net(x)

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A module `mylab_code` on sys.path (removed from sys.modules afterwards)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mylab_code.py").write_text(USER_CODE)
    (folder / "mylab_broken.py").write_text("raise RuntimeError('needs a GPU cluster')\n")
    monkeypatch.syspath_prepend(str(folder))
    yield "mylab_code"
    for name in ("mylab_code", "mylab_broken"):
        sys.modules.pop(name, None)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown loss 'arcface'; choose one of contrastive, triplet, koch, "
                                          r"proto, softmax, 'pml:<Class>'.*'package.module:name'"):
        build_loss(Config(loss="arcface"))
    with pytest.raises(ConfigError, match="unknown encoder 'resnet'; choose one of conv4, koch, pixels, resnet12"):
        build_encoder("resnet", 1, 28)
    with pytest.raises(ConfigError, match="mining"):
        build_loss(Config(loss="triplet", loss_params={"mining": "easy"}))
    with pytest.raises(ConfigError, match="pos_weight"):
        build_loss(Config(loss="contrastive", loss_params={"pos_weight": "sum"}))
    with pytest.raises(ConfigError, match="needs a loss that takes the mined tuples"):
        build_loss(Config(loss="triplet", miner="pml:BatchHardMiner"))
    with pytest.raises(ConfigError, match="without a miner"):
        build_loss(Config(loss="triplet", miner_params={"epsilon": 0.1}))


def test_builtin_losses_are_modules_and_only_koch_owns_parameters():
    emb, labels = torch.randn(8, 4), torch.arange(4).repeat_interleave(2)
    for name in ("contrastive", "triplet", "koch", "proto"):
        model, loss = build_model(Config(loss=name, batch_shots=2), 1)
        assert isinstance(loss, nn.Module)
        assert (len(list(loss.parameters())) > 0) == (name == "koch")
    loss = build_loss(Config(loss="triplet", loss_params={"margin": 0.3, "mining": "all"}))
    assert isinstance(loss, FunctionLoss) and torch.equal(loss(emb, labels), triplet(emb, labels, 0.3, mining="all"))
    _, koch = build_model(Config(loss="koch"), 1)
    assert isinstance(koch, KochLoss) and koch.head.fc.in_features == 64  # Conv-4 at 28x28


def test_the_trainer_reads_the_registry(small_omniglot, tmp_path, monkeypatch):
    """A loss added to the registry trains with no other change: no list of names elsewhere."""
    calls = []

    def halved(cfg, ctx):
        calls.append(cfg.name)
        return FunctionLoss(lambda emb, labels: 0.5 * triplet(emb, labels, 0.5))

    monkeypatch.setitem(registry.LOSSES, "half-triplet", halved)
    out = train(Config(loss="half-triplet", **TINY), tmp_path / "r", small_omniglot, progress=False).run_dir
    assert json.loads((out / "run.json").read_text())["status"] == "finished" and calls


def test_a_loss_that_owns_parameters_is_trained_saved_and_resumed(small_omniglot, tmp_path, monkeypatch):
    cfg = Config(loss="koch", normalize=False, **TINY)
    saved = {}
    real_save = progress_mod.save
    monkeypatch.setattr(progress_mod, "save", lambda path, obj: (saved.__setitem__(path.name, obj), real_save(path, obj)))
    out = train(cfg, tmp_path / "koch", small_omniglot, progress=False).run_dir
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        _, fresh = build_model(cfg, 1)
    last = saved["last.pt"]["loss"]
    assert set(last) == {"head.fc.weight", "head.fc.bias"}
    assert not torch.equal(last["head.fc.weight"], fresh.state_dict()["head.fc.weight"]), "the head was not trained"
    assert set(torch.load(out / "best.pt", weights_only=False)["loss"]) == set(last)
    # restore puts the loss's parameters back (and reads a last.pt written when the head was apart)
    for state in ({"loss": last}, {"head": {k.removeprefix("head."): v for k, v in last.items()}}):
        model, loss = build_model(cfg, 1)
        opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        restore({"model": saved["last.pt"]["model"], **state, "opt": opt.state_dict(),
                 "sched": sched.state_dict(), "rng": generator(0).get_state()},
                model, loss, opt, sched, generator(0))
        assert torch.equal(loss.head.fc.weight, last["head.fc.weight"])


def test_labels_are_the_classes_of_the_training_split(small_omniglot, user_code):
    from oneshot.data.load import load_split
    split = load_split("omniglot", "vinyals", "train", small_omniglot, 28)
    cfg = Config(loss=f"{user_code}:scaled_triplet", batch_classes=4, batch_shots=3)
    model, loss = build_model(cfg, 1, split.n_classes)
    step_loss(cfg, split, model, loss, generator(7))
    idx = sample_batch(split, 4, 3, generator(7))
    assert torch.equal(sys.modules[user_code].SEEN[-1], split.labels[idx])


def test_user_code_by_import_path(user_code):
    cfg = Config(loss=f"{user_code}:scaled_triplet", loss_params={"scale": 2.0})
    loss = build_loss(cfg)
    emb, labels = torch.randn(8, 4), torch.arange(4).repeat_interleave(2)
    assert torch.allclose(loss(emb, labels), 2 * triplet(emb, labels, 0.2))

    cfg = Config(loss=f"{user_code}:CenterLoss", loss_params={"weight": 0.5}, encoder=f"{user_code}:TinyNet",
                 encoder_params={"width": 6})
    model, loss = build_model(cfg, 1, num_classes=10)
    assert loss.centers.shape == (10, 24) and loss.weight == 0.5  # 6 channels x 2 x 2
    assert model.encoder.net[0].in_channels == 1 and model.encoder.net[0].out_channels == 6
    _, loss = build_model(Config(loss=f"{user_code}:CenterLoss", loss_params={"num_classes": 3}), 1, 10)
    assert loss.centers.shape == (3, 64)  # what the params set wins
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(Config(loss=f"{user_code}:CenterLoss"), 1)  # no training split to count


def test_builtin_encoders_take_encoder_params():
    enc = build_encoder("conv4", 1, 28, {"hidden": 16})
    assert isinstance(enc, Conv4) and enc.out_dim(28) == 16
    with pytest.raises(ConfigError, match="encoder_params"):
        build_encoder("pixels", 1, 28, {"hidden": 16})


def test_failed_imports_name_the_module_and_the_reason(user_code):
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_lab.losses': ModuleNotFoundError: "
                                          r"No module named 'no_such_lab'"):
        build_loss(Config(loss="no_such_lab.losses:focal"))
    with pytest.raises(ConfigError, match=r"cannot import module 'mylab_broken': RuntimeError: needs a GPU cluster"):
        build_encoder("mylab_broken:Net", 1, 28)
    with pytest.raises(ConfigError, match=r"module 'mylab_code' has no attribute 'focal'"):
        build_loss(Config(loss=f"{user_code}:focal"))
    with pytest.raises(ConfigError, match="not a function or an nn.Module class"):
        build_loss(Config(loss=f"{user_code}:NOT_CALLABLE"))
    with pytest.raises(ConfigError, match=r"encoder 'mylab_code:TinyNet': cannot build it .*'depth'"):
        build_encoder(f"{user_code}:TinyNet", 1, 28, {"depth": 3})


def test_modules_in_the_working_directory_are_found(tmp_path, monkeypatch):
    """`oneshot` is a console script, whose sys.path lacks the directory it runs in."""
    (tmp_path / "cwd_lab.py").write_text("def loss(emb, labels):\n    return emb.sum() * 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert callable(import_object("cwd_lab:loss", "loss", ()))
    finally:
        sys.modules.pop("cwd_lab", None)


def test_user_loss_and_encoder_train_and_evaluate_from_the_command_line(small_omniglot, tmp_path, user_code, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-root", str(small_omniglot), "--out", str(out),
            "--set", f"loss={user_code}:CenterLoss", "--set", "loss_params.weight=0.1",
            "--set", f"encoder={user_code}:TinyNet", "--set", 'encoder_params={"width": 4}']
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["loss_params"] == {"weight": 0.1} and stored["encoder_params"] == {"width": 4}
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["config"]["encoder"] == f"{user_code}:TinyNet" and best["loss"]["centers"].shape == (24, 16)
    sys.modules.pop(user_code)  # eval imports the user's encoder again, from the stored config
    model, cfg = load_encoder(out)
    assert cfg.encoder_params == {"width": 4} and model(torch.zeros(2, 1, 28, 28)).shape == (2, 16)
    capsys.readouterr()
    assert main(["eval", "--data-root", str(small_omniglot), "--encoder", str(out), "--ways", "3",
                 "--queries", "3", "--episodes", "10", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["per_episode"]) == 10


def test_dict_keys_in_toml_json_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(textwrap.dedent('''\
        loss = "pml:TripletMarginLoss"
        miner = "pml:BatchHardMiner"
        [loss_params]
        margin = 0.2
        reducer = { class = "pml:MeanReducer" }
        [miner_params.distance]
        class = "pml:LpDistance"
        normalize_embeddings = false
        '''))
    cfg = load_config(p, ["loss_params.margin=0.3", "encoder_params.hidden=32", "miner_params.distance.p=1"])
    assert cfg.loss_params == {"margin": 0.3, "reducer": {"class": "pml:MeanReducer"}}
    assert cfg.miner_params == {"distance": {"class": "pml:LpDistance", "normalize_embeddings": False, "p": 1}}
    assert cfg.encoder_params == {"hidden": 32}
    assert from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.identity()["loss_params"]["margin"] == 0.3
    assert from_dict({k: v for k, v in cfg.to_dict().items() if k not in ("loss_params", "miner", "miner_params",
                                                                          "encoder_params")}) == Config(loss=cfg.loss)
    with pytest.raises(OneshotError, match="must be dict"):
        load_config(None, ["loss_params=0.2"])
    with pytest.raises(OneshotError, match="key=value"):
        load_config(None, ["margin.x=0.2"])
    with pytest.raises(OneshotError, match="not a string, number"):
        from_dict({"loss_params": {"when": None}})
