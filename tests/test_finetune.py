"""Fine-tuning from a trained run (`init_from`) and feature transforms at test (UN / L2N / CL2N):
in `train`, in a study's records and tables, and in `oneshot eval`; their bad input."""

import json

import pytest
import torch
import torch.nn.functional as F

import tiny
from oneshot.cli import main
from oneshot.config import from_dict
from oneshot.errors import ConfigError, OneshotError
from oneshot.features import base_mean, transform, transformed
from oneshot.study import presets as presets_mod
from oneshot.errors import TrainingError
from oneshot.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = {"name": "source", "loss": "softmax", "normalize": False, "batch_size": 16, "optimizer": "sgd", "lr": 0.05}
FINETUNE = {"name": "ft", "init_from": "source", "loss": "proto", "optimizer": "sgd", "lr": 0.01}


def test_transforms_follow_simpleshot():
    x = torch.randn(7, 5) + 3
    mean = x.mean(0)
    assert torch.equal(transform(x, "UN"), x)
    assert torch.allclose(transform(x, "L2N"), x / x.norm(dim=1, keepdim=True))
    assert torch.allclose(transform(x, "CL2N", mean), F.normalize(x - mean, dim=1))
    calls = []
    out = transformed(x, ["UN", "L2N"], lambda: calls.append(1))
    assert set(out) == {"UN", "L2N"} and not calls  # the training split is embedded only for CL2N
    with pytest.raises(ConfigError, match="needs the mean"):
        transform(x, "CL2N")
    with pytest.raises(ConfigError, match="choose one of UN, L2N, CL2N"):
        transform(x, "ZCA")


def test_base_mean_is_the_mean_embedding_of_the_split(small_omniglot):
    from oneshot.data.load import load_split

    split = load_split("omniglot", "vinyals", "train", small_omniglot, 28)
    m = base_mean(lambda x: x.flatten(1), split, progress=False)
    assert torch.allclose(m, split.to_float(split.images).flatten(1).mean(0), atol=1e-5)


def tiny_source(root, out):
    cfg = from_dict({**tiny.BASE, **{k: v for k, v in SOURCE.items()}, "steps": 4})
    return cfg, train(cfg, out, root, progress=False).run_dir


def test_a_fine_tune_starts_from_its_source_encoder(small_omniglot, tmp_path):
    src_cfg, src_dir = tiny_source(small_omniglot, tmp_path / "src")
    ft = from_dict({**tiny.BASE, "loss": "proto", "optimizer": "sgd", "lr": 1e-12, "momentum": 0.0,
                    "init_from": src_cfg.identity()})
    out = train(ft, tmp_path / "ft", small_omniglot, progress=False, init=src_dir).run_dir
    a = torch.load(src_dir / "best.pt", weights_only=False)["model"]
    b = torch.load(out / "best.pt", weights_only=False)["model"]
    weights = [k for k in a if k.endswith("weight") and a[k].dim() > 1]
    assert weights and all(torch.allclose(a[k], b[k], atol=1e-6) for k in weights)
    scratch = from_dict({**ft.to_dict(), "init_from": {}})
    assert scratch.identity() != ft.identity()  # the source is part of the run's identity
    with pytest.raises(TrainingError, match="give the run directory"):
        train(ft, tmp_path / "x", small_omniglot, progress=False)
    with pytest.raises(TrainingError, match="no trained encoder yet"):
        train(ft, tmp_path / "y", small_omniglot, progress=False, init=tmp_path / "nothing")
    other = from_dict({**tiny.BASE, "loss": "proto", "init_from": {**src_cfg.identity(), "lr": 0.5}})
    with pytest.raises(TrainingError, match="holds another run"):
        train(other, tmp_path / "z", small_omniglot, progress=False, init=src_dir)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_a_source_of_another_dataset_or_size_is_refused():
    src = from_dict({"name": "s", "dataset": "miniimagenet", "protocol": "ravi", "image_size": 84}).identity()
    with pytest.raises(ConfigError) as refused:
        from_dict({"init_from": src})
    assert str(refused.value) == ("init_from: the source run 's' differs in dataset (source 'miniimagenet', this run "
                                  "'omniglot'), protocol (source 'ravi', this run 'vinyals') and image_size (source "
                                  "84, this run 28): fine-tune only from a run with the same dataset, protocol, "
                                  "train_split, image_size, encoder and encoder_params")


