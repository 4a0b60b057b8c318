"""Each documented exit status, through the real command (subprocesses) or ``main``."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from lungseg import exit_codes
from lungseg.cli import main
from lungseg.core.errors import (
    CheckpointError,
    DataError,
    LungsegError,
    OutputError,
    PluginError,
    RecipeError,
)

from .conftest import LUNGSEG, lungseg


def test_the_codes_are_distinct_and_the_errors_map_onto_them():
    codes = [code for code, _ in exit_codes.TABLE]
    assert codes == [0, 2, 3, 4, 130, 141] and len(set(codes)) == len(codes)
    for error in (RecipeError, PluginError, OutputError, LungsegError):
        assert exit_codes.for_error(error("x")) == exit_codes.USAGE, error
    for error in (DataError, CheckpointError):
        assert exit_codes.for_error(error("x")) == exit_codes.DATA, error


def test_success_is_0(capsys):
    assert main(["plugins"]) == exit_codes.OK
    assert "models:" in capsys.readouterr().out


def test_usage_errors_are_2(tmp_path):
    bad_option = lungseg("train", "r.yaml", "--no-such-option")
    assert bad_option.returncode == 2 and "unrecognized arguments" in bad_option.stderr
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: unte}")
    bad_recipe = lungseg("train", str(recipe))
    assert bad_recipe.returncode == exit_codes.USAGE and "did you mean 'unet'" in bad_recipe.stderr
    # OutputError: a folder lungseg did not make is never written into
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = lungseg("synth", str(tmp_path / "mine"), "--cases", "1")
    assert refused.returncode == exit_codes.USAGE and "did not make" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_data_and_checkpoint_errors_are_3(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{source: folder, root: {tmp_path / 'nowhere'}}}\n")
    missing_data = lungseg("preprocess", str(recipe))
    assert missing_data.returncode == exit_codes.DATA
    assert "data.root" in missing_data.stderr and "Traceback" not in missing_data.stderr
    ckpt = str(tmp_path / "missing.ckpt")
    missing_ckpt = lungseg("predict", "s.nii.gz", "--checkpoint", ckpt, "--out", str(tmp_path))
    assert missing_ckpt.returncode == exit_codes.DATA
    assert f"{ckpt}: checkpoint not found" in missing_ckpt.stderr


@pytest.mark.slow
def test_predict_with_some_inputs_failing_is_4_and_with_all_failing_3(tiny_trained, tmp_path):
    recipe, best = tiny_trained
    scan = f"{recipe.data.root}/imagesTs/lung_006.nii.gz"
    missing = str(tmp_path / "missing.nii.gz")
    common = ["--checkpoint", str(best), "--device", "cpu"]
    partial = lungseg("predict", scan, missing, "--out", str(tmp_path / "a"), *common)
    assert partial.returncode == exit_codes.PARTIAL, partial.stderr
    assert f"mask: {tmp_path / 'a' / 'lung_006.nii.gz'}" in partial.stdout
    assert f"{missing}: no such file" in partial.stderr and "1 input(s) failed" in partial.stderr
    failed = lungseg("predict", missing, "--out", str(tmp_path / "b"), *common)
    assert failed.returncode == exit_codes.DATA and failed.stdout == ""


def test_ctrl_c_is_130_without_a_traceback(tmp_path):
    out = tmp_path / "syn"
    args = ["synth", str(out), "--cases", "50", "--size", "128", "--slices", "100"]
    proc = subprocess.Popen(
        [*LUNGSEG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8"
    )
    try:
        deadline = time.monotonic() + 120
        while not any((out / "imagesTr").glob("*.nii.gz")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == exit_codes.INTERRUPTED
    assert stderr.strip() == "lungseg: interrupted" and stdout == ""


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before lungseg writes its first line
    try:
        return subprocess.run([*LUNGSEG, *args], stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)


def test_a_closed_stdout_is_141_and_silent():
    proc = _with_closed_stdout("plugins")
    assert proc.returncode == exit_codes.BROKEN_PIPE
    assert proc.stderr == b""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["predict", "--help"]])
def test_help_into_a_closed_pipe_is_silent(args):
    proc = _with_closed_stdout(*args)
    assert proc.stderr == b""
    assert proc.returncode in (exit_codes.OK, exit_codes.BROKEN_PIPE)  # argparse ignores it


def test_plugins_piped_into_head_prints_no_traceback():
    first = subprocess.Popen([*LUNGSEG, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=first.stdout, stdout=subprocess.PIPE)
    first.stdout.close()  # head alone holds the read end
    line, _ = head.communicate(timeout=120)
    stderr = first.stderr.read()
    first.wait(timeout=120)
    first.stderr.close()
    assert line == b"preprocessors:\n"
    assert stderr == b""
    # 141 when head closed the pipe before lungseg finished writing, 0 when it had not yet
    assert first.returncode in (exit_codes.OK, exit_codes.BROKEN_PIPE)
