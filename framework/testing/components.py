"""Contract checks for metrics, samplers, preprocessors and post-processors, and
:func:`check_registered`, which builds any registered component and checks it."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from lungseg.data.volume import Volume
from lungseg.preprocess.chain import CROP_KEYS
from lungseg.testing._util import _block, _fail
from lungseg.testing.networks import check_loss, check_model

if TYPE_CHECKING:
    pass


def check_metric(
    metric: Callable[..., float],
    *,
    best: float = 1.0,
    worst: float = 0.0,
    empty: float = math.nan,
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
) -> None:
    """Check a metric plugin on boolean ``(X, Y, Z)`` masks.

    Args:
        metric: what the metric factory returned, ``metric(pred, truth, spacing) -> float``.
        best: the value for identical non-empty masks (1 for Dice, 0 for a distance).
        worst: the value for disjoint non-empty masks (``inf`` for an unbounded distance).
        empty: the documented value when both masks are empty (``nan``: undefined).
        spacing: voxel size in mm passed to the metric.
    """
    shape = (12, 10, 8)
    truth = _block(shape, (2, 2, 2), (6, 6, 5)).astype(bool)
    cases = {
        "identical masks": (truth.copy(), best),
        "disjoint masks": (_block(shape, (7, 6, 5), (11, 9, 8)).astype(bool), worst),
    }
    for label, (pred, expected) in cases.items():
        value = _metric_value(metric, pred, truth, spacing, label)
        if not math.isclose(float(value), expected, rel_tol=1e-6, abs_tol=1e-9):
            _fail(f"{label} must give {expected}, got {value}")
    value = _metric_value(metric, np.zeros(shape, bool), np.zeros(shape, bool), spacing, "empty")
    if not (math.isnan(empty) and math.isnan(value)) and value != empty:
        _fail(f"empty prediction and empty truth must give the documented {empty}, got {value}")
    pred = _block(shape, (3, 2, 2), (7, 6, 5)).astype(bool)
    partial = _metric_value(metric, pred, truth, spacing, "partial overlap")
    if not min(best, worst) < partial < max(best, worst):
        _fail(f"a partial overlap must score strictly between {worst} and {best}, got {partial}")


def _metric_value(metric: Callable[..., Any], pred, truth, spacing, label: str) -> float:
    """The metric's value, which must be a float (Python or NumPy; ``nan`` where undefined)."""
    value = metric(pred, truth, spacing)
    if isinstance(value, bool) or not isinstance(value, (float, np.floating)):
        _fail(
            f"the metric must return a float (nan where undefined), got "
            f"{type(value).__name__} {value!r} for {label} masks"
        )
    return float(value)


def _draw(build: Callable[..., Any], labels: np.ndarray, world: int, rank: int, epoch: int = 0):
    sampler = build(labels, num_replicas=world, rank=rank, seed=7)
    if not hasattr(sampler, "set_epoch"):
        _fail(f"the sampler {type(sampler).__name__} has no set_epoch(epoch) for DDP epochs")
    sampler.set_epoch(epoch)
    indices = [int(i) for i in sampler]
    if len(indices) != len(sampler):
        _fail(f"len(sampler) is {len(sampler)} but it yields {len(indices)} indices")
    if any(not 0 <= i < len(labels) for i in indices):
        _fail(f"indices must lie in [0, {len(labels)}), got {sorted(set(indices))[:10]}...")
    return indices


