"""``lungseg run --resume``: finished stages untouched, an interrupted training resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lungseg.cli import main

from .conftest import tiny_recipe_dict

LUNGSEG = [sys.executable, "-m", "lungseg"]


def lungseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LUNGSEG, *args], capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )


def _recipe(tiny_dataset: Path, work: Path, max_epochs: int) -> str:
    raw = tiny_recipe_dict(tiny_dataset, work)
    raw["trainer"].update(max_epochs=max_epochs, loggers=["csv"])
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _files(*folders: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folders``: its modification time (ns) and bytes."""
    return {
        str(p): (p.stat().st_mtime_ns, p.read_bytes())
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resume_and_overwrite_together_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "r.yaml"), "--resume", "--overwrite"])
    assert exc.value.code == 2
    assert "--overwrite: not allowed with argument --resume" in capsys.readouterr().err
    from lungseg.core.errors import OutputError
    from lungseg.pipeline import run

    with pytest.raises(OutputError, match="pass only one"):
        run(tmp_path / "r.yaml", resume=True, overwrite=True)


@pytest.mark.slow
def test_resume_after_a_finished_run_writes_only_the_missing_mask(tiny_dataset, tmp_path):
    recipe = _recipe(tiny_dataset, tmp_path, max_epochs=1)
    first = lungseg("run", recipe)
    assert first.returncode == 0, first.stderr[-3000:]
    run, store = tmp_path / "run", tmp_path / "store.zarr"
    best = run / "checkpoints" / "best.ckpt"
    mask = run / "predictions" / "lung_006.nii.gz"
    mask.unlink()  # as if the job stopped while predicting
    before = _files(run, store, tiny_dataset)
    again = lungseg("run", recipe, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    after = _files(run, store, tiny_dataset)
    # the mask alone was written: best.ckpt, metrics.json, the store and the data untouched
    assert {k for k in after if after[k] != before.get(k)} == {str(mask)}
    assert after[str(best)] == before[str(best)]
    assert "training: finished earlier, kept" in again.stderr
    assert "evaluation: kept" in again.stderr
    assert f"[5/5] predictions: {run / 'predictions'} (1 masks, 0 kept)" in again.stdout
    # without --resume the finished run is refused, and nothing is changed
    refused = lungseg("run", recipe)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    assert _files(run, store, tiny_dataset) == after


def _wait_for_first_epoch(proc: subprocess.Popen, sidecar: Path, max_epochs: int) -> dict:
    """Kill ``proc`` once ``last.json`` records a validated epoch before the final one."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sidecar.is_file():
            proc.send_signal(signal.SIGSTOP)  # nothing is written between the look and the kill
            try:
                info = json.loads(sidecar.read_text())
            except ValueError:
                info = {}
            if info.get("val_dice") is not None and info["epoch"] < max_epochs - 1:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return info
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no epoch checkpoint before the end: {proc.communicate()[0][-3000:]}")


@pytest.mark.slow
def test_resume_after_a_killed_training_continues_from_last_ckpt(tiny_dataset, tmp_path):
    recipe = _recipe(tiny_dataset, tmp_path, max_epochs=3)
    run, store = tmp_path / "run", tmp_path / "store.zarr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*LUNGSEG, "run", recipe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    killed_at = _wait_for_first_epoch(proc, run / "checkpoints" / "last.json", 3)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    stored = _files(store, tiny_dataset)
    from lungseg.core.recipe import load_recipe
    from lungseg.run_state import training_state

    assert training_state(load_recipe(recipe)) == "interrupted"

    resumed = lungseg("run", recipe, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training: resuming from last.ckpt" in resumed.stderr
    assert _files(store, tiny_dataset) == stored  # the data and the store were reused as they are
    final = json.loads((run / "checkpoints" / "last.json").read_text())
    steps_per_epoch = killed_at["global_step"] // (killed_at["epoch"] + 1)
    assert final["epoch"] == 2 and final["global_step"] == 3 * steps_per_epoch
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle) if r.get("val_dice")]
    assert epochs == [0, 1, 2]  # went on from the killed epoch, never started again at 0
    assert training_state(load_recipe(recipe)) == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert (run / "predictions" / "lung_006.nii.gz").is_file()
