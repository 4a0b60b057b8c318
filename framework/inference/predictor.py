"""Running a trained network over slices, and mapping predictions back to the scan.

One object, :class:`Predictor`, serves ``lungseg predict`` (raw scans), ``lungseg evaluate``
(stored slices) and the prediction benchmark, so they cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lungseg.core.recipe import Component, Recipe
from lungseg.data.volume import Volume
from lungseg.inference.network import default_device, predict_probs
from lungseg.preprocess.chain import Chain

__all__ = [
    "PostProcessor",
    "Predictor",
    "ScanPrediction",
    "Timings",
    "default_device",
    "postprocess",
    "predict_probs",
]


class PostProcessor(Protocol):
    """A postprocessor plugin: ``post(mask, image, spacing) -> mask``.

    ``mask`` is boolean ``(X, Y, Z)`` in the scan's own geometry, ``image`` the scan's
    float32 Hounsfield units of the same shape, ``spacing`` mm per axis.
    """

    def __call__(
        self, mask: np.ndarray, image: np.ndarray, spacing: tuple[float, ...]
    ) -> np.ndarray: ...


@dataclass
class Timings:
    """Seconds spent per stage, summed over calls (for reports and benchmarks)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def postprocess(
    mask: np.ndarray, image: np.ndarray, spacing: tuple[float, ...], posts: list[PostProcessor]
) -> np.ndarray:
    """Apply postprocessors in order to a boolean ``(X, Y, Z)`` mask; returns a boolean mask."""
    mask = np.asarray(mask, dtype=bool)
    for post in posts:
        mask = np.asarray(post(mask, image, spacing), dtype=bool)
    return mask


@dataclass
class ScanPrediction:
    """A scan's prediction.

    Attributes:
        mask: uint8 ``(X, Y, Z)`` {0, 1} in the scan's own geometry (slices the chain drops
            are 0), thresholded and post-processed.
        probs: float32 ``(X, Y, Z)`` probabilities in the scan's own geometry.
        slice_probs: float32 ``(n, H, W)`` probabilities on the preprocessed slices.
    """

    mask: np.ndarray
    probs: np.ndarray
    slice_probs: np.ndarray


class Predictor:
    """A trained network with its preprocessing chain: the one inference path.

    ``predict`` uses :meth:`scan` (a raw scan goes through the chain first); ``evaluate``
    uses :meth:`stored` (slices already in the store, with the trace the chain recorded for
    them). Both then run the same steps: network (with flip TTA if asked), inverse chain to
    the scan's geometry, threshold, post-processors.

    Args:
        model: the network (logits out).
        chain: the checkpoint's preprocessing chain.
        threshold: probability at and above which a voxel is tumour.
        batch_size: slices per forward pass.
        device: where the network runs (default: CUDA when available).
        tta: average each slice's probabilities with those of its left-right mirror.
        posts: postprocessors applied to the thresholded mask, in order.
        context: ``data.context`` the network was trained with: each slice goes in with
            the ``context`` slices on either side (ends repeated), as in training.
    """

    def __init__(
        self,
        model: nn.Module,
        chain: Chain,
        *,
        threshold: float,
        batch_size: int,
        device: str | torch.device | None = None,
        tta: bool = False,
        posts: list[PostProcessor] | None = None,
        context: int = 0,
    ) -> None:
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.model = model
        self.chain = chain
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = device or default_device()
        self.tta = tta
        self.posts = list(posts or [])
        self.context = context
        self.timings = Timings()

    def scan(
        self,
        image: np.ndarray,
        affine: np.ndarray,
        spacing: tuple[float, ...],
        source: str = "<array>",
    ) -> ScanPrediction:
        """Predict a raw scan: float32 ``(X, Y, Z)`` Hounsfield units, its own orientation.

        Raises:
            DataError: the chain cannot handle the scan (for example too few slices).
        """
        with self.timings.stage("forward chain"):
            volume, trace = self.chain.forward(Volume(image, None, affine, source))
            slices = np.ascontiguousarray(np.moveaxis(volume.image, 2, 0))
        return self.stored(slices, trace, image, spacing)

    def stored(
        self,
        slices: np.ndarray,
        trace: list[dict[str, Any]],
        image: np.ndarray | None,
        spacing: tuple[float, ...],
    ) -> ScanPrediction:
        """Predict preprocessed slices ``(n, H, W)`` whose chain recorded ``trace``.

        Args:
            slices: the preprocessed slices of the whole kept range (a stored case, or the
                chain's output), in order: each one's neighbours are its context.
            trace: what each chain step recorded, to invert it.
            image: the scan's Hounsfield units, for postprocessors that look at the scan
                (``None`` when there are no postprocessors).
            spacing: mm per axis of the scan, for postprocessors.
        """
        with self.timings.stage("model"):
            probs = predict_probs(
                self.model, slices, self.batch_size, self.device, self.tta, self.context
            )
        with self.timings.stage("invert"):
            back = self.chain.invert(
                np.moveaxis(probs, 0, 2), trace, is_label=False, device=self.device
            )
        with self.timings.stage("threshold + postprocess"):
            mask = postprocess(back >= self.threshold, image, spacing, self.posts)
        return ScanPrediction(mask.astype(np.uint8), back.astype(np.float32, copy=False), probs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        threshold: float | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        tta: bool | None = None,
        postprocessors: list[Component] | None = None,
    ) -> tuple[Predictor, Recipe]:
        """The predictor a checkpoint describes; unset settings come from its recipe.

        Its context (``data.context``) is always the checkpoint's: the network takes
        ``2 * context + 1`` channels.

        Returns:
            The predictor, and the checkpoint's recipe.

        Raises:
            CheckpointError: the checkpoint is missing, unsafe or has no lungseg recipe.
            RecipeError: an unknown postprocessor name or parameter.
        """
        from lungseg.training.checkpoint import load_checkpoint

        module, recipe = load_checkpoint(path)
        return cls.from_recipe(
            module.model,
            recipe,
            threshold=threshold,
            batch_size=batch_size,
            device=device,
            tta=tta,
            postprocessors=postprocessors,
        )

    @classmethod
    def from_recipe(
        cls,
        model: nn.Module,
        recipe: Recipe,
        *,
        threshold: float | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        tta: bool | None = None,
        postprocessors: list[Component] | None = None,
    ) -> tuple[Predictor, Recipe]:
        """The predictor of a trained network and the recipe it was trained with.

        The chain, the context and the post-processors come from ``recipe`` (rebuilt through
        :func:`~lungseg.core.build.assemble`); unset settings from its ``evaluate`` section.
        ``model`` is a checkpoint's network, or any module mapping ``(N, 2K+1, H, W)``
        images to logits (an ONNX export behind
        :class:`~lungseg.inference.onnx_engine.OnnxNetwork`).

        Returns:
            The predictor, and ``recipe``.

        Raises:
            RecipeError: an unknown plugin or postprocessor name or parameter.
        """
        from lungseg.core.build import assemble

        parts = assemble(recipe)
        cfg = recipe.evaluate
        predictor = cls(
            model,
            parts.chain,
            threshold=cfg.threshold if threshold is None else threshold,
            batch_size=batch_size or cfg.batch_size,
            device=device,
            tta=cfg.tta if tta is None else tta,
            posts=parts.postprocessors(postprocessors),
            context=recipe.data.context,
        )
        return predictor, recipe
