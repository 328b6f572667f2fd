"""The `oneshot` command end to end on the small fixture Omniglot (and the real one)."""

import json
import re

import pytest

from oneshot.cli import main
from oneshot.errors import OneshotError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_prints_one_human_line(small_omniglot, capsys):
    code, out, _ = run(capsys, "eval", "--data-root", small_omniglot, "--ways", 5, "--shots", 1,
                       "--queries", 5, "--episodes", 50)
    assert code == 0
    assert re.fullmatch(r"5-way 1-shot: \d+\.\d\d ± \d+\.\d\d % \(50 episodes, 5 queries per class\)\n", out)


def test_eval_json_contract(small_omniglot, capsys):
    code, out, _ = run(capsys, "eval", "--data-root", small_omniglot, "--protocol", "vinyals", "--ways", 3,
                       "--shots", 2, "--queries", 4, "--episodes", 30, "--seed", 5, "--encoder", "pixels",
                       "--classifier", "nearest-prototype", "--distance", "cosine", "--json")
    assert code == 0
    r = json.loads(out)
    for key in ("dataset", "protocol", "ways", "shots", "queries", "episodes", "seed", "encoder",
                "classifier", "distance", "mean", "ci95", "t_ci95", "per_episode"):
        assert key in r
    assert (r["ways"], r["shots"], r["queries"], r["episodes"], r["seed"]) == (3, 2, 4, 30, 5)
    assert len(r["per_episode"]) == 30 and all(0 <= a <= 1 for a in r["per_episode"])
    assert r["mean"] == pytest.approx(sum(r["per_episode"]) / 30)
    # same seed, same episodes, same numbers
    _, again, _ = run(capsys, "eval", "--data-root", small_omniglot, "--protocol", "vinyals", "--ways", 3,
                      "--shots", 2, "--queries", 4, "--episodes", 30, "--seed", 5,
                      "--classifier", "nearest-prototype", "--distance", "cosine", "--json")
    assert json.loads(again)["per_episode"] == r["per_episode"]


def test_lake_protocols_from_the_command_line(small_omniglot, capsys):
    code, out, _ = run(capsys, "eval", "--data-root", small_omniglot, "--protocol", "lake-20runs",
                       "--ways", 20, "--json")
    r = json.loads(out)
    assert code == 0 and (r["ways"], r["shots"], r["episodes"]) == (20, 1, 20)
    code, out, _ = run(capsys, "eval", "--data-root", small_omniglot, "--protocol", "lake-within",
                       "--ways", 2, "--episodes", 10, "--json")
    assert code == 0 and json.loads(out)["episodes"] == 10


