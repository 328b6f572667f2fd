"""The Omniglot loader: structure checks, protocols, the cache, corrupt input, real counts."""

import zipfile

import pytest
import torch

from oneshot.data import omniglot
from oneshot.data.cache import cache_root
from oneshot.data.load import load_split
from oneshot.errors import DataError


def test_vinyals_splits_rotate_characters(small_omniglot):
    train = load_split("omniglot", "vinyals", "train", small_omniglot)
    assert train.images.shape == (24 * 20, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.n_classes == 24 and train.class_names[1].endswith("/rot090")
    # rot090 of a class is the rot000 images turned a quarter (class 0 and 1 are the same character)
    base = train.images[train.labels == 0]
    assert torch.equal(train.images[train.labels == 1], torch.rot90(base, 1, dims=(-2, -1)))
    assert train.groups.tolist()[:4] == [train.groups[0].item()] * 4


def test_lake_protocols_use_background_and_evaluation(small_omniglot):
    tr = load_split("omniglot", "lake", "train", small_omniglot)
    te = load_split("omniglot", "lake-within", "test", small_omniglot)
    assert (tr.n_classes, te.n_classes) == (6, 4)
    assert len(te.group_names) == 2 and te.groups.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="splits 'train'"):
        load_split("omniglot", "lake", "val", small_omniglot)


def test_twenty_runs_are_fixed_episodes(small_omniglot):
    s = load_split("omniglot", "lake-20runs", "test", small_omniglot)
    assert s.episodes.shape == (20, 20, 2)
    assert len(s.images) == 800 and s.n_classes == 400
    # every episode pairs one training image (shot) with one test item of the same class
    assert torch.equal(s.labels[s.episodes[..., 0]], s.labels[s.episodes[..., 1]])


def test_ink_is_bright_and_box_resampled(small_omniglot):
    native = load_split("omniglot", "lake", "train", small_omniglot, size=105)
    small = load_split("omniglot", "lake", "train", small_omniglot, size=28)
    assert native.images.shape[-1] == 105
    # background (white in the PNG) becomes 0; the ink fraction survives resampling
    assert native.images.float().mean().item() == pytest.approx(small.images.float().mean().item(), rel=0.05)
    assert set(native.images.unique().tolist()) <= {0, 255}


def test_decodes_once_then_reads_cache(small_omniglot, monkeypatch):
    load_split("omniglot", "vinyals", "test", small_omniglot)
    entries = list(cache_root().glob("omniglot-28-*"))
    assert len(entries) == 1

    def fail(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(omniglot, "_decode_sets", fail)
    load_split("omniglot", "vinyals", "val", small_omniglot)  # served from cache
    monkeypatch.undo()


def test_changed_source_or_size_gets_a_new_cache_entry(small_omniglot):
    load_split("omniglot", "lake", "train", small_omniglot)
    load_split("omniglot", "lake", "train", small_omniglot, size=32)
    zp = small_omniglot / "omniglot" / "images_evaluation.zip"
    with zipfile.ZipFile(zp, "a") as z:  # appending changes size and mtime
        z.comment = b"changed"
    load_split("omniglot", "lake", "train", small_omniglot)
    assert len(list(cache_root().glob("omniglot-28-*"))) == 2
    assert len(list(cache_root().glob("omniglot-32-*"))) == 1


def test_truncated_archive_is_refused_with_its_name(small_omniglot):
    zp = small_omniglot / "omniglot" / "images_background.zip"
    data = zp.read_bytes()
    zp.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="images_background.zip"):
        load_split("omniglot", "lake", "train", small_omniglot)


