"""oneshot.data.fetch against a local HTTP server (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from oneshot.data import fetch as F
from oneshot.errors import DataError, OneshotError

SPLIT_TEXT = "Angelic/character01/rot000\nAngelic/character01/rot090\nGujarati/character12/rot270\n"


def _make_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.fixture()
def server(tmp_path):
    """Serve tmp_path/www; yield (base_url, omniglot folder, request log, lies).

    `lies` maps a URL path to a Content-Length to declare instead of the real one."""
    www = tmp_path / "www"
    om = www / "omniglot"
    (om / "vinyals_split").mkdir(parents=True)
    for stem in ("images_background", "images_evaluation", "all_runs"):
        _make_zip(om / f"{stem}.zip", {f"{stem}/a/x{i}.png": bytes([i]) * 500 for i in range(3)})
    for s in ("train", "val", "test", "trainval"):
        (om / "vinyals_split" / f"{s}.txt").write_text(SPLIT_TEXT, encoding="utf-8")
    log: list[str] = []
    lies: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            log.append(self.path)
            if self.path in lies:
                body = (www / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(lies[self.path]))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", om, log, lies
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "data"
    r.mkdir()
    return r


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fixture_md5s(monkeypatch, om: Path) -> None:
    """Point the checksum table at the fixture zips (the canonical MD5s would refuse them)."""
    table = {("omniglot", k[1]): _md5(om / k[1]) for k in F.MD5 if k[0] == "omniglot"}
    monkeypatch.setattr(F, "MD5", table)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*part-*")]


def test_fetch_writes_all_then_skips(server, root, monkeypatch):
    base, om, log, _ = server
    _fixture_md5s(monkeypatch, om)
    paths = F.fetch("omniglot", root, base_url=base)
    rels = sorted(str(p.relative_to(root / "omniglot")) for p in paths)
    assert rels == sorted(F.SOURCES["omniglot"])
    for p in paths:
        assert p.read_bytes() == (om / p.relative_to(root / "omniglot")).read_bytes()
    assert sorted(log) == sorted(f"/omniglot/{r}" for r in rels)
    assert not _leftovers(root)

    log.clear()
    assert F.fetch("omniglot", root, base_url=base + "/") == paths
    assert log == []  # everything present and verified: nothing downloaded
    F.fetch("omniglot", root, base_url=base, force=True)
    assert len(log) == len(paths)


def test_corrupt_existing_file_is_replaced(server, root, monkeypatch):
    base, om, log, _ = server
    _fixture_md5s(monkeypatch, om)
    F.fetch("omniglot", root, base_url=base)
    bad = root / "omniglot" / "all_runs.zip"
    bad.write_bytes(bad.read_bytes()[:100])
    log.clear()
    F.fetch("omniglot", root, base_url=base)
    assert log == ["/omniglot/all_runs.zip"]
    assert bad.read_bytes() == (om / "all_runs.zip").read_bytes()


def test_truncated_body_leaves_nothing(server, root, monkeypatch):
    base, om, _, lies = server
    _fixture_md5s(monkeypatch, om)
    real = (om / "images_evaluation.zip").stat().st_size
    lies["/omniglot/images_evaluation.zip"] = real + 1000
    with pytest.raises(OneshotError, match="images_evaluation.zip") as e:
        F.fetch("omniglot", root, base_url=base)
    assert f"{base}/omniglot/images_evaluation.zip" in str(e.value)  # names the URL
    assert not (root / "omniglot" / "images_evaluation.zip").exists()
    assert (root / "omniglot" / "images_background.zip").is_file()  # earlier files kept
    assert not _leftovers(root)


def test_corrupt_zip_refused(server, root, monkeypatch):
    base, om, _, _ = server
    monkeypatch.setattr(F, "MD5", {})
    (om / "all_runs.zip").write_bytes(b"PK\x03\x04 this is not really a zip" * 20)
    with pytest.raises(DataError, match="all_runs.zip"):
        F.fetch("omniglot", root, base_url=base)
    assert not (root / "omniglot" / "all_runs.zip").exists()
    assert not _leftovers(root)


def test_bad_split_file_refused(server, root, monkeypatch):
    base, om, _, _ = server
    monkeypatch.setattr(F, "MD5", {})
    (om / "vinyals_split" / "val.txt").write_text("<html>Not Found</html>\n")
    with pytest.raises(DataError, match=r"val\.txt.*unexpected line"):
        F.fetch("omniglot", root, base_url=base)
    assert not (root / "omniglot" / "vinyals_split" / "val.txt").exists()
    assert not _leftovers(root)


def test_404_is_clear(server, root, monkeypatch):
    base, om, _, _ = server
    _fixture_md5s(monkeypatch, om)
    (om / "all_runs.zip").unlink()
    with pytest.raises(OneshotError, match=r"all_runs\.zip.*HTTP 404"):
        F.fetch("omniglot", root, base_url=base)
    assert not (root / "omniglot" / "all_runs.zip").exists()
    assert not _leftovers(root)


def test_md5_mismatch_refused(server, root):
    base, _, _, _ = server
    # The canonical checksums cannot match the fixture zips.
    with pytest.raises(DataError, match=r"images_background\.zip.*MD5"):
        F.fetch("omniglot", root, base_url=base)
    assert not (root / "omniglot" / "images_background.zip").exists()
    assert not _leftovers(root)


def test_md5_mismatch_on_force_keeps_good_file(server, root, monkeypatch):
    base, om, _, _ = server
    _fixture_md5s(monkeypatch, om)
    F.fetch("omniglot", root, base_url=base)
    good = (root / "omniglot" / "images_background.zip").read_bytes()
    monkeypatch.setitem(F.MD5, ("omniglot", "images_background.zip"), "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        F.fetch("omniglot", root, base_url=base, force=True)
    assert (root / "omniglot" / "images_background.zip").read_bytes() == good
    assert not _leftovers(root)


def test_miniimagenet_explains_layout(root):
    with pytest.raises(OneshotError, match="ImageNet") as e:
        F.fetch("miniimagenet", root)
    msg = str(e.value)
    assert "train.zip" in msg and "train.csv" in msg and "mini-imagenet-cache" in msg
    assert str(root / "miniimagenet") in msg


def test_unknown_dataset_and_bad_root(tmp_path):
    with pytest.raises(OneshotError, match="cannot fetch"):
        F.fetch("cifar", tmp_path)
    with pytest.raises(OneshotError, match="does not exist"):
        F.fetch("omniglot", tmp_path / "missing", base_url="http://127.0.0.1:9")
    (tmp_path / "omniglot").write_text("a file where the dataset folder should be")
    with pytest.raises(OneshotError, match="cannot write"):
        F.fetch("omniglot", tmp_path, base_url="http://127.0.0.1:9")


def test_canonical_sources():
    src = F.SOURCES["omniglot"]
    assert src["images_background.zip"] == (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip")
    assert src["vinyals_split/trainval.txt"].startswith(
        "https://raw.githubusercontent.com/jakesnell/prototypical-networks/")
    assert F.MD5[("omniglot", "images_evaluation.zip")] == "6b91aef0f799c5bb55b94e3f2daec811"
