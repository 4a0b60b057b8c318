"""The ``preprocess`` stage: parallel and sharded runs, kill and resume, bad inputs, memory."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
import zarr

from lungseg.cli import main
from lungseg.core.build import assemble
from lungseg.core.errors import LungsegWarning, RecipeError
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.data.msd import Case
from lungseg.data.synth import make_case
from lungseg.preprocess.chain import Chain
from lungseg.preprocess.run import parse_shard, preprocess_case, run_preprocess
from lungseg.store.slices import SliceStore

from .test_lung_crop import zoomed_case

CHAIN = [
    {"name": "canonical"},
    {"name": "skip-slices", "count": 10},
    {"name": "normalize", "divisor": 3071},
    {"name": "resize", "size": 16},
]


def _recipe(data: Path, store: Path, chain: list | None = None) -> Recipe:
    return recipe_from_dict(
        {
            "data": {"source": "folder", "root": str(data)},
            "store": {"path": str(store)},
            "preprocess": chain or CHAIN,
        }
    )


def _copy_data(src: Path, dst: Path) -> Path:
    """A private copy of a dataset, paired by file name (no dataset.json)."""
    shutil.copytree(src, dst)
    (dst / "dataset.json").unlink(missing_ok=True)
    return dst


def snapshot(path: Path) -> dict:
    """Everything in a store, read with plain zarr: root attrs, every group's attrs and arrays."""
    root = zarr.open_group(str(path), mode="r")
    out: dict = {"root": dict(root.attrs)}
    for name, group in sorted(root.groups()):
        out[name] = {
            "attrs": dict(group.attrs),
            **{key: np.asarray(group[key][:]) for key in ("image", "mask", "tumor_pixels")},
        }
    return out


