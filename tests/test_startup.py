"""Startup stays light: commands that need no network never import torch.

Each command runs in a fresh interpreter through :func:`lungseg.cli.main`, which then reports
the heavy packages in ``sys.modules``. Installed third-party plugins (the torchvision example
in this repository's environment) are loaded as usual, so their registration is covered too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_recipe_dict

HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning")

#: Runs ``lungseg ARGS`` in-process and prints, last, the exit code and heavy modules loaded.
_WRAPPER = f"""
import json, sys
from lungseg.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def _lungseg(*args: str, cwd: Path) -> tuple[dict, str]:
    """``(report, output)`` of ``lungseg ARGS`` run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_preprocess_imports_no_torch(tiny_dataset, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_dataset, tmp_path)))
    report, output = _lungseg("preprocess", str(recipe), "--workers", "1", cwd=tmp_path)
    assert report["code"] == 0, output
    assert "5 cases written" in output
    assert report["heavy"] == [], f"lungseg preprocess imported {report['heavy']}"
    # a second run finds the store complete: the fixed startup alone, still without torch
    report, output = _lungseg("preprocess", str(recipe), "--workers", "1", cwd=tmp_path)
    assert report["code"] == 0 and "5 already complete" in output
    assert report["heavy"] == []


def test_plugins_lists_every_plugin_without_importing_torch(tmp_path):
    report, output = _lungseg("plugins", cwd=tmp_path)
    assert report["code"] == 0
    assert report["heavy"] == [], f"lungseg plugins imported {report['heavy']}"
    flat = " ".join(output.split())
    assert (
        "unet [lungseg:unet] (in_channels=1, out_channels=1, features=(64, 128, 256, 512)" in flat
    )
    assert "bce [lungseg:losses] (pos_weight=None)" in flat
    assert "tumor-weighted [lungseg:samplers] (num_samples=None, replacement=True)" in flat
    assert "broken plugin" not in output


def test_the_example_plugin_registers_without_torch(tmp_path):
    pytest.importorskip("lungseg_torchvision")
    report, output = _lungseg("plugins", cwd=tmp_path)
    flat = " ".join(output.split())
    assert "tv-lraspp-mobilenet [lungseg-torchvision:models] (in_channels=1, out_channels=1)" in (
        flat
    )
    assert "tversky [lungseg-torchvision:losses] (alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0)" in (
        flat
    )
    assert report["heavy"] == []


def test_help_imports_no_torch(tmp_path):
    report, output = _lungseg("--help", cwd=tmp_path)
    assert report["code"] == 0 and "preprocess" in output
    assert report["heavy"] == []


def test_the_public_api_imports_nothing_heavy_until_used():
    code = (
        "import sys; from lungseg import api; import lungseg.plugins.samplers;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy'}));"
        "api.DistributedWeightedSampler; print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]