def check_sampler(build: Callable[..., Any], worlds: tuple[int, ...] = (2, 3)) -> None:
    """Check a sampler plugin's builder, ``build(labels, *, num_replicas, rank, seed)``.

    On 24 training slices (6 with tumour): ``len`` matches what it yields, indices are in
    range, the same seed and epoch give the same draw, ``set_epoch`` changes it, and under
    DDP the ranks' shares have one length and together hold exactly the indices a single
    process draws for that epoch (each rank a disjoint part of one draw).

    Args:
        build: what the sampler factory returned.
        worlds: world sizes to split over; they divide 24, so no share needs padding.
    """
    labels = np.zeros(24, dtype=np.int64)
    labels[[3, 4, 10, 11, 12, 20]] = 1
    full = _draw(build, labels, 1, 0)
    if not full:
        _fail("the sampler yields nothing for 24 slices")
    if _draw(build, labels, 1, 0) != full:
        _fail("the same labels, seed and epoch must give the same draw (reproducibility)")
    if _draw(build, labels, 1, 0, epoch=1) == full:
        _fail("set_epoch(1) must change the draw, or every epoch sees the same order")
    for world in worlds:
        shares = [_draw(build, labels, world, rank) for rank in range(world)]
        if len({len(s) for s in shares}) != 1:
            _fail(f"ranks of a world of {world} got shares of lengths {[len(s) for s in shares]}")
        union = Counter(i for share in shares for i in share)
        if union != Counter(full):
            _fail(f"the {world} ranks' shares together differ from one process's draw")


def _probe_volume() -> Volume:
    """A 20x18x40 LPS-oriented CT (Hounsfield units) with an off-centre tumour block."""
    rng = np.random.default_rng(0)
    shape = (20, 18, 40)
    image = rng.normal(-700.0, 80.0, shape).astype(np.float32)
    mask = _block(shape, (4, 9, 30), (10, 15, 37))
    image[mask == 1] = 40.0
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    return Volume(image, mask, affine, "<contract probe>")


def check_preprocessor(step: Any, volume: Volume | None = None, min_dice: float = 0.8) -> None:
    """Check a preprocessing step: forward keeps the layout, ``invert`` undoes its grid.

    ``apply`` must keep an ``(X, Y, Z)`` float32 image with a uint8 {0, 1} mask of the same
    shape (and accept a volume without mask, as prediction passes), and return a
    JSON-serialisable info dict. ``invert`` of the output mask, given the info after a JSON
    round trip (as the store keeps it), must have the input's shape and overlap the input
    mask with Dice >= ``min_dice`` (voxels a crop drops are not counted).

    Args:
        step: what the preprocessor factory returned.
        volume: the input; default a 20x18x40 LPS volume with a tumour in slices 30-36.
        min_dice: the least round-trip Dice.
    """
    volume = volume if volume is not None else _probe_volume()
    for name in ("apply", "invert"):
        if not callable(getattr(step, name, None)):
            _fail(f"the step {type(step).__name__} has no {name}()")
    result = step.apply(volume)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Volume)):
        _fail("apply(volume) must return (Volume, info dict)")
    out, info = result
    if out.image.ndim != 3 or out.image.dtype != np.float32:
        _fail(f"apply must keep a float32 (X, Y, Z) image, got {out.image.dtype} {out.image.shape}")
    if out.mask is None or out.mask.shape != out.image.shape or out.mask.dtype != np.uint8:
        _fail(f"apply must keep a uint8 mask shaped like the image {out.image.shape}")
    if not np.isin(np.unique(out.mask), (0, 1)).all() or np.asarray(out.affine).shape != (4, 4):
        _fail("apply must keep mask values in {0, 1} and a 4x4 affine")
    try:
        info = json.loads(json.dumps(info))
    except (TypeError, ValueError) as exc:
        _fail(f"the info apply returns must be JSON-serialisable: {exc}")
    _check_crop_info(info, volume.image.shape, out.image.shape)
    unlabelled, _ = step.apply(Volume(volume.image, None, volume.affine, volume.source))
    if unlabelled.mask is not None or unlabelled.image.shape != out.image.shape:
        _fail("apply on a volume without mask must give the same grid and no mask")
    back = np.asarray(step.invert(out.mask, info, is_label=True))
    probs = np.asarray(step.invert(out.mask.astype(np.float32), info, is_label=False))
    for label, arr in (("label", back), ("probability", probs)):
        if arr.shape != volume.image.shape:
            _fail(f"invert of a {label} map gave {arr.shape}, not the input {volume.image.shape}")
    covered = np.asarray(step.invert(np.ones_like(out.mask), info, is_label=True)).astype(bool)
    truth = volume.mask.astype(bool) & covered  # what the output grid still covers
    pred = back.astype(bool)
    total = np.count_nonzero(truth) + np.count_nonzero(pred)
    dice = 2.0 * np.count_nonzero(pred & truth) / total if total else 0.0
    if dice < min_dice:
        _fail(f"invert(apply(mask)) overlaps the input mask with Dice {dice:.3f} < {min_dice}")


