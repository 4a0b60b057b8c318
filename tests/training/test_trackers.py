"""Experiment trackers (MLflow, W&B) through Lightning's loggers, and the progress bar switch."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from lungseg.cli import main
from lungseg.core import console
from lungseg.core.errors import RecipeError
from lungseg.core.recipe import recipe_from_dict
from lungseg.inference.figures import read_epoch_log
from lungseg.preprocess.run import run_preprocess
from lungseg.training.trackers import flat_params
from lungseg.training.train import train
from lungseg.training.trainer import build_loggers, build_trainer

from ..conftest import tiny_recipe_dict


def _recipe(data: Path, work: Path, **trainer):
    raw = tiny_recipe_dict(data, work)
    raw["trainer"].update(trainer)
    return recipe_from_dict(raw, source="tiny.yaml")


def test_mlflow_run_holds_the_recipe_epoch_metrics_checkpoint_and_curve(
    tiny_dataset, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it (file stores)
    uri = (tmp_path / "mlruns").as_uri()
    recipe = _recipe(
        tiny_dataset,
        tmp_path,
        max_epochs=2,
        loggers=["csv", "mlflow"],
        mlflow={"tracking_uri": uri, "experiment": "lung-tiny"},
    )
    run_preprocess(recipe, workers=1)
    result = train(recipe)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lung-tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.features"] == "[4, 8]"
    assert params["trainer.max_epochs"] == "2"
    assert params["preprocess.3.name"] == "resize" and params["preprocess.3.size"] == "32"
    assert params["trainer.mlflow.tracking_uri"] == uri
    for key in ("val_dice", "val_loss", "train_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == 2, key  # one per epoch
    history = sorted(client.get_metric_history(run.info.run_id, "val_dice"), key=lambda m: m.step)
    logged = read_epoch_log(tmp_path / "run" / "logs" / "metrics.csv")["val_dice"]
    assert [m.value for m in history] == pytest.approx([logged[0], logged[1]])  # the CSV's

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "loss_curve.png" in names and "checkpoints" in names
    saved = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert saved == {"checkpoints/best.ckpt", "checkpoints/best.json"}
    got = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp_path)))
    assert got.read_bytes() == Path(result.best).read_bytes()
    png = Path(client.download_artifacts(run.info.run_id, "loss_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flat_params_are_dotted_and_hold_no_secrets(tiny_dataset, tmp_path):
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["store"]["storage_options"] = {"key": "AKIA-SECRET", "endpoint_url": "http://s3.local"}
    params = flat_params(recipe_from_dict(raw))
    assert params["store.storage_options.endpoint_url"] == "http://s3.local"
    assert "AKIA-SECRET" not in str(params) and "store.storage_options.key" not in params
    assert params["split.val_fraction"] == 0.4 and params["augment.scale"] == [0.9, 1.1]
    assert all(not isinstance(v, dict) for v in params.values())


def test_mlflow_defaults_follow_mlflow_env_else_the_run_folder(tiny_dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "fold_1"
    (logger,) = build_loggers(_recipe(tiny_dataset, tmp_path, loggers=["mlflow"]), output)
    assert logger.experiment_id and logger.run_id  # created now, in the run folder's store
    local = (output / "logs" / "mlruns").resolve().as_uri()
    run = MlflowClient(local).get_run(logger.run_id)
    assert run.info.run_name == "fold_1"
    assert MlflowClient(local).get_experiment(logger.experiment_id).name == "tiny"  # recipe name
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # allowed for lungseg's default only

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "shared").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team")
    (logger,) = build_loggers(_recipe(tiny_dataset, tmp_path, loggers=["mlflow"]), output)
    shared = MlflowClient((tmp_path / "shared").as_uri())
    assert shared.get_experiment(logger.experiment_id).name == "team"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tiny_dataset, tmp_path, capsys):
    recipe = _recipe(tiny_dataset, tmp_path, loggers=["csv", "wandb"], wandb={"mode": "offline"})
    message = r"tiny\.yaml: trainer\.loggers: 'wandb' needs the wandb package.*'lungseg\[wandb\]'"
    with pytest.raises(RecipeError, match=message):
        train(recipe)
    assert not (tmp_path / "run").exists()  # refused before anything was written

    path = tmp_path / "tiny.yaml"
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["trainer"]["loggers"] = ["wandb"]
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'lungseg[wandb]'" in err and "\n" not in err and "Traceback" not in err

    # `lungseg run` refuses it before preparing any data: no store is written.
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'lungseg[wandb]'" in err and "\n" not in err
    assert not (tmp_path / "store.zarr").exists()


@pytest.mark.parametrize(
    ("recipe_bar", "console_bars", "shown"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_progress_bar_follows_the_recipe_and_the_console(
    tiny_dataset, tmp_path, monkeypatch, recipe_bar, console_bars, shown
):
    monkeypatch.setitem(console._settings, "progress", console_bars)  # as -q / a terminal set it
    recipe = _recipe(tiny_dataset, tmp_path, enable_progress_bar=recipe_bar, loggers=[])
    trainer, _, _ = build_trainer(recipe, tmp_path / "run")
    assert (trainer.progress_bar_callback is not None) is shown
