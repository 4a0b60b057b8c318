"""lungseg's output: messages by level to stderr, results to stdout, bars only when wanted."""

from __future__ import annotations

import functools
import io
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lungseg.core import console
from lungseg.data.transfer import Transfer


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset():
    yield
    console.configure(0)


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [(-1, ["warning"]), (0, ["info", "warning"]), (1, ["debug", "info", "warning"])],
)
def test_levels_follow_verbosity_and_go_to_stderr(capsys, verbosity, shown):
    console.configure(verbosity)
    console.log.debug("debug")
    console.log.info("info")
    console.log.warning("warning")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == shown


def test_results_go_to_stdout_at_every_verbosity(capsys):
    console.configure(-1)
    console.result("mask: a.nii.gz")
    assert capsys.readouterr() == ("mask: a.nii.gz\n", "")


def test_messages_follow_a_replaced_stderr(monkeypatch):
    console.configure(0)
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)  # as pytest or a caller does after setup
    console.log.info("still seen")
    assert later.getvalue() == "still seen\n"


def test_bars_are_off_on_a_pipe_and_with_quiet_unless_forced(capsys):
    console.configure(0)  # stderr here is not a terminal
    assert not console.progress_enabled()
    list(console.progress(range(2), desc="hidden"))
    assert capsys.readouterr().err == ""
    console.configure(0, progress=True)
    assert console.progress_enabled()
    list(console.progress(range(2), desc="shown", unit="case"))
    assert "shown:" in capsys.readouterr().err
    list(console.progress(range(2), desc="off", enabled=False))  # the caller's own switch
    assert capsys.readouterr().err == ""
    console.configure(-1)
    assert not console.progress_enabled()


def test_a_download_shows_a_bar_in_bytes(tmp_path: Path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    (served / "file.bin").write_bytes(b"x" * 300_000)
    handler = functools.partial(_Quiet, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.bin"
        console.configure(0, progress=True)
        done = Transfer(url, tmp_path / "file.bin", progress=True).run()
        err = capsys.readouterr().err
        assert done.read_bytes() == b"x" * 300_000
        assert "file.bin:" in err and "293k" in err  # 300000 B in KiB, the total
        console.configure(0)  # not a terminal: no bar
        Transfer(url, tmp_path / "again.bin", progress=True).run()
        assert capsys.readouterr().err == ""
    finally:
        server.shutdown()
        server.server_close()
