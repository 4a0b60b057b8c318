"""Shared fixtures: tiny synthetic MSD datasets and tiny recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lungseg.core.recipe import Recipe, load_recipe
from lungseg.data.synth import write_dataset

LUNGSEG = [sys.executable, "-m", "lungseg"]
"""The command line, run as a user runs it (a fresh interpreter)."""


def lungseg(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``lungseg ARGS`` in a subprocess; output captured as text."""
    return subprocess.run(
        [*LUNGSEG, *args],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=cwd,
        timeout=300,
    )


SHARED_CT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct" / "abdomen_ct.nii.gz"
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 32x32x40 labelled cases and one unlabelled test scan (MSD layout)."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    return write_dataset(root, cases=5, seed=1, size=32, slices=40, abdomen_slices=10, test_cases=1)


def tiny_recipe_dict(data_root: Path, work: Path, **overrides) -> dict:
    recipe = {
        "name": "tiny",
        "data": {
            "source": "synthetic",
            "root": str(data_root),
            "synthetic": {
                "cases": 5,
                "seed": 1,
                "size": 32,
                "slices": 40,
                "abdomen_slices": 10,
                "test_cases": 1,
            },
        },
        "store": {"path": str(work / "store.zarr")},
        "output": str(work / "run"),
        "preprocess": [
            {"name": "canonical"},
            {"name": "skip-slices", "count": 10},
            {"name": "normalize", "divisor": 3071},
            {"name": "resize", "size": 32},
        ],
        "split": {"val_fraction": 0.4, "seed": 0},
        "model": {"name": "unet", "features": [4, 8]},
        "optimizer": {"lr": 0.01},
        "trainer": {
            "max_epochs": 2,
            "batch_size": 8,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
        },
    }
    recipe.update(overrides)
    return recipe


@pytest.fixture
def tiny_recipe_file(tiny_dataset: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_dataset, tmp_path)))
    return path


@pytest.fixture
def tiny_recipe(tiny_recipe_file: Path) -> Recipe:
    return load_recipe(tiny_recipe_file)


@pytest.fixture(scope="session")
def tiny_trained(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny recipe preprocessed and trained for one epoch: ``(recipe, best checkpoint)``."""
    return train_tiny(tiny_dataset, tmp_path_factory.mktemp("trained"))


def train_tiny(data_root: Path, work: Path, **data: object) -> tuple[Recipe, Path]:
    """The tiny recipe (``data`` keys changed) preprocessed and trained for one epoch."""
    from lungseg.preprocess.run import run_preprocess
    from lungseg.training.train import train

    raw = tiny_recipe_dict(data_root, work)
    raw["data"].update(data)
    raw["trainer"]["max_epochs"] = 1
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    run_preprocess(recipe, workers=1)
    return recipe, Path(train(recipe).best)
