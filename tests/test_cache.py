"""The decode-once cache: keys, atomic entries, invalidation when the source changes, and
that a broken entry is never served as if it were whole."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from oneshot.data import cache, omniglot
from oneshot.data.cache import cache_key, cache_root, cached_arrays, fingerprint
from oneshot.data.load import load_split

from conftest import build_omniglot


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty cache of this test's own."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ONESHOT_CACHE", str(path))
    return path


def builder(seed=0, meta=None):
    """A build function that counts its calls and makes two seeded arrays."""
    calls = []

    def build():
        calls.append(1)
        rng = np.random.default_rng(seed)
        return ({"images": rng.integers(0, 256, (5, 1, 4, 4), dtype=np.uint8),
                 "labels": rng.integers(0, 3, 5).astype(np.int64)}, dict(meta or {"size": 4}))

    return build, calls


def entries(root):
    """Every name in the cache folder (entries and any temporary folder)."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_cache_root_is_the_environment_variable_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("ONESHOT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "oneshot"


def test_key_is_stable_and_changes_with_every_part():
    fp = [["omniglot/images_background.zip", 1000, 1_700_000_000_000_000_000]]
    key = cache_key(1, 28, fp)
    assert key == cache_key(1, 28, [list(fp[0])]) and len(key) == 16
    int(key, 16)  # hexadecimal: safe in a folder name
    others = [cache_key(2, 28, fp),  # format version
              cache_key(1, 105, fp),  # image size
              cache_key(1, 28, [[fp[0][0], 1001, fp[0][2]]]),  # source size
              cache_key(1, 28, [[fp[0][0], 1000, fp[0][2] + 1]]),  # source mtime
              cache_key(1, 28, fp + [["omniglot/images_evaluation.zip", 1, 1]])]  # another source
    assert len({key, *others}) == 6
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1}), "dict order does not matter"


def test_fingerprint_follows_size_mtime_and_tree_contents(tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(b"abcd")
    os.utime(src, ns=(1_000_000_000, 1_000_000_000))
    fp = fingerprint([src])
    assert fp == fingerprint([src]), "stable when nothing changes"
    src.write_bytes(b"abcd")  # same bytes, new time
    os.utime(src, ns=(2_000_000_000, 2_000_000_000))
    assert fingerprint([src]) != fp
    fp = fingerprint([src])
    src.write_bytes(b"abcde")  # new size, time put back
    os.utime(src, ns=(2_000_000_000, 2_000_000_000))
    assert fingerprint([src]) != fp

    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "x.png").write_bytes(b"1")
    fp = fingerprint([tree])
    (tree / "a" / "y.png").write_bytes(b"2")
    assert fingerprint([tree]) != fp, "a file added inside a tree"
    missing = tmp_path / "later.zip"
    fp = fingerprint([src, missing])
    assert fp == fingerprint([src]), "a missing source contributes nothing"
    missing.write_bytes(b"")
    assert fingerprint([src, missing]) != fp, "...until it appears"


def test_built_once_then_served_from_disk_read_only(root):
    build, calls = builder()
    want, want_meta = build()
    calls.clear()
    arrays, meta = cached_arrays("toy", "k1", build)
    assert len(calls) == 1
    for k in want:
        np.testing.assert_array_equal(arrays[k], want[k])
        assert arrays[k].dtype == want[k].dtype
    assert {k: v for k, v in meta.items() if k != "_arrays"} == want_meta

    def fails():
        raise AssertionError("a cached entry must not be rebuilt")

    again, meta2 = cached_arrays("toy", "k1", fails)
    assert meta2 == meta
    for k in want:
        np.testing.assert_array_equal(again[k], want[k])
    with pytest.raises(ValueError):  # memory-mapped read-only: nobody writes into the cache
        again["images"][0, 0, 0, 0] = 1
    copy, _ = cached_arrays("toy", "k1", fails, mmap=False)
    copy["images"][...] = 0  # a private copy: the entry is unchanged
    np.testing.assert_array_equal(cached_arrays("toy", "k1", fails)[0]["images"], want["images"])
    other, _ = cached_arrays("toy", "k2", builder(seed=1)[0])  # another key is another entry
    assert not np.array_equal(other["images"], want["images"])
    assert entries(root) == ["toy-k1", "toy-k2"]


def test_the_entry_appears_only_once_complete(root, monkeypatch):
    final = root / "toy-k"
    saves = []
    real_save = np.save

    def save(path, a, *args, **kw):
        assert not final.exists(), "the entry folder exists before its arrays are written"
        saves.append(os.path.basename(path))
        return real_save(path, a, *args, **kw)

    monkeypatch.setattr(np, "save", save)
    cached_arrays("toy", "k", builder()[0])
    assert sorted(saves) == ["images.npy", "labels.npy"]
    assert sorted(p.name for p in final.iterdir()) == ["images.npy", "labels.npy", "meta.json"]
    assert entries(root) == ["toy-k"], "no temporary folder is left"


