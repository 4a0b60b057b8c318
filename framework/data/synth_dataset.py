"""Writing a synthetic dataset (:mod:`lungseg.data.synth` scans) in the Decathlon layout."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from lungseg.core.recipe_sections import SyntheticConfig
from lungseg.core.safety import claim_dir, refuse_existing, write_marker
from lungseg.data.volume import write_nifti

_DEFAULT = SyntheticConfig()  # the one home of the defaults: a recipe's data.synthetic


def write_dataset(
    out: str | os.PathLike,
    cases: int = _DEFAULT.cases,
    seed: int = _DEFAULT.seed,
    size: int = _DEFAULT.size,
    slices: int = _DEFAULT.slices,
    abdomen_slices: int = _DEFAULT.abdomen_slices,
    test_cases: int = _DEFAULT.test_cases,
    preset: str = _DEFAULT.preset,
    *,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes a synthetic dataset in the Decathlon Task06_Lung layout.

    Writes ``imagesTr/lung_001.nii.gz``..., the masks in ``labelsTr/``, ``test_cases`` unlabelled
    scans in ``imagesTs/`` numbered after them, and ``dataset.json`` (last, so a killed run is
    redone). Case ``i`` is ``make_case`` with a seed derived from ``(seed, i)``.

    ``out`` must be missing, empty, or a synthetic dataset folder lungseg made (its
    ``.lungseg.json`` marker records the parameters): lungseg never writes among scans it did
    not make. A finished dataset there is replaced only with ``overwrite``.

    The defaults are :class:`~lungseg.core.recipe_sections.SyntheticConfig`'s (a recipe's
    ``data.synthetic``), and the arguments are checked as that section is.

    Args:
        out: Dataset folder, created if missing.
        cases: Number of labelled training cases (>= 1).
        seed: Non-negative dataset seed; the same arguments give identical data.
        size: In-plane matrix size, as in ``make_case``.
        slices: Number of axial slices, as in ``make_case``.
        abdomen_slices: Abdomen-only slices at the inferior end, as in ``make_case``.
        test_cases: Number of unlabelled test scans (>= 0).
        preset: ``easy`` (the quickstart's scans) or ``hard``.
        overwrite: Replace a finished synthetic dataset in ``out``.

    Returns:
        The dataset folder ``out`` as a path.

    Raises:
        RecipeError: An argument is not a whole number in its range; the message names it.
        OutputError: ``out`` holds files lungseg did not make, or a finished dataset and
            ``overwrite`` is false.
    """
    from lungseg.data.synth import _checked, make_case  # that module re-exports this one

    config = _checked(
        cases=cases,
        seed=seed,
        size=size,
        slices=slices,
        abdomen_slices=abdomen_slices,
        test_cases=test_cases,
        preset=preset,
    )
    params = dataclasses.asdict(config)
    root = claim_dir(out, "synthetic-dataset", role="synthetic dataset folder")
    refuse_existing([root / "dataset.json"], overwrite, "synthetic dataset")
    (root / "dataset.json").unlink(missing_ok=True)  # written last: absent until complete
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob("lung_*.nii.gz"):  # ours: the folder carries our marker
            old.unlink()
    write_marker(root, "synthetic-dataset", {"params": params})
    training, test = [], []
    for i in range(cases + test_cases):
        case_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        image, label, affine = make_case(case_seed, size, slices, abdomen_slices, preset)
        name = f"lung_{i + 1:03d}.nii.gz"
        if i < cases:
            write_nifti(root / "imagesTr" / name, image, affine=affine)
            write_nifti(root / "labelsTr" / name, label, affine=affine)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            write_nifti(root / "imagesTs" / name, image, affine=affine)
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "Lung",
        "description": f"Synthetic chest CT with lung tumours (lungseg.data.synth, seed {seed}"
        + ("" if preset == "easy" else f", preset {preset}")
        + ")",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "cancer"},
        "numTraining": cases,
        "numTest": test_cases,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return root
