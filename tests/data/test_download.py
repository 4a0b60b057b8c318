"""lungseg.data.download against a real HTTP server on 127.0.0.1 and a fake Kaggle API object."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lungseg.core.errors import DataError, RecipeError
from lungseg.core.safety import MARKER, claim_dir
from lungseg.data import download, transfer
from lungseg.data.msd import find_cases

from .test_archives import _file, _layout, _link, _tar


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    requests: list[dict[str, str | None]]
    honour_range: bool  # False: answer 200 with the whole file even to a Range request
    cut_after: int | None  # close the connection after this many body bytes ...
    cuts_left: int  # ... this many times


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, requested = 0, self.headers.get("Range")
        if requested and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested)[1])  # type: ignore[index]
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None and srv.cuts_left > 0:
            srv.cuts_left -= 1
            body = body[: srv.cut_after]
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.honour_range, srv.cut_after, srv.cuts_left = {}, [], True, None, 0
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str = "/Task06_Lung.tar") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _leftover_part(folder: Path, data: bytes) -> Path:
    """What an interrupted earlier download leaves: its claimed folder and a ``.part`` file."""
    claim_dir(folder, "download", role="download folder")
    part = folder / "Task06_Lung.tar.part"
    part.write_bytes(data)
    return part


def _listing(folder: Path) -> list[str]:
    """The names in ``folder`` except lungseg's own marker."""
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER)


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "_RETRY_DELAY_S", 0.0)


def test_complete_download_verifies_extracts_and_is_idempotent(
    server: _Server, tmp_path: Path
) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    root = download.download_msd(tmp_path / "data", _url(server), _md5(archive), progress=False)
    assert root == tmp_path / "data" / "Task06_Lung"
    assert [c.case_id for c in find_cases(root)] == ["lung_001", "lung_002"]
    assert (tmp_path / "data" / "Task06_Lung.tar").read_bytes() == archive
    assert not (tmp_path / "data" / "Task06_Lung.tar.part").exists()
    hidden = [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]
    assert hidden == [MARKER]  # no temporary files left
    assert len(server.requests) == 1 and server.requests[0]["range"] is None
    again = download.download_msd(tmp_path / "data", _url(server), _md5(archive), progress=False)
    assert again == root and len(server.requests) == 1