def test_an_interrupted_write_leaves_nothing_and_the_next_call_builds(root, monkeypatch):
    real_save = np.save

    def dies_on_the_second_array(path, a, *args, **kw):
        if "labels" in os.path.basename(path):
            raise KeyboardInterrupt
        return real_save(path, a, *args, **kw)

    monkeypatch.setattr(np, "save", dies_on_the_second_array)
    with pytest.raises(KeyboardInterrupt):
        cached_arrays("toy", "k", builder()[0])
    assert entries(root) == [], "neither a half entry nor a temporary folder"

    def broken_build():
        raise RuntimeError("decode failed")

    monkeypatch.setattr(np, "save", real_save)
    with pytest.raises(RuntimeError):
        cached_arrays("toy", "k", broken_build)
    assert entries(root) == []
    build, calls = builder()
    arrays, _ = cached_arrays("toy", "k", build)
    assert len(calls) == 1 and arrays["labels"].shape == (5,)


def test_losing_a_race_serves_the_winners_entry(root):
    winner, _ = builder(seed=1)

    def slow_build():
        # while we decode, another process finishes the same entry
        cached_arrays("toy", "k", winner)
        return builder(seed=2)[0]()

    arrays, _ = cached_arrays("toy", "k", slow_build)
    np.testing.assert_array_equal(arrays["images"], winner()[0]["images"])
    assert entries(root) == ["toy-k"], "our temporary folder is removed"


def test_a_partial_entry_without_meta_is_rebuilt(root):
    partial = root / "toy-k"
    partial.mkdir(parents=True)
    np.save(partial / "images.npy", np.zeros((2, 1, 4, 4), np.uint8))  # stale, and no meta.json
    build, calls = builder()

    def bounded():
        if len(calls) >= 3:
            raise RuntimeError(f"built {len(calls)} times and still not served")
        return build()

    arrays, _ = cached_arrays("toy", "k", bounded)
    np.testing.assert_array_equal(arrays["images"], builder()[0]()[0]["images"])
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncated-array", "missing-array", "truncated-meta"])
@pytest.mark.parametrize("mmap", [True, False])
def test_a_damaged_entry_is_rebuilt_never_served(root, damage, mmap):
    build, _ = builder()
    want = build()[0]
    cached_arrays("toy", "k", build)
    entry = root / "toy-k"
    if damage == "truncated-array":
        data = (entry / "images.npy").read_bytes()
        (entry / "images.npy").write_bytes(data[: len(data) - 20])
    elif damage == "missing-array":
        (entry / "labels.npy").unlink()
    else:
        text = (entry / "meta.json").read_text()
        (entry / "meta.json").write_text(text[: len(text) // 2])
    arrays, _ = cached_arrays("toy", "k", build, mmap=mmap)  # rebuilt and replaced, never served damaged
    for k in want:
        np.testing.assert_array_equal(np.asarray(arrays[k]), want[k])


# ---- the real decoder: Omniglot keys its entry on the zips, the image size and FORMAT ----

def omniglot_entries(root, size=28):
    return sorted(p.name for p in root.glob(f"omniglot-{size}-*"))


def test_omniglot_entry_is_rebuilt_when_a_source_zip_changes(small_omniglot, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"  # the fixture's own cache
    first = load_split("omniglot", "lake", "test", small_omniglot, 28).images.clone()
    assert len(omniglot_entries(cache_dir)) == 1
    assert load_split("omniglot", "lake", "test", small_omniglot, 28).images.equal(first)
    assert len(omniglot_entries(cache_dir)) == 1, "unchanged sources reuse the entry"

    # new drawings in images_evaluation.zip (same names, other pixels)
    other = build_omniglot(tmp_path / "other", seed=1)
    zip_path = small_omniglot / "omniglot" / "images_evaluation.zip"
    old_stat = zip_path.stat()
    shutil.copyfile(other / "images_evaluation.zip", zip_path)
    os.utime(zip_path, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns + 10**9))
    second = load_split("omniglot", "lake", "test", small_omniglot, 28).images.clone()
    assert len(omniglot_entries(cache_dir)) == 2
    assert not second.equal(first), "the stale entry was served"
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "fresh"))
    assert load_split("omniglot", "lake", "test", small_omniglot, 28).images.equal(second), \
        "the rebuilt entry is what a fresh decode gives"

    # same bytes, new modification time: a new key as well (the key is cheap, not a hash)
    monkeypatch.setenv("ONESHOT_CACHE", str(cache_dir))
    os.utime(zip_path, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns + 2 * 10**9))
    assert load_split("omniglot", "lake", "test", small_omniglot, 28).images.equal(second)
    assert len(omniglot_entries(cache_dir)) == 3


def test_omniglot_entry_depends_on_size_and_format(small_omniglot, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    a = load_split("omniglot", "lake", "test", small_omniglot, 28).images
    b = load_split("omniglot", "lake", "test", small_omniglot, 20).images
    assert a.shape[-1] == 28 and b.shape[-1] == 20
    assert len(omniglot_entries(cache_dir, 28)) == 1 and len(omniglot_entries(cache_dir, 20)) == 1
    monkeypatch.setattr(omniglot, "FORMAT", omniglot.FORMAT + 1)
    decoded = []
    real = omniglot._decode_sets
    monkeypatch.setattr(omniglot, "_decode_sets", lambda *a, **k: decoded.append(1) or real(*a, **k))
    c = load_split("omniglot", "lake", "test", small_omniglot, 28).images
    assert decoded == [1], "a new format version decodes again"
    assert len(omniglot_entries(cache_dir, 28)) == 2
    assert c.equal(a)
