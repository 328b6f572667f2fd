"""miniImageNet's three on-disk forms, refusal of broken files, the decode-once cache, and
image-folder datasets, all on tiny fixtures; plus one check of the real val split."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oneshot.data import decode
from oneshot.data import imagefolder as imf
from oneshot.data import miniimagenet as mi
from oneshot.errors import DataError

SIZES = {"train": 3, "val": 2, "test": 2}  # classes per split in the fake dataset
PER_CLASS = 5
NATIVE = 8
REAL = {"STRUCTURE": mi.STRUCTURE, "NATIVE": mi.NATIVE}


@pytest.fixture(autouse=True)
def small(monkeypatch, tmp_path):
    """A private cache and a fake structure of 3/2/2 classes x 5 images at 8x8."""
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mi, "STRUCTURE", {s: (n, PER_CLASS) for s, n in SIZES.items()})
    monkeypatch.setattr(mi, "NATIVE", NATIVE)


def jpeg(rng, size=NATIVE) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def fake() -> dict[str, list[tuple[str, str, bytes]]]:
    """{split: [(wnid, file, jpeg bytes)]} with Ravi-style names."""
    rng = np.random.default_rng(0)
    out, k = {}, 0
    for split, n in SIZES.items():
        out[split] = []
        for _ in range(n):
            wnid = f"n{k:08d}"
            k += 1
            out[split] += [(wnid, f"{wnid}{i:08d}.jpg", jpeg(rng)) for i in range(PER_CLASS)]
    return out


def write_csvs(folder: Path, data) -> None:
    for split, items in data.items():
        (folder / f"{split}.csv").write_text("filename,label\n" + "".join(f"{f},{w}\n" for w, f, _ in items))


def write_zips(folder: Path, data, members=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, items in data.items():
        with zipfile.ZipFile(folder / f"{split}.zip", "w", zipfile.ZIP_STORED) as z:
            for w, f, b in items:
                z.writestr(f"{split}/{w}/{f}", b)
    write_csvs(folder, data)


def write_tree(folder: Path, data) -> None:
    for split, items in data.items():
        for w, f, b in items:
            (folder / split / w).mkdir(parents=True, exist_ok=True)
            (folder / split / w / f).write_bytes(b)


def write_ravi(folder: Path, data) -> None:
    (folder / "images").mkdir(parents=True)
    for items in data.values():
        for _, f, b in items:
            (folder / "images" / f).write_bytes(b)
    write_csvs(folder, data)


def pickled(items) -> bytes:
    """learn2learn's layout: classes in reverse order in image_data, rows of a class ascending."""
    classes: dict[str, list[bytes]] = {}
    for w, _, b in items:
        classes.setdefault(w, []).append(b)
    rows, class_dict = [], {}
    for w in reversed(list(classes)):
        class_dict[w] = list(range(len(rows), len(rows) + len(classes[w])))
        rows += [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in classes[w]]
    return pickle.dumps({"image_data": np.stack(rows), "class_dict": class_dict}, protocol=4)


def write_pickles(folder: Path, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, items in data.items():
        (folder / f"mini-imagenet-cache-{mi.PICKLES[split]}.pkl").write_bytes(pickled(items))


def write_ravi_zip(folder: Path, data) -> None:
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "images.zip", "w") as z:
        for items in data.values():
            for _, f, b in items:
                z.writestr(f"images/{f}", b)
    write_csvs(folder, data)


WRITERS = {"zip": write_zips, "tree": write_tree, "ravi": write_ravi, "ravi-zip": write_ravi_zip,
           "pickle": write_pickles}


@pytest.mark.parametrize("form", list(WRITERS))
def test_each_form_loads(tmp_path, form):
    data = fake()
    WRITERS[form](tmp_path / "miniimagenet", data)
    for split, n in SIZES.items():
        s = mi.load_miniimagenet(tmp_path, split, size=NATIVE)
        assert s.images.shape == (n * PER_CLASS, 3, NATIVE, NATIVE) and s.images.dtype == torch.uint8
        assert s.class_names == sorted({w for w, _, _ in data[split]})
        assert s.labels.tolist() == [c for c in range(n) for _ in range(PER_CLASS)]
        assert s.groups is None and len(s.mean) == len(s.std) == 3
    assert mi._form(tmp_path / "miniimagenet", "val")[0] == form.split("-")[0]
    assert [ok for _, ok, _ in mi.check(tmp_path)] == [True] * 3


