"""The `oneshot` command end to end on the small fixture Omniglot (and the real one)."""

import json
import re

import pytest

from oneshot.cli import main


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
