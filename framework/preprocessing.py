"""The preprocessing chain: recipe steps applied forward, and undone for predictions.

The same chain, built from the recipe stored with the data or the checkpoint, serves
preprocessing, evaluation and prediction, so no constant is copied between stages.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from lungseg.errors import DataError
from lungseg.recipe import Component
from lungseg.registry import Registry
from lungseg.volume import Volume


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
        self, array: np.ndarray, trace: list[dict[str, Any]], *, is_label: bool
    ) -> np.ndarray:
        """Undo the chain for a prediction ``(X', Y', Z')`` on the preprocessed grid.

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
            array = step.invert(
                array, {k: v for k, v in info.items() if k != "step"}, is_label=is_label
            )
        return array

    @staticmethod
    def kept_slices(trace: list[dict[str, Any]], depth: int) -> list[int]:
        """Indices (on the canonical grid) of the slices kept by the crop steps."""
        kept = np.arange(depth)
        for info in trace:
            if "start" in info and "stop" in info:
                kept = kept[info["start"] : info["stop"]]
        return kept.tolist()
