"""The preprocessing chain: recipe steps applied forward, and undone for predictions.

The same chain, built from the recipe stored with the data or the checkpoint, serves
preprocessing, evaluation and prediction, so no constant is copied between stages.

Also the helpers every step may use through :mod:`lungseg.api`: the crop helpers, which write
the trace keys the chain reads (:data:`CROP_KEYS`), and the lung finder.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from lungseg.core.errors import DataError
from lungseg.data.volume import Volume

if TYPE_CHECKING:
    from lungseg.core.recipe import Component
    from lungseg.core.registry import Registry

#: What a crop step's info holds (see :mod:`lungseg.core.hookspecs`): it kept slices
#: ``start:stop`` of an input with ``depth`` slices.
CROP_KEYS = ("start", "stop", "depth")


@runtime_checkable
class Step(Protocol):
    """A preprocessing step (what a preprocessor factory returns)."""

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        """Map ``volume`` forward; return it and the JSON-ready facts :meth:`invert` needs."""
        ...

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        """Map an ``(X, Y, Z)`` prediction from this step's output grid to its input grid.

        Args:
            array: probabilities (float) or labels (uint8) on the step's output grid.
            info: what :meth:`apply` returned for this volume.
            is_label: labels use nearest-neighbour, probabilities linear interpolation.

        A step may also take a keyword ``device`` (a ``torch`` device, such as ``"cuda"``):
        where the prediction was made, for steps that can do their work there.
        :meth:`Chain.invert` passes it only to steps whose ``invert`` names it.
        """
        ...


class Chain:
    """An ordered list of named steps."""

    def __init__(self, steps: list[tuple[str, Step]]) -> None:
        self.steps = steps

    @classmethod
    def from_components(cls, components: list[Component], registry: Registry) -> Chain:
        steps = []
        for i, comp in enumerate(components):
            step = registry.create("preprocessor", comp.name, comp.params, f"preprocess[{i}]")
            if not isinstance(step, Step):
                raise DataError(f"preprocess[{i}]: {comp.name!r} does not provide apply/invert")
            steps.append((comp.name, step))
        return cls(steps)

    def forward(self, volume: Volume) -> tuple[Volume, list[dict[str, Any]]]:
        """Apply every step; return the result and the trace (one info dict per step)."""
        trace = []
        for name, step in self.steps:
            volume, info = step.apply(volume)
            trace.append({"step": name, **info})
        return volume, trace

    def invert(
        self,
        array: np.ndarray,
        trace: list[dict[str, Any]],
        *,
        is_label: bool,
        device: Any = None,
    ) -> np.ndarray:
        """Undo the chain for a prediction ``(X', Y', Z')`` on the preprocessed grid.

        Args:
            array: the prediction, any memory layout.
            trace: what :meth:`forward` recorded for the scan.
            is_label: labels (nearest-neighbour) or probabilities (linear).
            device: where the network ran; steps that accept a ``device`` may work there.

        Returns:
            The prediction on the scan's grid, in any memory layout (the default chain gives
            NIfTI's Fortran order, possibly flipped: a view, never a copy for its own sake).

        Raises:
            DataError: the trace was made by a different chain.
        """
        names = [t["step"] for t in trace]
        if names != [name for name, _ in self.steps]:
            raise DataError(
                f"the stored preprocessing trace {names} does not match the chain "
                f"{[n for n, _ in self.steps]}; rebuild the store with "
                "`lungseg preprocess --overwrite`"
            )
        for (_, step), info in zip(reversed(self.steps), reversed(trace), strict=True):
            extra = {"device": device} if device is not None and _takes_device(step) else {}
            array = step.invert(
                array, {k: v for k, v in info.items() if k != "step"}, is_label=is_label, **extra
            )
        return array

    @staticmethod
    def canonical_depth(trace: list[dict[str, Any]], default: int) -> int:
        """Slices of the grid :meth:`kept_slices` indexes: the first crop's input, or ``default``.

        ``default`` is the slice count after the chain (used when no step crops).
        """
        for info in trace:
            if is_crop(info):
                return int(info["depth"])
        return int(default)

    @staticmethod
    def kept_slices(trace: list[dict[str, Any]], depth: int) -> list[int]:
        """Indices (on the canonical grid of ``depth`` slices) of the slices the crops kept.

        Raises:
            DataError: a crop's recorded ``depth`` is not the slice count it was given.
        """
        kept = np.arange(depth)
        for info in trace:
            if is_crop(info):
                if int(info["depth"]) != len(kept):
                    raise DataError(
                        f"the crop step {info.get('step', '?')!r} recorded depth={info['depth']} "
                        f"but received {len(kept)} slices; it breaks the crop contract"
                    )
                kept = kept[info["start"] : info["stop"]]
        return kept.tolist()


def _takes_device(step: Step) -> bool:
    """Whether ``step.invert`` accepts a ``device`` keyword (or any keyword)."""
    try:
        params = inspect.signature(step.invert).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented callable
        return False
    return "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def is_crop(info: dict[str, Any]) -> bool:
    """Whether a step's info is a crop's (it holds every key of :data:`CROP_KEYS`)."""
    return all(key in info for key in CROP_KEYS)


def crop_slices(volume: Volume, start: int, stop: int) -> tuple[Volume, dict[str, int]]:
    """Keep axial slices ``start:stop`` (a view) and shift the affine to match.

    Returns:
        The cropped volume and the crop's info, ``{"start", "stop", "depth"}`` (the input's
        slice count): a crop step returns it, with any keys of its own added.

    Raises:
        ValueError: not ``0 <= start < stop <= depth``.
    """
    depth = int(volume.image.shape[2])
    if not 0 <= start < stop <= depth:
        raise ValueError(f"crop {start}:{stop} does not lie within the {depth} slices")
    shift = np.eye(4)
    shift[2, 3] = start
    mask = None if volume.mask is None else volume.mask[:, :, start:stop]
    cropped = Volume(
        volume.image[:, :, start:stop], mask, volume.affine @ shift, volume.source, volume.owned
    )
    return cropped, {"start": int(start), "stop": int(stop), "depth": depth}


def uncrop_slices(array: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Put ``array`` back at slices ``info["start"]:info["stop"]`` of a zero volume.

    The result has ``array``'s memory layout (Fortran order stays Fortran order), so the
    copy runs over contiguous memory, and only the slices outside the crop are zeroed.
    """
    start, stop = info["start"], info["stop"]
    out = np.empty_like(array, shape=(*array.shape[:2], info["depth"]))  # order "K"
    out[:, :, :start] = 0
    out[:, :, stop:] = 0
    out[:, :, start:stop] = array
    return out


def air_inside_body(image: np.ndarray, threshold: float = -400.0) -> np.ndarray:
    """The lung finder: air below ``threshold`` HU not connected, in its slice, to the border.

    Air that reaches the image border (4-connected within an axial slice) is outside the
    patient; what is left is lung, the airways and gas in the bowel. Callers tell these apart
    (by size, density, or by filling holes to take in the nodules and vessels inside).

    Args:
        image: one axial slice ``(X, Y)`` or a volume ``(X, Y, Z)`` in Hounsfield units.
        threshold: HU below which a voxel is air-like (lung parenchyma is about -850).

    Returns:
        A boolean array of ``image``'s shape.
    """
    from scipy import ndimage

    air = np.asarray(image) < threshold
    plane = ndimage.generate_binary_structure(2, 1)
    if air.ndim == 3:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[:, :, 1] = plane  # connected within one slice only
    elif air.ndim == 2:
        structure = plane
    else:
        raise ValueError(f"expected an (X, Y) slice or an (X, Y, Z) volume, got {air.shape}")
    labels, _ = ndimage.label(air, structure=structure)
    edges = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    border = np.unique(np.concatenate([edge.ravel() for edge in edges]))
    return air & ~np.isin(labels, border[border > 0])