def test_forms_agree(tmp_path):
    data = fake()
    loaded = {}
    for form, write in WRITERS.items():
        write(tmp_path / form / "miniimagenet", data)
        loaded[form] = [mi.load_miniimagenet(tmp_path / form, s, size=NATIVE) for s in ("train", "test")]
    ref = loaded.pop("zip")
    for form, splits in loaded.items():
        for a, b in zip(ref, splits):
            assert torch.equal(a.images, b.images), form
            assert torch.equal(a.labels, b.labels) and a.class_names == b.class_names
            assert a.mean == b.mean and a.std == b.std
    first = Image.open(io.BytesIO(data["train"][0][2])).convert("RGB")
    assert torch.equal(ref[0].images[0], torch.from_numpy(np.array(first)).permute(2, 0, 1))


def test_strict_structure(tmp_path):
    data = fake()
    data["val"] = data["val"][:-1]
    write_zips(tmp_path / "miniimagenet", data)
    with pytest.raises(DataError, match=r"val\.zip.*expected 2 classes x 5"):
        mi.load_miniimagenet(tmp_path, "val", size=NATIVE)
    assert len(mi.load_miniimagenet(tmp_path, "val", size=NATIVE, strict=False).labels) == 9
    with pytest.raises(DataError, match="expected 2 classes x 5"):  # a non-strict cache entry is still checked
        mi.load_miniimagenet(tmp_path, "val", size=NATIVE)


def test_strict_native_size_and_csv(tmp_path):
    data = fake()
    w, f, _ = data["test"][0]
    data["test"][0] = (w, f, jpeg(np.random.default_rng(1), size=10))
    write_zips(tmp_path / "miniimagenet", data)
    with pytest.raises(DataError, match=rf"test\.zip: member test/{w}/{f} is 10x10, expected 8x8"):
        mi.load_miniimagenet(tmp_path, "test", size=NATIVE)
    csv = tmp_path / "miniimagenet" / "val.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DataError, match=r"val\.zip does not match .*val\.csv"):
        mi.load_miniimagenet(tmp_path, "val", size=NATIVE)


def test_missing(tmp_path):
    with pytest.raises(DataError, match="miniImageNet not found"):
        mi.load_miniimagenet(tmp_path, "val")
    (tmp_path / "miniimagenet").mkdir()
    with pytest.raises(DataError, match="train.zip or train/"):
        mi.load_miniimagenet(tmp_path, "val")


