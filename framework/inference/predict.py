"""``lungseg predict``: new scans -> the checkpoint's chain -> model -> masks in scan geometry.

Inputs are NIfTI files, folders of them, or a folder holding one DICOM CT series. Per input
it writes ``<name>.nii.gz`` (uint8 {0, 1}, the input's shape, affine and orientation), or
for a DICOM series with ``output_format="dicom-seg"`` ``<name>.dcm`` (a DICOM Segmentation
referencing the series, :mod:`lungseg.inference.dicom_seg`), and on request
``<name>_prob.nii.gz`` (float32 probabilities) and ``<name>_overlay.png``.

Several checkpoints (or a k-fold run folder) predict together: their probabilities are
averaged (:mod:`lungseg.inference.ensemble`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lungseg.core.console import progress
from lungseg.core.errors import DataError, LungsegError, OutputError, RecipeError
from lungseg.core.recipe import Component
from lungseg.core.safety import claim_dir, refuse_existing
from lungseg.data.dicom import read_dicom_series
from lungseg.data.volume import read_image, write_nifti
from lungseg.inference.dicom_seg import require_highdicom, write_dicom_seg
from lungseg.inference.ensemble import load_predictor
from lungseg.inference.figures import case_view, save_case_figure
from lungseg.inference.postselect import recorded_choice
from lungseg.inference.predictor import Predictor, Timings
from lungseg.inference.scans import ScanInput, dicom_only, expand_inputs

ENGINES = ("torch", "onnx")
"""What runs the network: ``torch`` (a ``.ckpt``) or ``onnx`` (a ``lungseg export`` ``.onnx``)."""
OUTPUT_FORMATS = ("nifti", "nii", "dicom-seg")
"""How masks are written: ``nifti`` (``<name>.nii.gz`` in the scan's geometry, ``.nii`` for a
``.nii`` input), ``nii`` (uncompressed ``<name>.nii`` and ``<name>_prob.nii``: no deflate
time) or ``dicom-seg`` (``<name>.dcm``, a DICOM Segmentation of a DICOM series input)."""


@dataclass
class PredictReport:
    """What one ``predict`` call wrote, what failed (input -> message) and where time went."""

    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    extra: list[Path] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)


def predict(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    tta: bool | None = None,
    postprocess: list[Component] | str | None = None,
    prob: bool = False,
    overlay: bool = False,
    overwrite: bool = False,
    engine: str = "torch",
    output_format: str = "nifti",
) -> PredictReport:
    """Write a uint8 {0, 1} mask per input scan, with the input's exact shape and affine.

    The preprocessing is the chain stored in the checkpoint's recipe; slices it drops are 0
    in the mask. ``threshold``, ``batch_size``, ``tta`` and ``postprocess`` default to the
    checkpoint recipe's ``evaluate`` settings (TTA and post-processing are off unless set).
    A failing input is reported in :attr:`PredictReport.failed`; the others are still
    predicted.

    ``checkpoint`` may be a checkpoint file, a run folder (its ``best.ckpt``, or every fold's
    for a k-fold run folder) or several of them: several checkpoints predict as one ensemble,
    their probabilities averaged; settings then come from the first one's recipe.
    ``postprocess="auto"`` applies the post-processing ``lungseg evaluate`` chose for them
    (``postprocess_selection`` in their run folder's ``metrics.json``).

    ``output_format="dicom-seg"`` writes each DICOM series' mask as ``<name>.dcm``, a DICOM
    Segmentation referencing that series (needs the ``lungseg[dicom]`` extra); a NIfTI input
    then fails on its own, as it has no DICOM slices to reference.

    ``out`` must be new, empty, or a prediction folder lungseg made; no output may land on
    an input, and an existing output file is replaced only with ``overwrite``. All of this is
    checked before anything is written.

    Raises:
        OutputError: ``out`` holds files lungseg did not make, an output would replace an
            input scan, or an output exists and ``overwrite`` is false.
        RecipeError: ``threshold`` outside (0, 1), ``batch_size`` below 1, an unknown
            ``engine`` or ``output_format``, or ``dicom-seg`` without highdicom installed.
        CheckpointError: the checkpoint is missing, unsafe or has no lungseg recipe;
            ensemble members trained with different chains or ``data.context``; ``auto``
            without a recorded choice.
        RecipeError: an unknown postprocessor name or parameter.
    """
    if engine not in ENGINES:
        raise RecipeError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if output_format not in OUTPUT_FORMATS:
        raise RecipeError(f"--format {output_format}: choose one of {', '.join(OUTPUT_FORMATS)}")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise RecipeError(f"--threshold {threshold}: must be between 0 and 1 (exclusive)")
    if batch_size is not None and batch_size < 1:
        raise RecipeError(f"--batch-size {batch_size}: must be a whole number >= 1")
    out = Path(out)
    scans, failed = expand_inputs(inputs)
    if output_format == "dicom-seg":
        require_highdicom()
        scans = dicom_only(scans, failed)
    plans = [_plan(scan, out, prob, overlay, output_format) for scan in scans]
    _refuse_over_inputs(scans, plans)
    refuse_existing([p for plan in plans for p in plan], overwrite)
    checkpoints = [checkpoint] if isinstance(checkpoint, str | os.PathLike) else list(checkpoint)
    if postprocess == "auto":
        postprocess, _ = recorded_choice(checkpoints)
    elif isinstance(postprocess, str):
        raise RecipeError(f"--postprocess {postprocess}: name postprocessors, or auto")
    predictor, _ = load_predictor(
        checkpoints,
        engine=engine,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        tta=tta,
        postprocessors=postprocess,
    )
    if scans:
        claim_dir(out, "predictions", role="--out")
    report = PredictReport(failed=failed, timings=predictor.timings)
    used: dict[str, Path] = {}
    bar = progress(
        zip(scans, plans, strict=True),
        desc="predict",
        total=len(scans),
        unit="scan",
        mininterval=0,  # a scan takes seconds: show every one
    )
    for scan, plan in bar:
        try:
            if scan.stem in used:
                raise DataError(
                    f"{scan.path}: gives the same output name {scan.stem!r} as {used[scan.stem]}; "
                    "rename one or predict them into different --out folders"
                )
            used[scan.stem] = scan.path
            _predict_one(predictor, scan, plan, report)
        except LungsegError as exc:
            report.failed[str(scan.path)] = str(exc)
    return report


def _plan(
    scan: ScanInput, out: Path, prob: bool, overlay: bool, output_format: str = "nifti"
) -> list[Path]:
    """The files predicting ``scan`` writes: the mask, then the optional probabilities, overlay."""
    nifti = ".nii" if output_format == "nii" else ".nii.gz"
    if output_format == "dicom-seg":
        mask = out / f"{scan.stem}.dcm"
    else:
        mask = out / f"{scan.stem}{'.nii' if output_format == 'nii' else scan.suffix}"
    plan = [mask]
    if prob:
        plan.append(out / f"{scan.stem}_prob{nifti}")
    if overlay:
        plan.append(out / f"{scan.stem}_overlay.png")
    return plan


def _refuse_over_inputs(scans: list[ScanInput], plans: list[list[Path]]) -> None:
    """No output may land on an input scan (``--out`` pointing at the inputs' folder).

    Raises:
        OutputError: naming the input and the fix; ``--overwrite`` does not lift this.
    """
    inputs = {scan.path.resolve(): scan.path for scan in scans}
    for plan in plans:
        for path in plan:
            hit = inputs.get(path.resolve())
            if hit is not None:
                raise OutputError(
                    f"--out {path.parent}: the mask for {hit} would be written over that input "
                    "scan itself; choose another --out folder"
                )


def _predict_one(
    predictor: Predictor, scan: ScanInput, plan: list[Path], report: PredictReport
) -> None:
    """Read, predict and write one scan to ``plan``; raises :class:`LungsegError` for bad input."""
    timings = predictor.timings
    with timings.stage("read"):
        if scan.dicom:
            image, geometry = read_dicom_series(scan.path)
        else:
            image, geometry = read_image(scan.path)
    result = predictor.scan(image, geometry.affine, geometry.spacing, source=str(scan.path))
    reference = None if scan.dicom else scan.path
    mask_path, *extras = plan
    with timings.stage("write"):
        if mask_path.suffix == ".dcm":
            settings = {"threshold": str(predictor.threshold), "tta": str(predictor.tta)}
            written = write_dicom_seg(
                mask_path, result.mask, geometry.affine, scan.path, parameters=settings
            )
        else:
            written = write_nifti(
                mask_path, result.mask, affine=geometry.affine, reference=reference
            )
        report.written.append(written)
        for path in extras:
            if path.name.endswith(("_prob.nii.gz", "_prob.nii")):
                report.extra.append(
                    write_nifti(path, result.probs, affine=geometry.affine, reference=reference)
                )
    for path in extras:
        if path.suffix == ".png":
            with timings.stage("overlay"):
                view = case_view(scan.stem, image, result.mask, geometry.affine)
                report.extra.append(save_case_figure(view, path))
