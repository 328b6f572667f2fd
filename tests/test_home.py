"""The tests keep out of the real home folder: ~ is a folder of their own (conftest), and what
libraries write under ~ (Ray's auth token, matplotlib's font cache) lands there."""

import os
from pathlib import Path

import conftest


def test_home_is_the_tests_own_folder():
    assert Path.home() == conftest.TEST_HOME != conftest.REAL_HOME
    assert os.environ["MPLCONFIGDIR"].startswith(str(conftest.TEST_HOME))


def test_a_file_written_under_a_watched_folder_is_seen_and_others_are_not(tmp_path):
    home = tmp_path / "home"
    (home / ".pyenv" / "versions").mkdir(parents=True)
    before = conftest.home_files(home)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("x")
    (home / ".config" / "matplotlib").mkdir(parents=True)
    (home / ".config" / "matplotlib" / "matplotlibrc").write_text("x")
    (home / ".pyenv" / "versions" / "big").write_text("not walked")
    (home / ".cache" / "oneshot").mkdir(parents=True)  # a training run beside the tests
    (home / ".cache" / "oneshot" / "omniglot-56.npz").write_text("x")
    (home / "notes.txt").write_text("x")
    assert conftest.home_files(home) - before == {".ray", ".ray/auth_token", ".config/matplotlib",
                                                  ".config/matplotlib/matplotlibrc"}


def test_matplotlib_and_ray_keep_their_files_in_the_test_home():
    import matplotlib

    assert Path(matplotlib.get_cachedir()).is_relative_to(conftest.TEST_HOME)
    try:
        from ray._private.authentication.authentication_token_setup import _get_default_token_path
    except ImportError:  # ray is optional; without it there is nothing of Ray's to place
        return
    assert _get_default_token_path().is_relative_to(conftest.TEST_HOME)