def broken(kind: str, folder: Path, data) -> str:
    """Write the fake dataset with one broken file; the name the error must carry."""
    if kind in ("html", "truncated-pickle", "evil-pickle"):
        write_pickles(folder, data)
        target = folder / "mini-imagenet-cache-train.pkl"
        blob = {"html": b"\n<!DOCTYPE html><html><body>Sign in</body></html>",
                "truncated-pickle": target.read_bytes()[:500],
                "evil-pickle": pickle.dumps({"image_data": print, "class_dict": {}})}[kind]
        target.write_bytes(blob)
        return target.name
    if kind == "truncated-zip":
        write_zips(folder, data)
        target = folder / "train.zip"
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        return target.name
    w, f, b = data["train"][7]
    data["train"][7] = (w, f, b"GIF89a not really" if kind == "junk-jpeg" else b[: len(b) // 2])
    write_zips(folder, data)
    return f


@pytest.mark.parametrize("kind", ["html", "truncated-pickle", "evil-pickle", "truncated-zip", "junk-jpeg",
                                  "truncated-jpeg"])
def test_broken_files_refused(tmp_path, kind):
    name = broken(kind, tmp_path / "miniimagenet", fake())
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        mi.load_miniimagenet(tmp_path, "train", size=NATIVE)


@pytest.fixture
def decodes(monkeypatch):
    """Counts images decoded by the shared decoder."""
    calls = []
    real = decode._decode

    def counting(source, refs, *a, **k):
        calls.append(len(refs))
        return real(source, refs, *a, **k)

    monkeypatch.setattr(decode, "_decode", counting)
    return calls


def test_cache(tmp_path, decodes):
    data = fake()
    write_zips(tmp_path / "miniimagenet", data)
    a = mi.load_miniimagenet(tmp_path, "val", size=NATIVE)
    assert decodes == [10, 15]  # val, then the training split for statistics (not stored)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = mi.load_miniimagenet(tmp_path, "val", size=NATIVE)
    assert decodes == [10, 15] and torch.equal(a.images, b.images) and a.mean == b.mean
    b.images[0] = 0  # copy-on-write: the cache entry is untouched
    assert torch.equal(mi.load_miniimagenet(tmp_path, "val", size=NATIVE).images, a.images)

    c = mi.load_miniimagenet(tmp_path, "val", size=6)
    assert decodes[2:] == [10, 15] and c.images.shape[-2:] == (6, 6)

    w, f, _ = data["val"][0]
    data["val"][0] = (w, f, jpeg(np.random.default_rng(5)))
    write_zips(tmp_path / "miniimagenet", {"val": data["val"]})
    later = os.stat(tmp_path / "miniimagenet" / "val.zip").st_mtime + 10
    os.utime(tmp_path / "miniimagenet" / "val.zip", (later, later))
    d = mi.load_miniimagenet(tmp_path, "val", size=NATIVE)
    assert decodes[4:] == [10] and not torch.equal(d.images[0], a.images[0])
    assert torch.equal(d.images[1:], a.images[1:]) and d.mean == a.mean


def test_statistics_come_from_train(tmp_path, monkeypatch, decodes):
    write_zips(tmp_path / "miniimagenet", fake())
    val_first = [mi.load_miniimagenet(tmp_path, s, size=NATIVE) for s in ("val", "train", "test")]
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache2"))
    decodes.clear()
    train_first = [mi.load_miniimagenet(tmp_path, s, size=NATIVE) for s in ("train", "val", "test")]
    assert decodes == [15, 10, 10]  # statistics read from the train entry, not decoded again
    means = {s.mean for s in val_first + train_first}
    stds = {s.std for s in val_first + train_first}
    assert len(means) == len(stds) == 1
    x = train_first[0].images.double() / 255
    assert np.allclose(train_first[0].mean, x.mean(dim=(0, 2, 3)).tolist(), rtol=0, atol=1e-12)
    assert np.allclose(train_first[0].std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), rtol=0, atol=1e-12)


# --- folders ------------------------------------------------------------------------------------


def image(path: Path, mode: str, size: tuple[int, int], seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "RGB" if mode == "RGB" else "L").save(path)


def flat_tree(root: Path, n_classes=6, mode="RGB", counts=None) -> None:
    for c in range(n_classes):
        for i in range((counts or {}).get(c, 3)):
            image(root / f"class{c}" / f"img{i}.png", mode, (10 + i, 12), seed=10 * c + i)


def test_assign_splits():
    names = [f"c{i:03d}" for i in range(100)]
    parts = imf.assign_splits(names, seed=0)
    assert [len(parts[s]) for s in mi.SPLITS] == [64, 16, 20]
    assert sorted(sum(parts.values(), [])) == names
    assert parts == imf.assign_splits(list(reversed(names)), seed=0)
    assert parts != imf.assign_splits(names, seed=1)
    assert [len(imf.assign_splits(names[:n])[s]) for n in (3, 4) for s in mi.SPLITS] == [1, 1, 1, 2, 1, 1]


def test_folder_seeded_split(tmp_path):
    flat_tree(tmp_path / "ds", n_classes=7)
    (tmp_path / "ds" / "README.txt").write_text("top-level files are ignored")
    a = {s: imf.load_folder(tmp_path / "ds", s, size=16) for s in mi.SPLITS}
    names = [set(a[s].class_names) for s in mi.SPLITS]
    assert all(names) and set.union(*names) == {f"class{c}" for c in range(7)}
    assert sum(len(n) for n in names) == 7
    assert a["train"].images.shape == (3 * len(names[0]), 3, 16, 16)
    assert a["val"].mean == a["train"].mean and a["train"].groups is None
    b = imf.load_folder(tmp_path / "ds", "val", size=16)
    assert b.class_names == a["val"].class_names and torch.equal(b.images, a["val"].images)
    assert imf.assign_splits([f"class{c}" for c in range(7)], 0)["val"] == a["val"].class_names


def test_folder_split_folders(tmp_path):
    for split, classes in {"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}.items():
        for c in classes:
            for i in range(2):
                image(tmp_path / "ds" / split / c / "sub" / f"{i}.jpg", "RGB", (30, 20), seed=i)
    s = imf.load_folder(tmp_path / "ds", "test", size=12)
    assert s.class_names == ["d", "e"] and s.labels.tolist() == [0, 0, 1, 1]
    assert s.images.shape == (4, 3, 12, 12)
    assert s.mean == imf.load_folder(tmp_path / "ds", "train", size=12).mean
    image(tmp_path / "ds" / "dogs" / "x.png", "RGB", (5, 5))
    with pytest.raises(DataError, match="mixes split folders"):
        imf.load_folder(tmp_path / "ds", "test", size=12)


def test_folder_channels(tmp_path):
    flat_tree(tmp_path / "grey", mode="L")
    g = imf.load_folder(tmp_path / "grey", "train", size=8)
    assert g.images.shape[1] == 1 and len(g.mean) == 1
    flat_tree(tmp_path / "mixed", mode="L")
    image(tmp_path / "mixed" / "class5" / "colour.png", "RGB", (9, 9))
    m = imf.load_folder(tmp_path / "mixed", "train", size=8)
    assert m.images.shape[1] == 3 and len(m.mean) == 3
    grey = m.images[m.labels == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])


def test_folder_small_classes(tmp_path):
    flat_tree(tmp_path / "ds", n_classes=4, counts={0: 1, 1: 4, 2: 2})
    (tmp_path / "ds" / "empty").mkdir()
    parts = imf.assign_splits(["class0", "class1", "class2", "class3", "empty"])
    assert ["empty"] not in parts.values()  # a split of empty classes only is refused
    small = []
    for split in mi.SPLITS:
        s = imf.load_folder(tmp_path / "ds", split, size=8)
        assert s.class_names == parts[split]
        small += imf.report_small_classes(s, need=3)
    assert sorted(small) == ["class0", "class2", "empty"]
    (tmp_path / "ds" / "class3" / "img0.png").unlink()
    for c in (0, 1, 2):
        for f in (tmp_path / "ds" / f"class{c}").iterdir():
            f.unlink()
    with pytest.raises(DataError, match="no images in the classes of this split"):
        for split in mi.SPLITS:
            imf.load_folder(tmp_path / "ds", split, size=8)


def test_folder_unreadable(tmp_path):
    flat_tree(tmp_path / "ds")
    (tmp_path / "ds" / "class2" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"class2/broken\.jpg is not a readable image"):
        for split in mi.SPLITS:
            imf.load_folder(tmp_path / "ds", split, size=8)
    with pytest.raises(DataError, match="not found"):
        imf.load_folder(tmp_path / "nowhere", "train")


def test_load_split_dispatch(tmp_path):
    from oneshot.data.load import load_split

    flat_tree(tmp_path / "ds")
    s = load_split(f"folder:{tmp_path / 'ds'}", None, "train", size=8)
    assert s.images.shape[-1] == 8


def test_real_val(monkeypatch):
    """The shared copy: val is 16 classes x 600 images at 84x84 (decodes ~13k JPEGs once)."""
    root = Path(os.environ.get("ONESHOT_DATA", "data"))
    if not (root / "miniimagenet").is_dir():
        pytest.skip(f"no miniImageNet under {root}")
    for name, value in REAL.items():
        monkeypatch.setattr(mi, name, value)
    s = mi.load_miniimagenet(root, "val")
    assert s.images.shape == (9600, 3, 84, 84) and s.n_classes == 16
    assert s.class_items()[1].tolist() == [600] * 16
    assert all(abs(m * 255 - r) < 0.01 for m, r in zip(s.mean, (120.10, 114.71, 102.89)))  # README
