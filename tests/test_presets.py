"""The committed GPU and miniImageNet presets: datasets, sizes and evaluation settings."""

from oneshot import benchmark as bm


def _check_mini(study):
    assert all(c.dataset == "miniimagenet" and c.image_size == 84 for c in study.runs)
    assert all(c.augment == "natural" for c in study.runs)
    assert study.eval["episodes"] >= 600
    assert {(5, 1, 15), (5, 5, 15)} <= set(bm.settings(study.eval))


def test_mini_cpu_and_paper_presets_are_valid():
    _, (mini,) = bm.load_preset("mini-cpu")
    assert mini.name == "miniimagenet-cpu"
    _check_mini(mini)
    assert all((c.batch_classes, c.batch_shots) == (16, 4) for c in mini.runs)
    # one run per loss, at the configuration that won on Omniglot
    assert sorted(c.loss for c in mini.runs) == ["contrastive", "koch", "proto", "triplet"]
    by_loss = {c.loss: c for c in mini.runs}
    assert (by_loss["contrastive"].pos_weight, by_loss["contrastive"].margin) == ("hard", 0.5)
    assert (by_loss["triplet"].mining, by_loss["triplet"].margin) == ("hard", 0.2)
    assert not by_loss["koch"].normalize and not by_loss["proto"].normalize

    _, studies = bm.load_preset("paper")
    by_dataset = {st.runs[0].dataset: st for st in studies}
    assert set(by_dataset) == {"omniglot", "miniimagenet"}
    for st in studies:
        assert st.runs and len({c.dataset for c in st.runs}) == 1
    _check_mini(by_dataset["miniimagenet"])
    omni = by_dataset["omniglot"]
    assert omni.eval["episodes"] >= 1000 and all(c.protocol == "vinyals" for c in omni.runs)
    assert set(bm.settings(omni.eval)) == {(5, 1, 15), (5, 5, 15), (20, 1, 5), (20, 5, 5)}
