"""One scoring path: the evaluation spec (`oneshot.scoring.EvalSpec`) read from presets, records and
flags alike, and `oneshot eval` giving what a study records for the same encoder and episodes."""

import json

import pytest

import tiny
from oneshot.cli import main
from oneshot.data.protocols import FIXED_TASKS
from oneshot.errors import OneshotError
from oneshot.scoring import EvalSpec
from oneshot.study import presets as presets_mod

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_spec_spells_out_its_main_scoring_and_survives_its_table_form():
    spec = EvalSpec.from_dict({"settings": [[5, 1, 15]], "distances": ["cosine", "euclidean"],
                               "transforms": ["L2N", "CL2N"], "main_transform": "CL2N"}, "ravi")
    assert spec.protocols == ("ravi",) and spec.main == ("nearest-support", "cosine", "CL2N")
    assert EvalSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert len(spec.scorings()) == 4 and spec.main_only().scorings() == [spec.main]
    assert spec.main_only().verification_pairs == 0


def test_a_record_written_before_the_spec_reads_with_the_rules_of_its_day():
    old = {"protocols": ["vinyals"], "episodes": 1000, "seed": 2026, "classifiers": ["nearest-prototype",
           "nearest-support"], "distances": ["euclidean"], "verification_pairs": 20000, "reproduces": [],
           "settings": [[5, 1, 15]]}  # no transforms, no main_*: UN and the first of each list
    assert EvalSpec.from_dict(old).main == ("nearest-prototype", "euclidean", "UN")


def test_a_fixed_task_protocol_is_scored_on_its_own_task_whatever_the_settings():
    (protocol, task), = FIXED_TASKS.items()
    spec = EvalSpec.from_dict({"protocols": [protocol, "lake"], "settings": [[5, 1, 15]]})
    assert spec.settings_for(protocol) == [task] and spec.settings_for("lake") == [(5, 1, 15)]
    assert EvalSpec.from_dict({"protocols": [protocol]}).settings_for(protocol) == [task]
    with pytest.raises(OneshotError, match="settings is required"):
        EvalSpec.from_dict({"protocols": ["lake"]})


@pytest.mark.parametrize("table, message", [
    ({"settings": [[5, 1, 0]]}, "at least 2 ways, 1 shot and 1 query"),
    ({"settings": [[5, 1, 15]], "episodes": 0}, "episodes must be a whole number >= 1"),
    ({"settings": [[5, 1, 15]], "transforms": ["ZCA"]}, "transforms must be a non-empty list of UN, L2N, CL2N"),
    ({"settings": [[5, 1, 15]], "main_distance": "cosine"}, "main_distance = 'cosine' is not among distances"),
    ({"settings": [[5, 1, 15]], "episode": 5}, "unknown key 'episode'"),
])
def test_a_spec_that_cannot_be_scored_is_refused_in_one_line(table, message):
    with pytest.raises(OneshotError, match=message):
        EvalSpec.from_dict(table, "vinyals", where="here")


def test_oneshot_eval_gives_what_the_study_recorded(small_omniglot, tmp_path, capsys):
    ev = {"settings": [[3, 1, 2]], "episodes": 12, "seed": 11, "classifiers": ["nearest-prototype"],
          "distances": ["cosine"], "transforms": ["UN", "CL2N"], "verification_pairs": 400}
    preset = tiny.write_preset(tmp_path / "p.toml", tiny.study("t", eval=ev, runs=[tiny.contrastive(0.5)]))
    results, runs = tmp_path / "results", tmp_path / "runs"
    assert main(["benchmark", "--preset", preset, "--results", str(results), "--runs", str(runs),
                 "--data-root", str(small_omniglot)]) == 0
    _, (st,) = presets_mod.load_preset(preset)
    seed0 = results / "records" / "t" / "contrastive-m0.5" / "seed0"
    verified = json.loads((seed0 / "verification" / "vinyals.json").read_text())["scores"]["cosine"]
    for transform, suffix in (("UN", ""), ("CL2N", "-CL2N")):
        rec = json.loads((seed0 / f"vinyals-3w1s-nearest-prototype-cosine{suffix}.json").read_text())
        assert EvalSpec.from_dict(rec["study_eval"]) == st.eval
        capsys.readouterr()
        run_dir, = runs.glob("*/t/contrastive-m0.5/seed0")
        assert main(["eval", "--data-root", str(small_omniglot), "--encoder", str(run_dir),
                     "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "12", "--seed", "11",
                     "--classifier", "nearest-prototype", "--distance", "cosine", "--transform", transform,
                     "--verification", "--pairs", "400", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        for key in ("per_episode", "mean", "ci95", "t_ci95", "std", "episodes", "ways", "shots", "queries"):
            assert out[key] == rec[key], key
        assert out["verification"] == {k: verified[k] for k in ("roc_auc", "eer", "tar_at_far", "pairs")}


def test_verification_of_fixed_episodes_is_refused_before_any_work(small_omniglot, capsys):
    (protocol, _), = FIXED_TASKS.items()
    code = main(["eval", "--data-root", str(small_omniglot), "--protocol", protocol, "--verification"])
    assert code == 2 and "fixed set of episodes" in capsys.readouterr().err