def test_a_study_fine_tunes_and_scores_every_transform(small_omniglot, tmp_path):
    ev = {"transforms": ["UN", "CL2N"], "main_transform": "CL2N", "settings": [[3, 1, 2]]}
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t", eval=ev, runs=[SOURCE, FINETUNE]))
    results = tmp_path / "results"
    assert main(["benchmark", "--preset", preset, "--results", str(results), "--runs", str(tmp_path / "runs"),
                 "--data-root", str(small_omniglot)]) == 0
    _, (st,) = presets_mod.load_preset(preset)
    ft = next(c for c in st.runs if c.name == "ft")
    assert ft.init_from == next(c for c in st.runs if c.name == "source").identity()
    seed0 = results / "records" / "t" / "ft" / "seed0"
    un = json.loads((seed0 / "vinyals-3w1s-nearest-support-euclidean.json").read_text())
    cl = json.loads((seed0 / "vinyals-3w1s-nearest-support-euclidean-CL2N.json").read_text())
    assert "transform" not in un and cl["transform"] == "CL2N"
    assert un["per_episode"] != cl["per_episode"]
    assert "features: CL2N" in (results / "t" / "main-vinyals.md").read_text()
    assert "CL2N" in (results / "t" / "all-scores.csv").read_text()


def test_tables_name_a_fine_tune_and_its_images_and_keep_it_off_the_budget_axis(small_omniglot, tmp_path):
    from oneshot.report import budget, frames, tables

    runs = [SOURCE, {**SOURCE, "name": "source-affine", "augment": "affine"}, {**FINETUNE, "snapshot_images": [32]}]
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t", base={"snapshot_images": [32]}, runs=runs))
    results = tmp_path / "results"
    assert main(["benchmark", "--preset", preset, "--results", str(results), "--runs", str(tmp_path / "runs"),
                 "--data-root", str(small_omniglot)]) == 0
    df = frames.load_records(results)
    ft = df[df.run == "ft"].iloc[0]
    assert ft.family == "proto@source" and ft.budget == 4 * 16 + 4 * 16  # its own images and its source's
    main_table, _ = tables.main_table(frames.configurations(df), "vinyals")
    rows = main_table.set_index("Loss")
    assert rows.loc["Prototypical, fine-tuned from source", "Augment"] == "none"
    assert set(rows.loc["Softmax pre-training", "Augment"].split(" / ")) <= {"none", "affine"}
    # the budget axis: the two sources at 32 images and at their cap, never the fine-tune
    frame = budget.budget_frame(results, df)
    assert set(frame.run) == {"source", "source-affine"} and set(frame.budget) == {32, 64}
    assert "Fine-tunes (a second stage)" in (results / "t" / "budget-vinyals.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"init_from": "nowhere"}, "init_from = 'nowhere': no earlier configuration"),
    ({"init_from": 3}, "init_from must name an earlier configuration"),
    ({"image_size": 32, "encoder": "resnet12"}, "init_from: the source run 'source' differs in image_size (source 28, "
     "this run 32) and encoder (source 'conv4', this run 'resnet12'): fine-tune only from a run with the same "
     "dataset, protocol, train_split, image_size, encoder and encoder_params"),
])
def test_a_preset_with_a_bad_source_is_one_line_and_exit_2(small_omniglot, tmp_path, capsys, change, message):
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t", runs=[SOURCE, {**FINETUNE, **change}]))
    assert main(["benchmark", "--preset", preset, "--dry-run", "--data-root", str(small_omniglot)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", ["momentum=-0.5", "milestones=[5,3]", 'schedule="multistep"', 'augment="mixup"',
                                 "milestones=[0.5,3000]"])
