"""learn2learn interoperability: the same episodes through both paths, the same distribution,
learn2learn's files as splits, and clear errors when learn2learn or the files are missing."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import learn2learn  # noqa: F401 - installed by `make install`; a missing install must fail loudly
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from conftest import png
from oneshot.data.load import load_split
from oneshot.data.split import Split
from oneshot.data.episodes import sample_episodes
from oneshot.errors import DataError, OneshotError
from oneshot.evaluate import CLASSIFIERS, evaluate
from oneshot.data.l2l import episodes_from_tasks, to_metadataset, to_taskdataset


def grid_split(n_classes: int = 30, n_items: int = 20, counts: list[int] | None = None) -> Split:
    """A split of tiny random images [M, 1, 4, 4]; class c has counts[c] (default n_items) items."""
    counts = counts or [n_items] * n_classes
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (len(labels), 1, 4, 4), dtype=torch.uint8, generator=g)
    return Split("grid", images, labels, [f"c{i}" for i in range(len(counts))])


def naive_correct(encode, x: torch.Tensor, y: torch.Tensor, n_shot: int, classifier: str) -> int:
    """One task classified directly: per class (ascending label) the first n_shot items in task
    order are support, the rest queries; the nearest support item (or class mean) wins.
    Returns how many queries it classifies right."""
    z = encode(x).double()
    classes = sorted(set(y.tolist()))
    items = {c: [i for i in range(len(y)) if int(y[i]) == c] for c in classes}
    support = {c: z[items[c][:n_shot]] for c in classes}
    if classifier == "nearest-prototype":
        support = {c: s.mean(0, keepdim=True) for c, s in support.items()}
    correct = 0
    for truth in classes:
        for i in items[truth][n_shot:]:
            dist = [min(float((z[i] - s).norm()) for s in support[c]) for c in classes]
            correct += classes[int(np.argmin(dist))] == truth
    return correct


def test_same_episodes_through_both_paths(small_omniglot):
    split = load_split("omniglot", "vinyals", "train", small_omniglot)
    random.seed(0)
    taskset = to_taskdataset(split, n_way=5, n_shot=2, n_query=3, num_tasks=40)
    tasks, episodes = episodes_from_tasks(taskset, 40, n_shot=2)
    assert episodes.shape == (40, 5, 5) and tasks.images.dtype == torch.float32
    assert (tasks.labels[episodes] == tasks.labels[episodes[:, :, :1]]).all()  # one class per row
    w = torch.randn(28 * 28, 16, generator=torch.Generator().manual_seed(1))

    def encode(x):
        return x.flatten(1) @ w

    for classifier in CLASSIFIERS:
        ours = evaluate(encode, tasks, episodes, 2, classifier, progress=False)["per_episode"]
        naive = [naive_correct(encode, *taskset[e][:2], 2, classifier) for e in range(40)]
        assert [round(a * 15) for a in ours] == naive  # 5 classes x 3 queries per task
        assert len(set(naive)) > 2  # the fixture's blobs are random: scores vary, not a constant


def test_metadataset_items_are_normalised_split_items():
    split = grid_split(4, 5)
    split.mean, split.std = (0.5,), (0.25,)
    meta = to_metadataset(split)
    assert sorted(meta.labels) == [0, 1, 2, 3] and meta.labels_to_indices[2] == list(range(10, 15))
    x, y = meta[7]
    assert y == 1 and torch.equal(x, split.to_float(split.images[7:8])[0])


def frequencies(draws: torch.Tensor, split: Split, need: int) -> dict[str, np.ndarray]:
    """Draw counts per class (once per task) and per item, from item indices [E, N*(K+Q)]."""
    per_class = np.bincount(split.labels[draws].flatten().numpy(), minlength=split.n_classes) // need
    return {"class": per_class, "item": np.bincount(draws.flatten().numpy(), minlength=len(split.labels))}


def test_sampler_and_learn2learn_agree_in_distribution():
    split = grid_split(30, 20)
    n_tasks, need = 3000, 4  # 5-way 1+3
    ours = sample_episodes(split, 5, 1, 3, n_tasks, seed=0).flatten(1)
    random.seed(0)  # learn2learn draws with python's `random`
    taskset = to_taskdataset(split, 5, 1, 3)
    theirs = torch.tensor([[d.index for d in taskset.sample_task_description()] for _ in range(n_tasks)])
    assert theirs.shape == ours.shape
    a, b = frequencies(ours, split, need), frequencies(theirs, split, need)
    for name in ("class", "item"):
        assert a[name].sum() == b[name].sum()
        p_same = stats.chi2_contingency(np.stack([a[name], b[name]]))[1]
        assert p_same > 1e-3, f"{name} frequencies differ (p={p_same:.2g})"
        for counts in (a[name], b[name]):
            assert stats.chisquare(counts)[1] > 1e-3, f"{name} frequencies not uniform"


def test_taskdataset_draws_only_classes_with_enough_items():
    split = grid_split(counts=[3, 20, 20, 2, 20, 20, 20])
    random.seed(1)
    taskset = to_taskdataset(split, 3, 1, 3)
    seen = set()
    for _ in range(50):
        x, y = taskset.sample()
        assert x.shape == (12, 1, 4, 4) and sorted(y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
        seen |= {int(d.index) for d in taskset.sample_task_description()}
    assert not seen & {0, 1, 2, 43, 44}  # the items of classes 0 and 3
    with pytest.raises(ValueError, match="impossible"):
        to_taskdataset(split, 6, 1, 3)


def test_missing_learn2learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # `import learn2learn` now fails
    with pytest.raises(OneshotError, match=r"pip install 'oneshot\[l2l\]'.*make install"):
        to_metadataset(grid_split(3, 2))


def test_core_never_imports_learn2learn():
    # nor pytorch-metric-learning (the pml extra): only a config naming a pml: class imports it
    code = ("import sys, oneshot, oneshot.data.load, oneshot.data.episodes, oneshot.evaluate, oneshot.train, oneshot.cli, "
            "oneshot.data.l2l, oneshot.registry, oneshot.pml, oneshot.study.benchmark, oneshot.report.tables, oneshot.study.executors, "
            "oneshot.study.runs, oneshot.verification, oneshot.report.verification; "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'; "
            "assert 'learn2learn' not in sys.modules, 'learn2learn imported'; "
            "assert 'pytorch_metric_learning' not in sys.modules, 'pytorch_metric_learning imported'; "
            "assert 'ray' not in sys.modules, 'ray imported'; "  # the ray and slurm extras: only their executors
            "assert 'submitit' not in sys.modules, 'submitit imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_learn2learn_files_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="omniglot-py.*never downloads"):
        load_split("l2l:omniglot", None, "train", tmp_path)
    root = tmp_path / "absent"
    with pytest.raises(DataError, match="mini-imagenet-cache-validation.pkl.*never downloads"):
        load_split("l2l:mini-imagenet", None, "val", root)
    assert not root.exists()  # nothing created, nothing fetched
    with pytest.raises(DataError, match="unknown learn2learn dataset"):
        load_split("l2l:nope", None, "train", tmp_path)


def write_omniglot_py(root, n_drawings: int = 3) -> list[str]:
    """torchvision's extracted Omniglot layout, tiny; returns the characters in its order."""
    rng = np.random.default_rng(0)
    chars = []
    for stem, alphabets in (("images_background", {"Alpha": 3, "Beta": 2}), ("images_evaluation", {"Gamma": 3})):
        (root / "omniglot-py" / f"{stem}.zip").parent.mkdir(parents=True, exist_ok=True)
        (root / "omniglot-py" / f"{stem}.zip").write_bytes(b"")  # MD5 check patched out below
        for alpha, n in alphabets.items():
            for c in range(1, n + 1):
                folder = root / "omniglot-py" / stem / alpha / f"character{c:02d}"
                folder.mkdir(parents=True)
                for d in range(n_drawings):
                    (folder / f"{len(chars) + 1:04d}_{d + 1:02d}.png").write_bytes(png(rng))
                chars.append(f"{alpha}/character{c:02d}")
    return chars