def _check_crop_info(info: dict, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    """A step that keeps some slices records ``start``, ``stop``, ``depth``; others none of them."""
    present = [key for key in CROP_KEYS if key in info]
    reoriented = sorted(before) == sorted(after)  # a reorientation may swap the slice axis
    if not present and (before[2] == after[2] or reoriented):
        return
    if len(present) != len(CROP_KEYS):
        _fail(
            f"the step turned {before[2]} slices into {after[2]}: a crop's info must hold "
            f"{', '.join(CROP_KEYS)} (lungseg.api.crop_slices returns them), it holds {present}"
        )
    start, stop, depth = (info[key] for key in CROP_KEYS)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop, depth)):
        _fail(f"a crop's start, stop and depth must be ints, got {start!r}, {stop!r}, {depth!r}")
    if depth != before[2]:
        _fail(f"a crop's depth must be its input's slice count {before[2]}, got {depth}")
    if not 0 <= start < stop <= depth or stop - start != after[2]:
        _fail(
            f"a crop's start:stop = {start}:{stop} must lie in [0, {depth}] and span the "
            f"{after[2]} slices it returns"
        )


def check_postprocessor(post: Callable[..., np.ndarray], volume: Volume | None = None) -> None:
    """Check a postprocessor: ``post(mask, image, spacing) -> mask`` in a scan's geometry.

    It must return a boolean mask of the input's shape, keep an empty mask empty, give the
    same result twice, and leave its input arrays unchanged.

    Args:
        post: what the postprocessor factory returned.
        volume: the scan and mask; default a 20x18x40 volume with a tumour block.
    """
    volume = volume if volume is not None else _probe_volume()
    mask, image = volume.mask.astype(bool), volume.image.copy()
    spacing = (0.8, 0.8, 2.5)
    out = np.asarray(post(mask, image, spacing))
    if out.shape != mask.shape or out.dtype != np.bool_:
        _fail(f"post must return a bool mask shaped {mask.shape}, got {out.dtype} {out.shape}")
    if not np.array_equal(mask, volume.mask.astype(bool)) or not np.array_equal(
        image, volume.image
    ):
        _fail("post must not change its input arrays in place")
    if not np.array_equal(np.asarray(post(mask, image, spacing)), out):
        _fail("post must give the same mask for the same input")
    if np.asarray(post(np.zeros_like(mask), image, spacing)).any():
        _fail("post must keep an empty mask empty")


def check_registered(kind: str, name: str, params: Mapping[str, Any] | None = None, **kw: Any):
    """Build ``name`` of ``kind`` from the installed plugins and run its kind's check.

    Args:
        kind: ``preprocessor``, ``sampler``, ``model``, ``loss``, ``metric`` or
            ``postprocessor``.
        name: the registered name.
        params: recipe parameters for the factory.
        **kw: passed to the kind's ``check_*`` function.
    """
    from lungseg.core.manager import load_registry

    registry = load_registry()

    def build() -> Any:
        return registry.create(kind, name, dict(params or {}), kind)

    checks: dict[str, Callable[..., None]] = {
        "preprocessor": lambda: check_preprocessor(build(), **kw),
        "sampler": lambda: check_sampler(build(), **kw),
        "model": lambda: check_model(build, **kw),
        "loss": lambda: check_loss(build(), **kw),
        "metric": lambda: check_metric(build(), **kw),
        "postprocessor": lambda: check_postprocessor(build(), **kw),
    }
    if kind not in checks:
        _fail(f"unknown kind {kind!r}; kinds are {sorted(checks)}")
    checks[kind]()
