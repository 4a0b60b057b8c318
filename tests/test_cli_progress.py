"""Progress bars: on a terminal, never on a pipe or with ``-q``; evaluate has one over cases."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios

import pytest
import yaml

from lungseg.core import console
from lungseg.core.recipe import load_recipe

from .conftest import tiny_recipe_dict

#: What a tqdm bar draws: ``preprocess:  40%|####      | 2/5 [...]``.
BAR = "%|"


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``lungseg ARGS`` with stderr on a pseudo-terminal; its exit code and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24x120
    proc = subprocess.Popen(
        [sys.executable, "-m", "lungseg", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:  # drain the terminal while the command runs, so it never blocks on it
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal
                data = b""
            if not data and proc.poll() is not None:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def _recipe(tiny_dataset, tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_dataset, tmp_path)))
    return str(path)


def test_preprocess_shows_a_bar_on_a_terminal_and_not_on_a_pipe(tiny_dataset, tmp_path):
    recipe = _recipe(tiny_dataset, tmp_path)
    code, terminal = _stderr_on_a_terminal(["preprocess", recipe, "--workers", "1"])
    assert code == 0, terminal
    assert "preprocess:" in terminal and BAR in terminal and "0/5 [" in terminal
    # the same into another store, on a pipe: the message, no bar
    other = f"store.path={tmp_path / 'other.zarr'}"
    piped = subprocess.run(
        [sys.executable, "-m", "lungseg", "preprocess", recipe, "--workers", "1", "--set", other],
        capture_output=True,
        encoding="utf-8",
        timeout=300,
        cwd=tmp_path,
    )
    assert piped.returncode == 0 and BAR not in piped.stderr
    assert piped.stderr.startswith("preprocess: 5 cases to write")


def test_quiet_hides_the_bar_on_a_terminal(tiny_dataset, tmp_path):
    recipe = _recipe(tiny_dataset, tmp_path)
    code, terminal = _stderr_on_a_terminal(["preprocess", recipe, "--workers", "1", "-q"])
    assert code == 0, terminal
    assert terminal.strip() == ""


def test_progress_follows_the_configuration(capsys):
    console.configure(0, progress=True)
    try:
        assert list(console.progress(range(3), desc="work", unit="case")) == [0, 1, 2]
        shown = capsys.readouterr().err
        assert "work:" in shown and "0/3 [" in shown
        console.configure(-1)
        assert not console.progress_enabled()
        list(console.progress(range(3), desc="hidden"))
        assert "hidden" not in capsys.readouterr().err
    finally:
        console.configure(0)


@pytest.mark.slow
def test_evaluate_on_the_train_split_with_a_bar_over_cases(tiny_trained, tmp_path, capsys):
    from lungseg.cli import main
    from lungseg.inference.evaluate import evaluate

    recipe, _ = tiny_trained
    shutil.copytree(recipe.output, tmp_path / "run")
    raw = {**recipe.to_dict(), "output": str(tmp_path / "run")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    # the command line: train is a split like the others, into its own folder
    assert main(["evaluate", str(path), "--split", "train"]) == 0
    captured = capsys.readouterr()
    out = tmp_path / "run" / "evaluate_train"
    assert f"metrics: {out / 'metrics.json'}, {out / 'per_case.csv'}" in captured.out
    assert "mean_case_dice (train): " in captured.out and "%|" not in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "train" and len(metrics["per_case"]) == 3  # the 3 training cases
    # with bars on (a terminal), one over the cases
    console.configure(0, progress=True)
    try:
        evaluate(load_recipe(path), split="train", overwrite=True, figures=False)
    finally:
        console.configure(0)
    err = capsys.readouterr().err
    assert "evaluate:" in err and "0/3 [" in err and "case" in err