@pytest.mark.parametrize("argv, message", [
    (["--ways", "50"], "impossible"),
    (["--protocol", "lake-within", "--ways", "3"], "within one group is impossible"),
    (["--protocol", "klingon"], "unknown Omniglot protocol"),
    (["--encoder", "no/such/run"], "no trained encoder"),
])
def test_bad_requests_give_one_clear_line(small_omniglot, capsys, argv, message):
    code, out, err = run(capsys, "eval", "--data-root", small_omniglot, "--episodes", 5, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_missing_data_root_says_how_to_fetch(tmp_path, capsys):
    code, _, err = run(capsys, "eval", "--data-root", tmp_path / "nowhere")
    assert code == 2 and "oneshot data fetch omniglot" in err


def test_data_check_reports_each_part(small_omniglot, capsys):
    code, out, _ = run(capsys, "data", "check", "--data-root", small_omniglot)
    assert code == 0
    assert re.search(r"ok +omniglot vinyals/test: 12 classes", out)
    assert re.search(r"ok +omniglot lake-20runs/test", out)


def test_pixels_baseline_on_real_vinyals(real_root, capsys):
    code, out, _ = run(capsys, "eval", "--data-root", real_root, "--ways", 5, "--shots", 1,
                       "--episodes", 200, "--json")
    r = json.loads(out)
    # raw pixels are far above chance (20%) and far below a trained encoder
    assert code == 0 and 0.3 < r["mean"] < 0.6


def test_pixels_default_size_is_28_on_omniglot_and_84_on_natural_images(small_omniglot, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(10):
        for i in range(3):
            path = tmp_path / "photos" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    sizes = {}
    for dataset in ("omniglot", f"folder:{tmp_path / 'photos'}"):
        code, out, _ = run(capsys, "eval", "--data-root", small_omniglot, "--dataset", dataset, "--split", "train",
                           "--ways", 3, "--shots", 1, "--queries", 1, "--episodes", 5, "--json")
        assert code == 0
        sizes[dataset.split(":")[0]] = json.loads(out)["image_size"]
    assert sizes == {"omniglot": 28, "folder": 84}


def _photos(root, n_classes=12, per_class=4, seed=0):
    """A folder of small random colour images, <class>/<image>, no split folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        colour = rng.integers(0, 256, 3)
        for i in range(per_class):
            path = root / f"class{c:02d}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(colour + rng.normal(0, 20, (18, 18, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path)
    return root


def test_a_folder_is_scored_on_all_its_classes_with_split_all(tmp_path, capsys):
    folder = f"folder:{_photos(tmp_path / 'photos')}"
    # the seeded test split of 12 classes holds 2 or 3: 5-way is impossible, and the error says what to do
    code, _, err = run(capsys, "eval", "--dataset", folder, "--ways", 5, "--queries", 1, "--episodes", 5)
    assert code == 2 and "--split all" in err
    code, out, _ = run(capsys, "eval", "--dataset", folder, "--split", "all", "--ways", 12, "--shots", 1,
                       "--queries", 3, "--episodes", 5, "--json")
    assert code == 0 and json.loads(out)["ways"] == 12


def test_eval_of_a_run_takes_dataset_and_size_from_its_config(tmp_path, capsys):
    from oneshot.config import Config
    from oneshot.train import train

    folder = f"folder:{_photos(tmp_path / 'photos')}"
    cfg = Config(dataset=folder, protocol="folder", image_size=16, steps=2, val_split="none", batch_classes=3,
                 batch_shots=2, loss="triplet")
    train(cfg, tmp_path / "run", progress=False)
    # neither --dataset nor --image-size: Omniglot at 28x28 would fail on the channel count
    code, out, err = run(capsys, "eval", "--encoder", tmp_path / "run", "--split", "all", "--ways", 3,
                         "--queries", 1, "--episodes", 4, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["dataset"], r["image_size"], r["precision"]) == (folder, 16, "fp32")


def test_impossible_requests_are_refused_before_any_work(small_omniglot, capsys, monkeypatch):
    import oneshot.data.load
    import oneshot.evaluate

    def no_work(*a, **k):
        raise AssertionError("the request should have been refused before loading or embedding")

    monkeypatch.setattr(oneshot.evaluate, "embed_split", no_work)
    monkeypatch.setattr(oneshot.data.load, "load_split", no_work)
    code, out, err = run(capsys, "eval", "--data-root", small_omniglot, "--queries", 0)
    assert code == 2 and out == "" and "at least 2 ways, 1 shot and 1 query" in err


def test_lake_protocols_refuse_an_encoder_trained_on_the_vinyals_split(small_omniglot, tmp_path, capsys):
    from oneshot.config import Config
    from oneshot.train import train

    train(Config(steps=2, val_split="none", batch_classes=4, batch_shots=2), tmp_path / "vin",
          small_omniglot, progress=False)
    code, _, err = run(capsys, "eval", "--data-root", small_omniglot, "--encoder", tmp_path / "vin",
                       "--protocol", "lake-20runs")
    assert code == 2 and "has seen characters" in err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "miniimagenet", "--protocol", "vinyals"], "unknown miniImageNet protocol 'vinyals'"),
    (["--dataset", "omniglot", "--protocol", "ravi"], "unknown Omniglot protocol 'ravi'"),
])
def test_a_protocol_must_belong_to_its_dataset(small_omniglot, capsys, argv, message):
    code, _, err = run(capsys, "eval", "--data-root", small_omniglot, *argv)
    assert code == 2 and message in err


def test_bad_input_is_one_line_but_a_bug_keeps_its_traceback(small_omniglot, capsys, monkeypatch):
    import oneshot.data.episodes

    code, _, err = run(capsys, "eval", "--data-root", small_omniglot, "--ways", 50)
    assert code == 2 and err.count("\n") == 1
    with pytest.raises(OneshotError):  # --debug shows the traceback of bad input too
        main(["--debug", "eval", "--data-root", str(small_omniglot), "--ways", "50"])

    def bug(*a, **k):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(oneshot.data.episodes, "sample_episodes", bug)
    with pytest.raises(ValueError, match="an internal mistake"):
        main(["eval", "--data-root", str(small_omniglot)])
