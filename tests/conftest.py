"""Shared fixtures: a tiny Omniglot built on the fly, the real data root, an isolated cache, and a
home folder of the tests' own (what a library writes under ~, Ray's token, matplotlib's font
cache, lands there; the session fails if the real home gained anything)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

REAL_HOME = Path.home()
# Libraries that keep files under ~ (Ray's ~/.ray/auth_token, matplotlib's font cache) must keep
# them here; set before any of them is imported, and inherited by every process a test starts.
TEST_HOME = Path(tempfile.mkdtemp(prefix="oneshot-test-home-"))
os.environ["HOME"] = str(TEST_HOME)
os.environ["MPLCONFIGDIR"] = str(TEST_HOME / ".config" / "matplotlib")
# a Ray started by a test keeps its sessions here, not in /tmp/ray (short: Ray's socket paths live here)
RAY_TMP = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
os.environ["RAY_TMPDIR"] = str(RAY_TMP)
# What the tests' own processes could write under a home folder: Ray's token and sessions,
# matplotlib's config and font cache. Only these are watched: other processes of the machine (a
# training run beside the tests, decoding into ~/.cache/oneshot) may write elsewhere under ~
# meanwhile, and that is not the tests' doing.
WATCHED = (".ray", ".config/matplotlib", ".cache/matplotlib", ".matplotlib")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from oneshot.data import omniglot


def home_files(home: Path) -> set[str]:
    """The WATCHED folders of `home` that exist, and every path under them."""
    out = set()
    for name in WATCHED:
        if (home / name).exists():
            out |= {name} | {str(p.relative_to(home)) for p in (home / name).rglob("*")}
    return out


HOME_BEFORE = home_files(REAL_HOME)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a test left anything in the real home folder; remove the test home."""
    added = sorted(home_files(REAL_HOME) - HOME_BEFORE)
    shutil.rmtree(TEST_HOME, ignore_errors=True)
    shutil.rmtree(RAY_TMP, ignore_errors=True)
    if added:
        print(f"\ntests wrote into the real home folder {REAL_HOME}: " + ", ".join(added[:20]))
        session.exitstatus = 1

SMALL_SETS = {"images_background": (6, 2), "images_evaluation": (4, 2)}


def png(rng: np.random.Generator, size: int = 105) -> bytes:
    """A one-bit PNG with a random blob of ink (black on white, like Omniglot)."""
    a = np.ones((size, size), dtype=bool)
    y, x = rng.integers(10, size - 30, 2)
    h, w = rng.integers(5, 25, 2)
    a[y:y + h, x:x + w] = False
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def build_omniglot(root: Path, seed: int = 0) -> Path:
    """Write a small Omniglot under root/omniglot in the canonical layout; returns the folder.

    images_background: 2 alphabets x 3 characters; images_evaluation: 2 x 2; 20 drawings
    each; vinyals split files over the rotated characters; all_runs.zip with 20 runs of
    20 classes (its images are random too)."""
    rng = np.random.default_rng(seed)
    folder = root / "omniglot"
    folder.mkdir(parents=True)
    gid = 1
    classes = []
    for stem, (n_chars, n_alpha) in SMALL_SETS.items():
        with zipfile.ZipFile(folder / f"{stem}.zip", "w") as z:
            for a in range(n_alpha):
                alpha = f"{stem[7:10].title()}_Alphabet_{a}"
                for c in range(n_chars // n_alpha):
                    char = f"character{c + 1:02d}"
                    classes.append(f"{alpha}/{char}")
                    for d in range(1, 21):
                        z.writestr(f"{stem}/{alpha}/{char}/{gid:04d}_{d:02d}.png", png(rng))
                    gid += 1
    rotated = [f"{c}/rot{r:03d}" for c in classes for r in (0, 90, 180, 270)]
    split = {"train": rotated[:24], "val": rotated[24:28], "test": rotated[28:], "trainval": rotated[:28]}
    (folder / "vinyals_split").mkdir()
    for name, lines in split.items():
        (folder / "vinyals_split" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    with zipfile.ZipFile(folder / "all_runs.zip", "w") as z:
        for r in range(1, 21):
            perm = rng.permutation(20)
            lines = []
            for i in range(20):
                z.writestr(f"run{r:02d}/training/class{i + 1:02d}.png", png(rng))
                z.writestr(f"run{r:02d}/test/item{i + 1:02d}.png", png(rng))
                lines.append(f"run{r:02d}/test/item{i + 1:02d}.png run{r:02d}/training/class{perm[i] + 1:02d}.png")
            z.writestr(f"run{r:02d}/class_labels.txt", "\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> str:
    """$ONESHOT_CACHE when set (CI sets it), else one temporary cache for the whole session."""
    return os.environ.get("ONESHOT_CACHE") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def isolated_cache(session_cache, monkeypatch):
    """Never write into the user's own cache from a test."""
    monkeypatch.setenv("ONESHOT_CACHE", session_cache)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny models: on a busy machine two threads mostly wait."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def small_omniglot(tmp_path, monkeypatch):
    """A tiny Omniglot data root with the structure checks scaled down to match it."""
    monkeypatch.setattr(omniglot, "SETS", SMALL_SETS)
    monkeypatch.setattr(omniglot, "VINYALS_SPLITS", {"train": 24, "val": 4, "test": 12, "trainval": 28})
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    build_omniglot(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real data root ($ONESHOT_DATA); tests that need it skip when it is absent."""
    env = os.environ.get("ONESHOT_DATA")
    if not env or not (Path(env) / "omniglot").is_dir():
        pytest.skip("real data not available: set ONESHOT_DATA to the folder holding omniglot/")
    return Path(env)
