"""benchmarks/gpu_check.sh and its Python parts, in their CPU dry mode, so they cannot rot.

The GPU figures themselves are measured on a GPU machine (benchmarks/README.md); here every
step runs at toy sizes on the CPU through the same code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LUNGSEG_WHEELS"}
    return subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_the_fp32_baseline_is_pytorchs_default_tf32_and_strict_is_measured_too():
    bench = _module("bench_gpu")
    labels = [v.label for v in bench.VARIANTS]
    assert labels[0].startswith("fp32 strict") and bench.BASELINE.startswith("fp32 default")
    before = torch.backends.cudnn.allow_tf32
    with bench.tf32(False):
        assert torch.backends.cudnn.allow_tf32 is False
    with bench.tf32(True):
        assert torch.backends.cudnn.allow_tf32 is True
    assert torch.backends.cudnn.allow_tf32 == before  # restored
    assert bench.peak_tflops("NVIDIA H200")[2] == pytest.approx(989.4)
    assert bench.peak_tflops("NVIDIA H100 PCIe")[1] == pytest.approx(378.0)
    assert bench.peak_tflops("Tesla T4") is None


@pytest.mark.slow
def test_bench_gpu_cpu_smoke_runs_every_variant(capsys):
    assert _module("bench_gpu").main(["--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    for label in _module("bench_gpu").VARIANTS:
        assert f"{label.label} " in out
    assert out.count("images/s") == 4 and "failed" not in out
    assert "TF32 convolutions (PyTorch's default) vs strict fp32: x" in out


def test_gpu_check_refuses_bad_usage_with_status_2(tmp_path: Path):
    done = _script("--bogus")
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    done = _script("--wheels", str(tmp_path / "nowhere"), "--cpu-smoke")
    assert done.returncode == 2 and "no such folder" in done.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    done = _script("--work", str(tmp_path / "busy"), "--cpu-smoke")
    assert done.returncode == 2 and "not empty" in done.stderr


def test_gpu_check_without_lungseg_needs_wheels(tmp_path: Path):
    # an interpreter that cannot import lungseg: the script asks for a wheel folder
    bare = tmp_path / "bare"
    bare.mkdir()
    fake = bare / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')  # no site-packages
    fake.chmod(0o755)
    done = _script("--python", str(fake), "--work", str(tmp_path / "w"), "--cpu-smoke")
    assert done.returncode == 2 and "pass --wheels DIR" in done.stderr


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step(tmp_path: Path):
    done = _script(
        "--cpu-smoke", "--python", sys.executable, "--work", str(tmp_path / "work"), timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "=== bench_gpu: passed" in out and "=== train: passed" in out
    assert "bf16-mixed + channels_last + compile" in out
    assert "images/s over 1 epoch(s) after the first; waiting on data" in out
    assert (tmp_path / "work" / "train" / "run" / "checkpoints" / "best.ckpt").is_file()
    assert "gpu_check: all steps passed" in out
