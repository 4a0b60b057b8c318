"""A real 2-process DDP run on CPU (gloo): sampler shards, validation shards, DDP metrics.

The run happens in a subprocess (Lightning's DDP launcher re-runs that script as rank 1), so
no process group leaks into pytest. Each rank records the dataset indices it actually loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import pytorch_lightning as pl
import yaml

from lungseg.core.build import assemble
from lungseg.core.recipe import load_recipe
from lungseg.training.checkpoint import load_checkpoint
from lungseg.training.dataset import SliceDataModule, SliceDataset, open_store, split_cases
from lungseg.training.sampling import DistributedWeightedSampler, class_balanced_weights

from ..conftest import tiny_recipe_dict

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import pytorch_lightning as pl
    from torch.utils.data import Dataset

    from lungseg.core.build import assemble
    from lungseg.training.dataset import SliceDataModule
    from lungseg.core.recipe import load_recipe
    from lungseg.training.trainer import build_trainer


    class Recorded(Dataset):
        def __init__(self, inner, dm, split):
            self.inner, self.dm, self.split = inner, dm, split
            self.slice_labels = getattr(inner, "slice_labels", None)

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            t = self.dm.trainer
            if not t.sanity_checking:
                key = f"{t.state.fn.value}:{self.split}:{t.current_epoch}"
                self.dm.record.setdefault(key, []).append(int(i))
            return self.inner[i]


    class RecordingData(SliceDataModule):
        record = {}

        def setup(self, stage=None):
            super().setup(stage)
            self.train_set = Recorded(self.train_set, self, "train")
            self.val_set = Recorded(self.val_set, self, "val")


    recipe = load_recipe(sys.argv[1])
    out = Path(recipe.output)
    pl.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    data = RecordingData(assemble(recipe))
    module = assemble(recipe).module()
    trainer, _, _ = build_trainer(recipe, out, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=data)
    last = str(out / "checkpoints" / "last.ckpt")
    metrics = trainer.validate(module, datamodule=data, ckpt_path=last)
    dump = {"rank": trainer.global_rank, "world": trainer.world_size,
            "record": data.record, "metrics": metrics[0]}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(dump))
    """
)


@pytest.mark.slow
def test_two_process_ddp_shards_training_and_validation_correctly(tiny_dataset, tmp_path):
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["preprocess"][1]["count"] = 11  # 29 slices per case
    raw["split"]["val_fraction"] = 0.6  # 3 val cases: 87 slices, shards of 44 and 43
    raw["augment"] = {"enabled": False}
    raw["trainer"].update(devices=2, strategy="ddp", max_epochs=2, loggers=["csv"])
    recipe_file = tmp_path / "ddp.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, str(script), str(recipe_file)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]

    recipe = load_recipe(recipe_file)
    store = open_store(recipe)
    splits = split_cases(store.cases(), 0.6, 0.0, recipe.split.seed)
    labels = SliceDataset(store, splits["train"]).slice_labels
    n_val = len(SliceDataset(store, splits["val"]))
    assert len(labels) == 58 and n_val == 87

    draws = []
    for epoch in (0, 1):
        shares = [r["record"][f"fit:train:{epoch}"] for r in ranks]
        assert len(shares[0]) == len(shares[1]) == 29
        full = DistributedWeightedSampler(
            class_balanced_weights(labels), num_replicas=2, rank=0, seed=recipe.trainer.seed
        )
        full.set_epoch(epoch)
        draw = full.draw().tolist()
        # rank r loaded positions r, r+2, ...: disjoint, and together the whole weighted draw
        assert [shares[i % 2][i // 2] for i in range(58)] == draw
        assert 0.3 < labels[draw].mean() < 0.7  # tumour slices are about half (of 58)
        draws.append(draw)
    assert draws[0] != draws[1]

    for key in ("fit:val:0", "fit:val:1", "validate:val:2"):  # validate: after epoch 1
        shards = [r["record"][key] for r in ranks]
        assert shards[0] + shards[1] == list(range(n_val))  # each once, in order
        assert sorted(map(len, shards)) == [43, 44]

    # the same weights validated in one process give the same metrics
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    single = load_recipe(recipe_file, ["trainer.devices=1", "trainer.strategy=auto"])
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (metrics,) = trainer.validate(module, datamodule=SliceDataModule(assemble(single)))
    assert metrics["val_dice"] == pytest.approx(ranks[0]["metrics"]["val_dice"], abs=1e-12)
    assert metrics["val_loss"] == pytest.approx(ranks[0]["metrics"]["val_loss"], rel=1e-5)
    assert not np.isnan(metrics["val_loss"])