def test_corrupt_member_is_refused_with_its_name(small_omniglot):
    zp = small_omniglot / "omniglot" / "images_evaluation.zip"
    with zipfile.ZipFile(zp) as z:
        members = {n: z.read(n) for n in z.namelist()}
    victim = sorted(members)[3]
    members[victim] = b"not a png"
    with zipfile.ZipFile(zp, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(DataError, match=victim.split("/")[-1]):
        load_split("omniglot", "lake", "test", small_omniglot)


def test_wrong_tree_is_refused(small_omniglot):
    zp = small_omniglot / "omniglot" / "images_background.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("images_background/Only_One/character01/0001_01.png", b"x")
    with pytest.raises(DataError, match="expected 6 in 2"):
        load_split("omniglot", "lake", "train", small_omniglot)


def test_extracted_tree_reads_like_the_zip(small_omniglot, tmp_path):
    from_zip = load_split("omniglot", "lake", "test", small_omniglot)
    folder = small_omniglot / "omniglot"
    for stem in omniglot.SETS:
        with zipfile.ZipFile(folder / f"{stem}.zip") as z:
            z.extractall(folder)
        (folder / f"{stem}.zip").unlink()
    from_tree = load_split("omniglot", "lake", "test", small_omniglot)
    assert torch.equal(from_zip.images, from_tree.images)


def test_extracted_runs_read_like_the_zip(small_omniglot):
    from_zip = load_split("omniglot", "lake-20runs", "test", small_omniglot)
    folder = small_omniglot / "omniglot"
    with zipfile.ZipFile(folder / "all_runs.zip") as z:  # its names start with runNN/, not all_runs/
        z.extractall(folder / "all_runs")
    (folder / "all_runs.zip").unlink()
    from_tree = load_split("omniglot", "lake-20runs", "test", small_omniglot)
    assert torch.equal(from_zip.images, from_tree.images) and from_zip.class_names == from_tree.class_names


@pytest.mark.parametrize("form", ["tree", "zip"])
def test_hidden_files_and_junk_are_skipped(small_omniglot, form):
    clean = load_split("omniglot", "lake", "train", small_omniglot)
    folder = small_omniglot / "omniglot"
    zp = folder / "images_background.zip"
    if form == "tree":  # extracted, then browsed in Finder and Explorer
        with zipfile.ZipFile(zp) as z:
            z.extractall(folder)
            char = folder / z.namelist()[0].rsplit("/", 1)[0]
        zp.unlink()
        (char / ".DS_Store").write_bytes(b"\0Bud1")
        (char / "Thumbs.db").write_bytes(b"junk")
        (folder / "images_background" / ".DS_Store").write_bytes(b"\0Bud1")
    else:  # zipped on a Mac
        with zipfile.ZipFile(zp, "a") as z:
            z.writestr("__MACOSX/images_background/._Bac_Alphabet_0", b"resource fork")
            z.writestr("images_background/.DS_Store", b"\0Bud1")
    assert torch.equal(load_split("omniglot", "lake", "train", small_omniglot).images, clean.images)


def test_missing_dataset_says_where_it_looked_and_how_to_fetch(tmp_path):
    with pytest.raises(DataError) as e:
        load_split("omniglot", "vinyals", "test", tmp_path)
    assert str(tmp_path) in str(e.value) and "oneshot data fetch omniglot" in str(e.value)


def test_unknown_protocol_and_split(small_omniglot):
    with pytest.raises(DataError, match="protocol"):
        load_split("omniglot", "nope", "test", small_omniglot)
    with pytest.raises(DataError, match="splits"):
        load_split("omniglot", "vinyals", "holdout", small_omniglot)


def test_real_omniglot_counts(real_root):
    expected = {("vinyals", "train"): 4112, ("vinyals", "val"): 688, ("vinyals", "test"): 1692,
                ("vinyals", "trainval"): 4800, ("lake", "train"): 964, ("lake", "test"): 659}
    for (protocol, split), n in expected.items():
        s = load_split("omniglot", protocol, split, real_root)
        assert s.n_classes == n and len(s.images) == 20 * n
    within = load_split("omniglot", "lake-within", "test", real_root)
    assert len(within.group_names) == 20
    background = load_split("omniglot", "lake", "train", real_root)
    assert len(background.group_names) == 30
    runs = load_split("omniglot", "lake-20runs", "test", real_root)
    assert runs.episodes.shape == (20, 20, 2)