def assert_same_store(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    assert got["root"] == want["root"]
    for case_id in want:
        if case_id == "root":
            continue
        assert got[case_id]["attrs"] == want[case_id]["attrs"], case_id
        for key in ("image", "mask", "tumor_pixels"):
            np.testing.assert_array_equal(got[case_id][key], want[case_id][key], err_msg=case_id)


@pytest.fixture
def data(tiny_dataset, tmp_path) -> Path:
    return _copy_data(tiny_dataset, tmp_path / "data")


@pytest.fixture
def reference(data, tmp_path) -> dict:
    """The store of an uninterrupted, single-process run over ``data``."""
    run_preprocess(_recipe(data, tmp_path / "reference.zarr"), workers=1, progress=False)
    return snapshot(tmp_path / "reference.zarr")


# ----------------------------------------------------------------------------- what is stored


def test_each_case_records_its_kept_slices_and_recipe(data, tmp_path, reference):
    recipe = assemble(_recipe(data, tmp_path / "s.zarr")).recipe  # with plugin defaults
    attrs = reference["lung_001"]["attrs"]
    assert attrs["complete"] is True and attrs["slices"] == 30
    assert attrs["kept_slices"] == list(range(10, 40))
    assert attrs["preprocess"] == recipe.preprocess_dict()
    assert attrs["preprocess"][2] == {"name": "normalize", "divisor": 3071.0, "clip": None}
    assert attrs["preprocess_hash"] == recipe.preprocess_hash()
    assert reference["root"]["preprocess_hash"] == recipe.preprocess_hash()
    assert reference["root"]["format_version"] == 2
    steps = [t["step"] for t in attrs["trace"]]
    assert steps == ["canonical", "skip-slices", "normalize", "resize"]
    assert attrs["image_path"].endswith("lung_001.nii.gz")
    image = reference["lung_001"]["image"]
    assert image.dtype == np.int16 and image.shape == (30, 16, 16)  # quantised


def test_preprocess_case_never_makes_float64(data):
    from lungseg.core.manager import load_registry

    chain = Chain.from_components(_recipe(data, data / "unused").preprocess, load_registry())
    case = Case("lung_001", data / "imagesTr/lung_001.nii.gz", data / "labelsTr/lung_001.nii.gz")
    volume, _, _ = preprocess_case(case, chain)
    assert volume.image.dtype == np.float32 and volume.mask.dtype == np.uint8


def test_peak_memory_is_about_one_float32_copy_of_the_scan(tmp_path):
    # int16 on disk -> float32: 6 bytes a voxel must be alive at once; the old chain held three
    # float32 copies (read, reoriented, normalised). Non-RAS input, so canonical has work to do.
    image, label, affine = make_case(3, size=96, slices=120, abdomen_slices=30)
    for sub, array in (("imagesTr", image), ("labelsTr", label)):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(array, affine), str(tmp_path / sub / "lung_001.nii.gz"))
    from lungseg.core.manager import load_registry

    recipe = recipe_from_dict({"preprocess": [*CHAIN[:3], {"name": "resize", "size": 32}]})
    chain = Chain.from_components(recipe.preprocess, load_registry())
    case = Case(
        "lung_001", tmp_path / "imagesTr/lung_001.nii.gz", tmp_path / "labelsTr/lung_001.nii.gz"
    )
    float32_bytes = image.size * 4
    tracemalloc.start()
    try:
        volume, _, _ = preprocess_case(case, chain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.image.shape == (32, 32, 110)
    assert peak < 1.9 * float32_bytes, f"peak {peak / float32_bytes:.2f}x the float32 volume"


# ----------------------------------------------------------------------------- tumour removed


@pytest.fixture
def zoomed_data(tmp_path) -> tuple[Path, np.ndarray]:
    """Two scans zoomed inside the chest (lungs touching the border); returns the label."""
    data = tmp_path / "zoomed"
    image, label, affine = zoomed_case(4, 32, 40, 10)
    for sub, array in (("imagesTr", image), ("labelsTr", label)):
        (data / sub).mkdir(parents=True)
        for name in ("lung_001", "lung_002"):
            nib.save(nib.Nifti1Image(array, affine), str(data / sub / f"{name}.nii.gz"))
    return data, label


def _cutting_chain(label: np.ndarray) -> tuple[list, int]:
    """A chain whose skip-slices drops the lower half of the tumour's slices."""
    slices = np.flatnonzero(label.any((0, 1)))
    count = int(slices.min() + slices.max() + 1) // 2
    return [{"name": "canonical"}, {"name": "skip-slices", "count": count}, *CHAIN[2:]], count


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crop_into_the_tumour_is_warned_reported_and_stored(zoomed_data, tmp_path, workers):
    data, label = zoomed_data
    chain, count = _cutting_chain(label)
    share = label[:, :, :count].sum() / label.sum()
    assert 0.05 < share < 0.95
    store = tmp_path / "cut.zarr"
    with pytest.warns(LungsegWarning) as caught:
        report = run_preprocess(_recipe(data, store, chain), workers=workers, progress=False)
    messages = sorted(str(w.message) for w in caught if w.category is LungsegWarning)
    assert len(messages) == 2
    for case_id, message in zip(("lung_001", "lung_002"), messages, strict=True):
        assert message.startswith(f"{case_id}: the preprocessing chain's crops removed ")
        assert f"{100 * share:.3g}% of its tumour" in message
        assert f"({label[:, :, :count].sum()} of {label.sum()} labelled voxels)" in message
    assert report.tumour_removed == pytest.approx({"lung_001": share, "lung_002": share})
    attrs = snapshot(store)["lung_001"]["attrs"]
    assert attrs["tumour_voxels"] == label.sum()
    assert attrs["tumour_removed_fraction"] == pytest.approx(share, abs=1e-6)


def test_lung_crop_on_a_zoomed_view_removes_no_tumour(zoomed_data, tmp_path):
    data, label = zoomed_data
    chain = [{"name": "canonical"}, {"name": "lung-crop"}, *CHAIN[2:]]
    report = run_preprocess(_recipe(data, tmp_path / "lung.zarr", chain), progress=False)
    assert report.tumour_removed == {}  # no warning either: tests turn warnings into errors
    attrs = snapshot(tmp_path / "lung.zarr")["lung_001"]["attrs"]
    assert attrs["tumour_removed_fraction"] == 0.0 and attrs["tumour_voxels"] == label.sum()
    assert attrs["kept_slices"][0] <= np.flatnonzero(label.any((0, 1))).min()


def test_the_cli_shows_a_removed_tumour_as_one_line(zoomed_data, tmp_path):
    data, label = zoomed_data
    chain, _ = _cutting_chain(label)
    recipe = tmp_path / "cut.yaml"
    config = {"data": {"source": "folder", "root": str(data)}, "preprocess": chain}
    recipe.write_text(yaml.safe_dump({**config, "store": {"path": str(tmp_path / "c.zarr")}}))
    with pytest.warns(LungsegWarning) as caught:
        assert main(["preprocess", str(recipe), "--workers", "1"]) == 0
    assert len(caught) == 2
    # as a user sees it (outside pytest, which records warnings instead of printing them)
    recipe.write_text(yaml.safe_dump({**config, "store": {"path": str(tmp_path / "d.zarr")}}))
    command = [sys.executable, "-m", "lungseg", "preprocess", str(recipe), "--workers", "1"]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert [line.split(":")[:3] for line in lines] == [
        ["lungseg", " warning", " lung_001"],
        ["lungseg", " warning", " lung_002"],
    ]
    assert all(line.endswith("labelled voxels); check the crop steps") for line in lines)


def test_preprocess_case_counts_the_tumour_of_an_uncut_scan(data):
    from lungseg.core.manager import load_registry

    chain = Chain.from_components(_recipe(data, data / "unused").preprocess, load_registry())
    case = Case("lung_002", data / "imagesTr/lung_002.nii.gz", data / "labelsTr/lung_002.nii.gz")
    _, _, attrs = preprocess_case(case, chain)
    label = np.asarray(nib.load(case.label).dataobj)
    assert attrs["tumour_voxels"] == label.sum() > 0 and attrs["tumour_removed_fraction"] == 0.0
    unlabelled = Case("lung_002", case.image, None)
    _, _, attrs = preprocess_case(unlabelled, chain)
    assert attrs["tumour_voxels"] == 0 and attrs["tumour_removed_fraction"] == 0.0


# ----------------------------------------------------------------------------- scale out


def test_parallel_workers_write_the_same_store_as_one_process(data, tmp_path, reference):
    report = run_preprocess(_recipe(data, tmp_path / "par.zarr"), workers=2, progress=False)
    assert report.written == [f"lung_00{i}" for i in range(1, 6)] and report.slices == 150
    assert_same_store(snapshot(tmp_path / "par.zarr"), reference)


def test_shards_fill_one_store_together(data, tmp_path, reference):
    recipe = _recipe(data, tmp_path / "shards.zarr")
    first = run_preprocess(recipe, workers=1, shard="0/2", progress=False)
    second = run_preprocess(recipe, workers=1, shard="1/2", progress=False)
    assert first.written == ["lung_001", "lung_003", "lung_005"]
    assert second.written == ["lung_002", "lung_004"]
    assert_same_store(snapshot(tmp_path / "shards.zarr"), reference)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/3", "0/0"])
def test_bad_shard_is_a_recipe_error(text):
    with pytest.raises(RecipeError, match="--shard"):
        parse_shard(text)


def test_shard_parsing():
    assert parse_shard(None) == (0, 1) and parse_shard("3/4") == (3, 4)


# ----------------------------------------------------------------------------- crash and resume


@pytest.mark.filterwarnings("ignore:Object at lung_006 is not recognized")
def test_a_case_killed_mid_write_is_invisible_and_rewritten(data, tmp_path, reference):
    path = tmp_path / "resume.zarr"
    recipe = _recipe(data, path)
    run_preprocess(recipe, workers=1, progress=False)
    root = zarr.open_group(str(path), mode="a")
    # lung_002: killed after its arrays, before ``complete``; lung_004: killed inside the image
    root["lung_002"].attrs["complete"] = False
    shard = next(
        p for p in (path / "lung_004" / "image").rglob("*") if p.is_file() and "c" in p.parts
    )
    shard.write_bytes(shard.read_bytes()[:100])
    root["lung_004"].attrs.put({})
    (path / "lung_006").mkdir()  # a group created, nothing else
    assert SliceStore(str(path)).cases() == ["lung_001", "lung_003", "lung_005"]

    report = run_preprocess(recipe, workers=1, progress=False)
    assert report.written == ["lung_002", "lung_004"]
    assert report.skipped == ["lung_001", "lung_003", "lung_005"]
    shutil.rmtree(path / "lung_006")  # not a case of the data: left alone, as any stranger
    assert_same_store(snapshot(path), reference)


def _many_cases(tmp_path: Path, count: int) -> Path:
    """``count`` copies of one 128x128x60 case: enough work to be killed in the middle."""
    data = tmp_path / "many"
    image, label, affine = make_case(5, size=128, slices=60, abdomen_slices=20)
    for sub, array in (("imagesTr", image), ("labelsTr", label)):
        (data / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(array, affine), str(data / sub / "lung_001.nii.gz"))
        for i in range(2, count + 1):
            shutil.copy(data / sub / "lung_001.nii.gz", data / sub / f"lung_{i:03d}.nii.gz")
    return data


def _complete(path: Path) -> list[str]:
    try:
        return SliceStore(str(path)).cases()
    except Exception:  # not created yet, or a file being replaced under us
        return []


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    count = 24
    data = _many_cases(tmp_path, count)
    chain = [*CHAIN[:3], {"name": "resize", "size": 64}]
    killed_path, clean_path = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "folder", "root": str(data)},
                "store": {"path": str(killed_path)},
                "preprocess": chain,
            }
        )
    )
    command = [sys.executable, "-m", "lungseg", "preprocess", str(recipe_file), "--workers", "1"]
    log = tmp_path / "killed.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while not _complete(killed_path):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "no case was completed in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = _complete(killed_path)
    assert 1 <= len(done) < count, f"killed after {len(done)} of {count} cases"

    rerun = subprocess.run(
        command, capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{count - len(done)} cases written, {len(done)} already complete" in rerun.stdout

    run_preprocess(_recipe(data, clean_path, chain), workers=1, progress=False)
    killed, clean = snapshot(killed_path), snapshot(clean_path)
    assert len(clean) == count + 1
    assert_same_store(killed, clean)
