"""The slice store on object storage: an S3 bucket served by moto on localhost.

Skipped when moto or s3fs is missing (both are in the ``dev`` extra).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

from lungseg.core.recipe import load_recipe, recipe_from_dict  # noqa: E402
from lungseg.inference.evaluate import evaluate  # noqa: E402
from lungseg.inference.figures import read_epoch_log  # noqa: E402
from lungseg.preprocess.run import run_preprocess  # noqa: E402
from lungseg.store.slices import SliceStore  # noqa: E402
from lungseg.training.dataset import SliceDataset  # noqa: E402
from lungseg.training.train import train  # noqa: E402

from ..conftest import tiny_recipe_dict  # noqa: E402

BUCKET = "lungseg-test"


@pytest.fixture(scope="module")
def s3_options():
    """A moto S3 server on a free localhost port with one empty bucket; fsspec options."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield {
            "endpoint_url": endpoint,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }
    finally:
        server.stop()


def _one_case(url: str, options: dict, key: str, slices: int, seed: int):
    """A new store at ``url`` holding one random 16x16 case: ``(image, mask)``."""
    store = SliceStore(url, options)
    store.initialise([{"name": "resize", "size": 16}], key, overwrite=False)
    rng = np.random.default_rng(seed)
    image = rng.random((slices, 16, 16), dtype=np.float32)
    mask = (rng.random((slices, 16, 16)) > 0.7).astype(np.uint8)
    attrs = {"geometry": {"shape": [16, 16, slices]}, "trace": []}
    store.write_case("lung_001", image, mask, attrs)
    return image, mask


def test_write_and_read_a_store_on_s3(s3_options):
    url = f"s3://{BUCKET}/direct.zarr"
    image, mask = _one_case(url, s3_options, "hash-s3", slices=5, seed=0)

    again = SliceStore(url, s3_options)
    assert again.cases() == ["lung_001"]
    assert again.root_attrs()["preprocess_hash"] == "hash-s3"
    got_image, got_mask = again.read_case("lung_001")
    np.testing.assert_allclose(got_image, image, atol=1e-3)
    np.testing.assert_array_equal(got_mask, mask)
    uncached = SliceStore(url, s3_options, cache_bytes=0)
    slice_image, slice_mask = uncached.read_slice("lung_001", 3)
    assert uncached._handles("lung_001").fast is None  # a URL is read through zarr
    np.testing.assert_array_equal(slice_image, got_image[3])
    np.testing.assert_array_equal(slice_mask, mask[3])
    np.testing.assert_array_equal(again.tumor_pixels("lung_001"), mask.reshape(5, -1).sum(1))


def test_preprocess_into_s3_with_parallel_workers_and_train_reads(
    s3_options, tiny_dataset, tmp_path
):
    url = f"s3://{BUCKET}/preprocessed.zarr"
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["store"] = {"path": url, "storage_options": s3_options}
    recipe = recipe_from_dict(raw)
    report = run_preprocess(recipe, workers=2, progress=False)
    assert report.written == [f"lung_00{i}" for i in range(1, 6)] and not report.failed

    local = tmp_path / "local.zarr"
    local_raw = {**raw, "store": {"path": str(local)}}
    run_preprocess(recipe_from_dict(local_raw), workers=1, progress=False)

    remote, reference = SliceStore(url, s3_options), SliceStore(str(local))
    assert remote.cases() == reference.cases()
    for case_id in reference.cases():
        for got, want in zip(remote.read_case(case_id), reference.read_case(case_id), strict=True):
            np.testing.assert_array_equal(got, want)
        assert remote.attrs(case_id) == reference.attrs(case_id)

    # a DataLoader epoch with worker processes, each opening the bucket itself
    dataset = SliceDataset(SliceStore(url, s3_options), remote.cases())
    loader = DataLoader(dataset, batch_size=16, num_workers=0, shuffle=False)
    images, masks = zip(*loader, strict=True)
    assert sum(len(b) for b in images) == len(dataset) == 5 * 30
    assert torch.cat(images).shape == (150, 1, 32, 32)
    want = SliceDataset(reference, reference.cases())
    torch.testing.assert_close(torch.cat(masks), torch.stack([want[i][1] for i in range(150)]))

    # resumable there too: a second run finds every case complete
    again = run_preprocess(recipe, workers=2, progress=False)
    assert again.written == [] and len(again.skipped) == 5

    # a real (one-epoch) training run whose only store is the bucket gives the same weights
    # as the same run on the local copy: every slice it read came back intact
    raw["trainer"] = {**raw["trainer"], "max_epochs": 1, "num_workers": 0}
    local_raw["trainer"] = raw["trainer"]
    local_raw["output"] = str(tmp_path / "local-run")
    on_s3 = train(recipe_from_dict(raw))
    log = read_epoch_log(Path(raw["output"]) / "logs" / "metrics.csv")
    assert set(log) >= {"train_loss", "val_loss", "val_dice"} and list(log["train_loss"]) == [0]
    on_disk = train(recipe_from_dict(local_raw))
    got, want = (torch.load(r.last, weights_only=True)["state_dict"] for r in (on_s3, on_disk))
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_loader_workers_read_the_bucket(s3_options):
    url = f"s3://{BUCKET}/workers.zarr"
    _, mask = _one_case(url, s3_options, "hash-workers", slices=6, seed=1)
    # the parent reads first, so forked workers inherit open handles bound to its event loop
    dataset = SliceDataset(SliceStore(url, s3_options), ["lung_001"])
    got = torch.cat([m for _, m in DataLoader(dataset, batch_size=2, num_workers=2)])
    np.testing.assert_array_equal(got[:, 0].numpy(), mask)


def test_credentials_in_a_recipe_are_never_written(s3_options, tiny_dataset, tmp_path):
    secrets = {"key": "AKIA-LUNGSEG-KEY-7f3a", "secret": "lungseg-secret-9c1e"}
    token = "lungseg-session-token-42b8"
    options = {**s3_options, **secrets}
    options["client_kwargs"] = {**options["client_kwargs"], "aws_session_token": token}
    raw = tiny_recipe_dict(tiny_dataset, tmp_path)
    raw["store"] = {"path": f"s3://{BUCKET}/secrets.zarr", "storage_options": options}
    raw["trainer"] = {**raw["trainer"], "max_epochs": 1}
    path = tmp_path / "with-secrets.yaml"  # the user's own file: it holds them, as written
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    run_preprocess(recipe, workers=1, progress=False)
    result = train(recipe)
    evaluate(recipe, result.best, figures=False)

    run = Path(recipe.output)
    written = [p for p in run.rglob("*") if p.is_file()]
    assert {"recipe.yaml", "best.ckpt", "last.ckpt", "metrics.json", "metrics.csv"} <= {
        p.name for p in written
    }
    s3 = s3fs.S3FileSystem(**s3_options)
    objects = [k for k in s3.find(f"{BUCKET}/secrets.zarr") if k.endswith("zarr.json")]
    blobs = [(str(p), p.read_bytes()) for p in written] + [(k, s3.cat(k)) for k in objects]
    for value in (*secrets.values(), token):
        leaks = [name for name, blob in blobs if value.encode() in blob]
        assert not leaks, f"{value} written to {leaks}"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())["store"]["storage_options"]
    assert saved == {
        "endpoint_url": s3_options["endpoint_url"],
        "client_kwargs": {"region_name": "us-east-1"},
    }