def test_bad_recipe_keys_on_the_command_line_exit_2_before_anything_is_written(tmp_path, capsys, bad):
    out = tmp_path / "run"
    assert main(["train", "--set", bad, "--set", "steps=100", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_oneshot_train_init_from_fine_tunes_the_run_it_names(small_omniglot, tmp_path, capsys):
    src_cfg, src_dir = tiny_source(small_omniglot, tmp_path / "src")
    sets = [x for k, v in tiny.BASE.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", "--data-root", str(small_omniglot), *sets, "--set", "loss=proto", "--set", "lr=0.001",
                 "--init-from", str(src_dir), "--out", str(tmp_path / "ft")]) == 0, capsys.readouterr().err
    stored = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert stored["init_from"] == src_cfg.identity()


def test_oneshot_train_refuses_a_source_of_other_images_in_one_line_before_anything_is_written(
        small_omniglot, tmp_path, capsys):
    _, src_dir = tiny_source(small_omniglot, tmp_path / "src")
    capsys.readouterr()  # the source's training
    sets = [x for k, v in tiny.BASE.items() for x in ("--set", f"{k}={v}")]
    out = tmp_path / "ft"
    assert main(["train", "--data-root", str(small_omniglot), *sets, "--set", "loss=proto", "--set", "image_size=32",
                 "--init-from", str(src_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs in image_size (source 28, this run 32)" in err
    assert not out.exists()


def test_init_from_a_folder_without_a_run_exits_2(tmp_path, capsys):
    assert main(["train", "--init-from", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "no trained encoder there" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_transform_in_a_study_is_refused(small_omniglot, tmp_path, capsys):
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t", eval={"transforms": ["UN", "PCA"]}))
    assert main(["benchmark", "--preset", preset, "--dry-run", "--data-root", str(small_omniglot)]) == 2
    assert "transforms must be a non-empty list of UN, L2N, CL2N" in capsys.readouterr().err


def test_eval_scores_under_a_transform(small_omniglot, tmp_path, capsys):
    base = ["eval", "--data-root", str(small_omniglot), "--ways", "3", "--episodes", "20", "--queries", "2",
            "--json"]
    assert main(base) == 0
    un = json.loads(capsys.readouterr().out)
    assert main(base + ["--transform", "CL2N"]) == 0
    cl = json.loads(capsys.readouterr().out)
    assert un["transform"] == "UN" and cl["transform"] == "CL2N" and un["mean"] != cl["mean"]


def test_a_refused_run_leaves_nothing_behind_and_the_corrected_command_trains(small_omniglot, tmp_path, capsys):
    out = tmp_path / "runs" / "a"
    assert main(["train", "--set", "image_size=8", "--out", str(out)]) == 2
    assert "needs inputs of at least 16x16" in capsys.readouterr().err
    assert not out.exists()
    ok = ["train", "--data-root", str(small_omniglot), "--out", str(out)] + sum(
        (["--set", f"{k}={v}"] for k, v in {**tiny.BASE, "steps": 2}.items()), [])
    assert main(ok) == 0
    assert (out / "best.pt").exists()


def test_an_encoder_that_cannot_be_built_leaves_no_run_directory(small_omniglot, tmp_path):
    cfg = from_dict({**tiny.BASE, "encoder": "koch", "image_size": 60, "loss": "proto"})
    with pytest.raises(OneshotError):
        train(from_dict({**cfg.to_dict(), "encoder_params": {"unknown": 1}}), tmp_path / "b", small_omniglot,
              progress=False)
    assert not (tmp_path / "b").exists()


def test_zero_workers_is_refused_like_zero_cpus(small_omniglot, tmp_path, capsys):
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t"))
    assert main(["benchmark", "--preset", preset, "--dry-run", "--data-root", str(small_omniglot),
                 "--executor", "ray", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