def test_interrupted_download_resumes_with_range(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    server.cut_after, server.cuts_left = 3000, 1
    root = download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert [r["range"] for r in server.requests] == [None, "bytes=3000-"]
    assert (tmp_path / "Task06_Lung.tar").read_bytes() == archive
    assert len(find_cases(root)) == 2


def test_leftover_part_file_is_resumed(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    _leftover_part(tmp_path, archive[:1000])
    download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert [r["range"] for r in server.requests] == ["bytes=1000-"]


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    server.honour_range = False
    _leftover_part(tmp_path, b"stale bytes " * 100)
    download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert (tmp_path / "Task06_Lung.tar").read_bytes() == archive


def test_complete_part_file_answered_416_is_used(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    _leftover_part(tmp_path, archive)
    download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert [r["range"] for r in server.requests] == [f"bytes={len(archive)}-"]


def test_stalled_download_keeps_part_and_says_to_rerun(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    server.cut_after, server.cuts_left = 0, 1000  # every answer ends before its first byte
    _leftover_part(tmp_path, archive[:512])
    with pytest.raises(DataError, match=r"512 bytes are kept .*run the same command again"):
        download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert len(server.requests) == transfer._MAX_STALLS
    assert (tmp_path / "Task06_Lung.tar.part").stat().st_size == 512
    server.cuts_left = 0
    download.download_msd(tmp_path, _url(server), _md5(archive), progress=False)
    assert server.requests[-1]["range"] == "bytes=512-"


def test_wrong_md5_deletes_archive_and_extracts_nothing(server: _Server, tmp_path: Path) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    with pytest.raises(DataError) as caught:
        download.download_msd(tmp_path, _url(server), "0" * 32, progress=False)
    message = str(caught.value)
    assert "Task06_Lung.tar" in message and "0" * 32 in message and _md5(archive) in message
    assert "deleted" in message
    assert _listing(tmp_path) == []


def test_http_error_and_unreachable_server(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download.download_msd(tmp_path, _url(server, "/missing.tar"), None, progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connections are refused
    with pytest.raises(DataError, match="run the same command again"):
        download.download_msd(tmp_path, f"http://127.0.0.1:{port}/x.tar", None, progress=False)


def test_bad_md5_string_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="md5"):
        download.download_msd(tmp_path, "http://127.0.0.1:1/x.tar", "not-hex", progress=False)


@pytest.mark.parametrize(
    ("evil", "member"),
    [
        (lambda out: [_file("../evil")], "../evil"),
        (lambda out: [_file(str(out / "evil"))], "/evil"),
        (lambda out: [_link("Task06_Lung/escape", "../../outside")], "Task06_Lung/escape"),
        (lambda out: [_link("Task06_Lung/abs", str(out))], "Task06_Lung/abs"),
        (lambda out: [_link("hard", "../outside/x", tarfile.LNKTYPE)], "hard"),
        (lambda out: [_link("d", "imagesTr"), _file("d/x")], "d/x"),
    ],
    ids=["dotdot", "absolute", "symlink", "absolute-symlink", "hardlink", "through-symlink"],
)
def test_malicious_tar_is_refused(server: _Server, tmp_path: Path, evil: Any, member: str) -> None:
    outside, target = tmp_path / "outside", tmp_path / "target"
    outside.mkdir()
    archive = _tar(_layout("Task06_Lung"), evil(outside))
    server.files["/Task06_Lung.tar"] = archive
    with pytest.raises(DataError, match=re.escape(member)):
        download.download_msd(target, _url(server), _md5(archive), progress=False)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "target"]
    assert _listing(target) == ["Task06_Lung.tar"]  # nothing extracted


def test_cli_downloads_msd_and_prints_folder(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tar(_layout("Task06_Lung"))
    server.files["/Task06_Lung.tar"] = archive
    parser = argparse.ArgumentParser(prog="lungseg")
    download.register_cli(parser.add_subparsers(dest="command", required=True))
    argv = ["download", "msd", "--to", str(tmp_path), "--url", _url(server), "--md5"]
    args = parser.parse_args([*argv, _md5(archive)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "Task06_Lung"))
    assert parser.parse_args(["download", "kaggle", "a/b", "--to", "x"]).dataset == "a/b"


@pytest.fixture
def no_kaggle_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def test_kaggle_without_credentials_explains_how(
    no_kaggle_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t-key-value")  # a key without a user name is not enough
    with pytest.raises(DataError) as caught:
        download.download_kaggle("someone/msd-lung", tmp_path / "data")
    message = str(caught.value)
    for needle in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json"):
        assert needle in message
    assert "s3cr3t-key-value" not in message


def test_kaggle_credentials_are_found_in_env_or_files(
    no_kaggle_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not download._kaggle_credentials_found()
    (no_kaggle_credentials / ".kaggle").mkdir()
    (no_kaggle_credentials / ".kaggle" / "kaggle.json").write_text("{}")
    assert download._kaggle_credentials_found()
    (no_kaggle_credentials / ".kaggle" / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "kaggle.json").write_text("{}")
    assert download._kaggle_credentials_found()
    (tmp_path / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert download._kaggle_credentials_found()


class _FakeKaggleApi:
    """Stands in for an authenticated kaggle KaggleApi: writes ``<path>/<slug>.zip``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.calls: list[dict[str, Any]] = []

    def dataset_download_files(self, dataset: str, path: str, **kwargs: Any) -> None:
        self.calls.append({"dataset": dataset, "path": path, **kwargs})
        (Path(path) / f"{dataset.split('/')[1]}.zip").write_bytes(_zip(self.files))


def test_kaggle_zip_with_nested_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = _FakeKaggleApi(_layout("lung-data/nested/Task06_Lung"))
    monkeypatch.setattr(download, "_kaggle_api", lambda: api)
    root = download.download_kaggle("someone/msd-lung", tmp_path)
    assert root == tmp_path / "lung-data" / "nested" / "Task06_Lung"
    assert len(find_cases(root)) == 2
    assert api.calls == [
        {"dataset": "someone/msd-lung", "path": str(tmp_path), "unzip": False, "quiet": True}
    ]
    assert download.download_kaggle("someone/msd-lung", tmp_path) == root  # no second call
    assert len(api.calls) == 1


def test_kaggle_malicious_zip_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {**_layout("Task06_Lung"), "../evil.txt": b"boom"}
    monkeypatch.setattr(download, "_kaggle_api", lambda: _FakeKaggleApi(files))
    with pytest.raises(DataError, match=re.escape("../evil.txt")):
        download.download_kaggle("someone/msd-lung", tmp_path / "to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["to"]
    assert _listing(tmp_path / "to") == ["msd-lung.zip"]


def test_kaggle_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("msd-lung", "a/b/c", "../x", "", "a/"):
        with pytest.raises(RecipeError, match="OWNER/DATASET"):
            download.download_kaggle(bad, tmp_path)

    class Failing:
        def dataset_download_files(self, dataset: str, **kwargs: Any) -> None:
            raise RuntimeError("403 Forbidden")

    monkeypatch.setattr(download, "_kaggle_api", Failing)
    with pytest.raises(DataError, match="403 Forbidden"):
        download.download_kaggle("someone/private", tmp_path)
    api = _FakeKaggleApi({"readme.txt": b"no images here"})
    monkeypatch.setattr(download, "_kaggle_api", lambda: api)
    with pytest.raises(DataError, match="imagesTr"):
        download.download_kaggle("someone/other", tmp_path / "other")


def test_download_does_not_import_sources() -> None:
    """The dependency runs one way: sources -> download -> msd (no import cycle)."""
    code = "import sys, lungseg.data.download; print('lungseg.data.sources' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
