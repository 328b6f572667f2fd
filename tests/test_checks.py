"""Bad input is refused up front, before anything trains: config ranges, presets (every table,
unknown and missing keys, main scoring among the lists), `oneshot table` on an empty folder."""


import pytest

import tiny
from oneshot.study import benchmark as bm
from oneshot.study import presets as st_mod
from oneshot.cli import main
from oneshot.config import Config, from_dict, load_config
from oneshot.errors import ConfigError, OneshotError
from oneshot.scoring import EvalSpec


@pytest.mark.parametrize("pairs, message", [
    (["steps=-5"], "'steps' = -5 is out of range: it must be >= 1"),
    (["batch_classes=0"], "'batch_classes' = 0 is out of range: it must be >= 2"),
    (["lr=NaN"], "'lr' = nan is out of range: it must be > 0"),
    (["lr=0"], "'lr' = 0.0 is out of range: it must be > 0"),
    (["weight_decay=-1"], "'weight_decay' = -1.0 is out of range"),
    (["margin=Infinity"], "'margin' = inf is out of range"),
    (["image_size=0"], "'image_size' = 0 is out of range"),
    (["val_every=0"], "'val_every' = 0 is out of range"),
    (["val_episodes=0"], "'val_episodes' = 0"),
    (["lr_decay=1.5"], "'lr_decay' = 1.5 is out of range: it must be > 0 and <= 1"),
    (["schedule=linear"], "'schedule' = 'linear': choose one of cosine, step"),
    (["snapshot_images=[0]"], "'snapshot_images' = [0]"),
    (["loss=triplet", "batch_shots=1"], "batch_shots must be >= 2"),
    (["loss=proto", "batch_shots=4", "support_shots=4"], "leaves no query"),
])
def test_config_ranges_are_checked_when_a_config_is_built(pairs, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, pairs)
    assert message in str(e.value)


def test_defaults_and_committed_kinds_of_config_pass():
    Config()
    from_dict({"loss": "proto", "batch_shots": 6, "support_shots": 1, "schedule": "step", "patience": 3})


@pytest.mark.parametrize("flag, message", [
    ("steps=-5", "'steps' = -5"), ("batch_classes=0", "'batch_classes' = 0"), ("lr=NaN", "'lr' = nan")])
def test_train_refuses_a_bad_setting_in_one_line_before_any_work(tmp_path, capsys, flag, message):
    assert main(["train", "--set", flag, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oneshot: error:") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def preset(header=None, **study) -> str:
    """One study "s" with one run "a" (triplet); `study`: changes of `tiny.study`, `header`: top-level keys."""
    return tiny.tiny_preset(tiny.study("s", **{"runs": [{"name": "a", "loss": "triplet"}], **study}),
                            **(header or {}))


@pytest.mark.parametrize("change, message", [
    (dict(eval={"settings": None, "setings": [[5, 1, 5]]}), "unknown key 'setings'; known keys: protocols, settings"),
    (dict(eval={"settings": None}), "settings is required"),
    ({}, None),
    (dict(eval={"distances": ["cosine"], "main_distance": "euclidean"}),
     "main_distance = 'euclidean' is not among distances"),
    (dict(eval={"classifiers": ["nearest"]}),
     "classifiers must be a non-empty list of nearest-support, nearest-prototype"),
    (dict(eval={"settings": [[5, 0, 5]]}), "settings must be a non-empty list"),
    (dict(base={"steps": None, "stepz": 2}), "[study.base]: unknown key 'stepz'"),
    (dict(runs=[{"name": "a", "loss": "triplet", "margn": 0.1}]), "run 'a': unknown key 'margn'"),
    (dict(base={"steps": 0}), "run 'a': config key 'steps' = 0 is out of range"),
    (dict(header={"seedz": [0]}), "unknown key 'seedz'"),
    (dict(header={"seeds": [-1]}), "seeds must be a non-empty list of whole numbers >= 0"),
    (dict(header={"resources": {"cpu": 2}}), "[resources]: unknown key 'cpu'"),
    (dict(bse=1), "study 's': unknown key 'bse'"),
    (dict(eval={"protocols": ["ravi"]}), "unknown Omniglot protocol 'ravi'"),
    (dict(eval={"reproduces": [{"label": "x", "published": "ProtoNet", "runs": {"1": "b"}}]}), "must map test shots"),
])
def test_every_table_of_a_preset_is_checked_before_planning(tmp_path, change, message, monkeypatch, capsys):
    path = tmp_path / "p.toml"
    path.write_text(preset(**change))
    if message is None:  # the tiny study itself: loads
        st_mod.load_preset(str(path))
        return
    with pytest.raises(OneshotError) as e:
        st_mod.load_preset(str(path))
    assert message in str(e.value)
    # the benchmark and its dry run stop there: nothing is planned, measured or trained
    monkeypatch.setattr(bm, "plan", lambda *a: pytest.fail("planned a preset that does not load"))
    for extra in ([], ["--dry-run"]):
        assert main(["benchmark", "--preset", str(path), "--results", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_main_scoring_defaults_to_the_first_of_the_lists():
    spec = EvalSpec.from_dict({"classifiers": ["nearest-prototype"], "distances": ["cosine", "euclidean"],
                               "settings": [[5, 1, 15]]}, "vinyals")
    assert spec.main == ("nearest-prototype", "cosine", "UN")
    assert EvalSpec.from_dict({"settings": [[5, 1, 15]]}, "vinyals").main == ("nearest-support", "euclidean", "UN")


@pytest.mark.parametrize("make", ["missing", "empty", "no-records"])
def test_table_of_a_folder_without_records_is_one_line(tmp_path, capsys, make):
    folder = tmp_path / "res"
    if make != "missing":
        folder.mkdir()
    if make == "no-records":
        (folder / "records").mkdir()
    assert main(["table", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oneshot: error: no records under") and err.count("\n") == 1
