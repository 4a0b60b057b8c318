"""The ``preprocess`` stage: parallel and sharded runs, kill and resume, bad inputs, memory."""

from __future__ import annotations

import gzip
import re
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

from lungseg.errors import DataError, RecipeError
from lungseg.preprocess import parse_shard, preprocess_case, run_preprocess
from lungseg.preprocessing import Chain
from lungseg.recipe import Recipe, recipe_from_dict
from lungseg.sources import Case
from lungseg.store import SliceStore
from lungseg.synth import make_case

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
    recipe = _recipe(data, tmp_path / "s.zarr")
    attrs = reference["lung_001"]["attrs"]
    assert attrs["complete"] is True and attrs["slices"] == 30
    assert attrs["kept_slices"] == list(range(10, 40))
    assert attrs["preprocess"] == recipe.preprocess_dict()
    assert attrs["preprocess_hash"] == recipe.preprocess_hash()
    assert reference["root"]["preprocess_hash"] == recipe.preprocess_hash()
    assert reference["root"]["format_version"] == 1
    steps = [t["step"] for t in attrs["trace"]]
    assert steps == ["canonical", "skip-slices", "normalize", "resize"]
    assert attrs["image_path"].endswith("lung_001.nii.gz")
    image = reference["lung_001"]["image"]
    assert image.dtype == np.float16 and image.shape == (30, 16, 16)


def test_preprocess_case_never_makes_float64(data):
    from lungseg.manager import load_registry

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
    from lungseg.manager import load_registry

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


# ----------------------------------------------------------------------------- bad inputs


def _like(data: Path, case: str = "lung_001") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = nib.load(str(data / "imagesTr" / f"{case}.nii.gz"))
    label = nib.load(str(data / "labelsTr" / f"{case}.nii.gz"))
    return np.asarray(image.dataobj), np.asarray(label.dataobj), image.affine


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _bad_image(data: Path, kind: str) -> Path:
    """Adds case ``lung_900`` broken in one way; returns the file the message must name."""
    image, label, affine = _like(data)
    image_path = data / "imagesTr" / "lung_900.nii.gz"
    label_path = data / "labelsTr" / "lung_900.nii.gz"
    _save(image_path, image, affine)
    _save(label_path, label, affine)
    if kind == "garbage":
        image_path.write_bytes(b"this is not a NIfTI file")
    elif kind == "truncated":
        # a real gzip stream cut short: the header reads, the voxels do not
        blob = (data / "imagesTr" / "lung_001.nii.gz").read_bytes()
        image_path.write_bytes(blob[: len(blob) // 2])
    elif kind == "truncated-header":
        image_path.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 60))
    elif kind == "empty-file":
        image_path.write_bytes(b"")
    elif kind == "shape":
        _save(label_path, label[:, :, :-1], affine)
        return label_path
    elif kind == "affine":
        moved = affine.copy()
        moved[0, 3] += 5.0
        _save(label_path, label, moved)
        return label_path
    elif kind == "label-values":
        bad = label.copy()
        bad[0, 0, 0] = 2
        _save(label_path, bad, affine)
        return label_path
    elif kind == "2d":
        _save(image_path, image[:, :, 0], affine)
    elif kind == "4d":
        _save(image_path, np.stack([image, image], axis=3), affine)
    elif kind in ("nan", "inf"):
        floats = image.astype(np.float32)
        floats[3, 4, 20] = np.nan if kind == "nan" else np.inf
        _save(image_path, floats, affine)
    elif kind == "few-slices":
        _save(image_path, image[:, :, :8], affine)
        _save(label_path, label[:, :, :8], affine)
    else:
        raise AssertionError(kind)
    return image_path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("garbage", "not a readable NIfTI file"),
        ("truncated", "could not read the voxel data"),
        ("truncated-header", "not a readable NIfTI file"),
        ("empty-file", "not a readable NIfTI file"),
        ("shape", r"label shape \(32, 32, 39\) differs from image shape \(32, 32, 40\)"),
        ("affine", "label affine differs from the image's"),
        ("label-values", r"label values must be 0 and 1, found \[0, 1, 2\]"),
        ("2d", "expected a 3D volume, got 2D"),
        ("4d", "expected a 3D volume, got 4D"),
        ("nan", "contains NaN or infinite values"),
        ("inf", "contains NaN or infinite values"),
        ("few-slices", "has 8 slices but skip-slices drops the first 10"),
    ],
)
def test_a_bad_case_is_named_and_damages_nothing(data, tmp_path, reference, kind, message):
    path = tmp_path / "reference.zarr"  # the store the fixture filled
    named = _bad_image(data, kind)
    with pytest.raises(DataError) as info:
        run_preprocess(_recipe(data, path), workers=1, progress=False)
    text = str(info.value)
    assert "\n" not in text
    assert "1 of 1 cases failed" in text and "the others were stored" in text
    assert f"lung_900: {named}" in text
    assert len(re.findall(message, text)) == 1, text
    assert SliceStore(str(path)).cases() == [f"lung_00{i}" for i in range(1, 6)]
    assert_same_store(snapshot(path), reference)


