"""The installed package is found through the ``lungseg`` entry points, as any third party's.

Also checks, through the real command line, that broken third-party plugins next to it are
reported by name and do not stop a recipe that does not use them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lungseg.core.manager import load_registry
from lungseg.core.recipe import load_recipe
from lungseg.inference.figures import read_epoch_log

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_lraspp.yaml"
NAMES = {
    "model": ["tv-fcn-resnet50", "tv-deeplabv3-mobilenet", "tv-lraspp-mobilenet"],
    "loss": ["tversky"],
}
PROVIDERS = {"model": "lungseg-torchvision:models", "loss": "lungseg-torchvision:losses"}


def _lungseg(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lungseg", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )


def test_entry_points_register_every_name():
    registry = load_registry()
    for kind, names in NAMES.items():
        for name in names:
            assert registry.get(kind, name).plugin == PROVIDERS[kind]


def test_the_recipe_names_only_registered_plugins():
    load_recipe(RECIPE).check_plugins(load_registry())


def test_cli_lists_the_names_with_their_provider(tmp_path):
    shown = _lungseg("plugins", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for name in NAMES["model"]:
        assert f"{name} [lungseg-torchvision:models] (in_channels=1, out_channels=1)" in (
            " ".join(shown.stdout.split())
        )
    assert "tversky [lungseg-torchvision:losses] (alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0)" in (
        " ".join(shown.stdout.split())
    )


def _fake_dist(site: Path, name: str, source: str) -> None:
    """An installed distribution: a module and a dist-info with a ``lungseg`` entry point."""
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lungseg]\nplugin = {name}\n")


def test_broken_plugins_are_reported_and_do_not_stop_other_recipes(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_dist(site, "lungseg_broken_import", "import a_module_that_is_not_installed\n")
    _fake_dist(
        site,
        "lungseg_bad_hook",
        """
        from lungseg import hookimpl

        @hookimpl
        def lungseg_add_models(registry, extra_argument):
            pass
        """,
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    shown = _lungseg("plugins", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "broken plugin lungseg_broken_import:plugin: import failed: ModuleNotFoundError" in (
        shown.stdout
    )
    assert "broken plugin lungseg_bad_hook:plugin: invalid hook" in shown.stdout
    assert "tv-lraspp-mobilenet" in shown.stdout  # the working plugins are all still there

    done = _lungseg("preprocess", str(RECIPE), "--workers", "1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "4 cases written" in done.stdout
    assert (tmp_path / "data" / "tiny-lraspp.zarr").is_dir()


@pytest.mark.slow
def test_the_tiny_recipe_runs_end_to_end(tmp_path):
    """The recipe, trained four epochs instead of one: the model learns on its slices.

    Its validation Dice is 0 at this budget and will not tell a learning model from a broken
    one: LR-ASPP's batch norms (momentum 0.01) keep running statistics far from the data for
    hundreds of steps, so in eval mode it predicts nothing (measured Dice 0.0 after 1, 4 and
    40 epochs, at 32 and 96 pixels). The losses per epoch are what this test checks.
    """
    done = _lungseg("run", str(RECIPE), "--set", "trainer.max_epochs=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "runs" / "tiny-lraspp"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val"
    assert metrics["cases_with_tumour"] >= 1
    scored = [r["dice"] for r in metrics["per_case"] if r["tumour_voxels"] > 0]
    assert metrics["mean_case_dice"] == pytest.approx(sum(scored) / len(scored))
    log = read_epoch_log(out / "logs" / "metrics.csv")
    assert sorted(log["train_loss"]) == sorted(log["val_loss"]) == [0, 1, 2, 3]
    train, val = log["train_loss"], log["val_loss"]
    assert all(train[e + 1] < train[e] for e in range(3))  # measured 1.55, 1.44, 1.37, 1.32
    assert train[3] < 0.92 * train[0]
    assert val[3] < val[0]  # measured 1.598 -> 1.553
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 1
    assert "tv-lraspp-mobilenet" in (out / "recipe.yaml").read_text()