def test_l2l_omniglot_from_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets.omniglot as tv

    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tv.Omniglot, "_check_integrity", lambda self: True)
    chars = write_omniglot_py(tmp_path)
    full = load_split("l2l:omniglot", None, "all", tmp_path, 28)
    assert full.images.shape == (24, 1, 28, 28) and full.images.dtype == torch.uint8
    assert sorted(full.class_names) == sorted(chars) and torch.bincount(full.labels).tolist() == [3] * 8
    assert full.group_names == ["Alpha", "Beta", "Gamma"]
    assert [full.group_names[g] for g in full.groups] == [n.split("/")[0] for n in full.class_names]
    c = full.class_names.index("Alpha/character01")  # torchvision lists folders in directory order
    folder = tmp_path / "omniglot-py/images_background/Alpha/character01"
    ink = [255 - np.asarray(Image.open(p).convert("L").resize((28, 28), Image.LANCZOS))  # 1 - ToTensor(Resize)
           for p in sorted(folder.glob("*.png"))]
    got = full.images[full.labels == c, 0].numpy()
    assert sorted(a.tobytes() for a in got) == sorted(a.tobytes() for a in ink)
    parts = [load_split("l2l:omniglot", None, s, tmp_path, 28).class_names for s in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(chars) and all(parts)


def test_l2l_mini_imagenet_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    classes = {"n02": [0, 1, 2], "n01": [3, 4, 5]}
    (tmp_path / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps({"image_data": data, "class_dict": classes}))
    split = load_split("l2l:mini-imagenet", None, "test", tmp_path)
    assert split.class_names == ["n02", "n01"] and split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(split.images, torch.from_numpy(data).permute(0, 3, 1, 2))
    assert len(split.mean) == 3 and abs(split.mean[0] - data[..., 0].mean() / 255) < 0.01


def test_episodes_from_tasks_regroups_interleaved_labels():
    x = torch.arange(6.0).view(6, 1, 1, 1)
    tasks = [(x, torch.tensor([7, 3, 7, 3, 3, 7])), (x + 6, torch.tensor([0, 1, 0, 1, 1, 0]))]
    split, episodes = episodes_from_tasks(tasks, 2, n_shot=1)
    assert episodes.tolist() == [[[1, 3, 4], [0, 2, 5]], [[6, 8, 11], [7, 9, 10]]]
    assert split.class_names == ["task0/3", "task0/7", "task1/0", "task1/1"]
    assert torch.equal(split.to_float(split.images[episodes[1, 0]]).flatten(), torch.tensor([6.0, 8, 11]))
    with pytest.raises(OneshotError, match="task 1 has 2 classes of"):
        episodes_from_tasks([tasks[0], (x, torch.tensor([0, 0, 0, 0, 1, 1]))], 2, n_shot=1)
