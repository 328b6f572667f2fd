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
    # each loss at the configuration that won on Omniglot, plus the batch-averaging Siamese forms
    def key(c):
        variant = {"contrastive": c.pos_weight, "triplet": c.mining}.get(c.loss, "")
        return c.loss, variant, c.margin if variant else None

    runs = {key(c): c for c in mini.runs}
    assert set(runs) == {("contrastive", "hard", 0.5), ("triplet", "hard", 0.2), ("koch", "", None), ("proto", "", None),
                         ("contrastive", "balanced", 1.0), ("triplet", "all", 0.5), ("triplet", "semihard", 0.5)}
    assert not runs["koch", "", None].normalize and not runs["proto", "", None].normalize

    _, studies = bm.load_preset("paper")
    by_dataset = {st.runs[0].dataset: st for st in studies}
    assert set(by_dataset) == {"omniglot", "miniimagenet"}
    for st in studies:
        assert st.runs and len({c.dataset for c in st.runs}) == 1
    _check_mini(by_dataset["miniimagenet"])
    omni = by_dataset["omniglot"]
    assert omni.eval["episodes"] >= 1000 and all(c.protocol == "vinyals" for c in omni.runs)
    assert set(bm.settings(omni.eval)) == {(5, 1, 15), (5, 5, 15), (20, 1, 5), (20, 5, 5)}