def test_lung_crop_without_lung_is_named(data, tmp_path):
    _, label, affine = _like(data)
    solid = np.full(label.shape, 40, np.int16)  # soft tissue everywhere: no air inside a body
    _save(data / "imagesTr" / "lung_900.nii.gz", solid, affine)
    _save(data / "labelsTr" / "lung_900.nii.gz", label, affine)
    chain = [{"name": "canonical"}, {"name": "lung-crop"}, *CHAIN[2:]]
    with pytest.raises(DataError, match=r"lung_900\.nii\.gz: lung-crop found no lung"):
        run_preprocess(_recipe(data, tmp_path / "crop.zarr", chain), workers=1, progress=False)
    assert SliceStore(str(tmp_path / "crop.zarr")).cases() == [f"lung_00{i}" for i in range(1, 6)]


def test_empty_data_folder_is_named_and_the_store_untouched(data, tmp_path, reference):
    empty = tmp_path / "empty"
    (empty / "imagesTr").mkdir(parents=True)
    (empty / "labelsTr").mkdir()
    path = tmp_path / "reference.zarr"
    with pytest.raises(DataError, match=r"imagesTr holds no \.nii\.gz / \.nii images"):
        run_preprocess(_recipe(empty, path), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)


def test_image_without_label_is_named_and_the_store_untouched(data, tmp_path, reference):
    image, _, affine = _like(data)
    _save(data / "imagesTr" / "lung_900.nii.gz", image, affine)
    path = tmp_path / "reference.zarr"
    with pytest.raises(DataError, match=r"imagesTr/lung_900\.nii\.gz \(no label\)"):
        run_preprocess(_recipe(data, path), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)


def test_bad_cases_in_parallel_are_all_reported_and_the_rest_stored(data, tmp_path):
    _bad_image(data, "truncated")
    broken = data / "labelsTr" / "lung_003.nii.gz"
    broken.write_bytes(b"\x00" * 10)
    path = tmp_path / "par.zarr"
    with pytest.raises(DataError) as info:
        run_preprocess(_recipe(data, path), workers=2, progress=False)
    text = str(info.value)
    assert "2 of 6 cases failed" in text
    assert "lung_003: " in text and str(broken) in text and "lung_900: " in text
    assert SliceStore(str(path)).cases() == ["lung_001", "lung_002", "lung_004", "lung_005"]


def test_store_from_another_chain_is_refused_before_any_work(data, tmp_path, reference):
    path = tmp_path / "reference.zarr"
    other = [*CHAIN[:3], {"name": "resize", "size": 32}]
    with pytest.raises(DataError, match="different preprocessing chain.*--overwrite"):
        run_preprocess(_recipe(data, path, other), workers=1, progress=False)
    assert_same_store(snapshot(path), reference)
    report = run_preprocess(_recipe(data, path, other), workers=1, overwrite=True, progress=False)
    assert len(report.written) == 5
    assert zarr.open_group(str(path), mode="r")["lung_001/image"].shape == (30, 32, 32)


@pytest.mark.parametrize(
    ("stored", "scaled", "suffix"),
    [
        (np.int16, False, ".nii.gz"),
        (np.uint8, False, ".nii.gz"),
        (np.float64, False, ".nii.gz"),
        (np.uint16, True, ".nii.gz"),  # scl_slope / scl_inter: nibabel's own reader
        (np.int16, False, ".nii"),
    ],
)
def test_read_image_gives_float32_with_no_wider_temporary(tmp_path, stored, scaled, suffix):
    from lungseg.volume import read_image

    values = np.random.default_rng(0).integers(0, 255, (48, 40, 30)).astype(stored)
    image = nib.Nifti1Image(values, np.diag([-0.8, -0.8, 2.0, 1.0]))
    if scaled:
        image.header.set_slope_inter(0.5, -1024)
    path = tmp_path / f"ct{suffix}"
    nib.save(image, str(path))
    tracemalloc.start()
    try:
        data, geometry = read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.dtype == np.float32 and geometry.shape == (48, 40, 30)
    want = nib.load(str(path)).get_fdata(dtype=np.float32)  # scaled: float32 arithmetic here
    np.testing.assert_allclose(data, want, rtol=1e-6, atol=0)
    # the stored voxels and one float32 array; a float64 step would add 8 bytes a voxel
    assert peak < (np.dtype(stored).itemsize + 4) * values.size * 1.1 + 2**16
