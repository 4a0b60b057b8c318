"""Running a trained network over slices, and mapping predictions back to the scan.

One function, :func:`predict_scan`, serves ``lungseg predict``, the evaluation's
post-processing and the prediction benchmark, so they cannot drift apart.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from lungseg.preprocessing import Chain
from lungseg.recipe import Component
from lungseg.registry import Registry
from lungseg.volume import Volume


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


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    slices: np.ndarray,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    tta: bool = False,
) -> np.ndarray:
    """Tumour probabilities for preprocessed slices.

    Args:
        model: returns logits ``(N, 1, H, W)``.
        slices: ``(n, H, W)`` preprocessed images (any float dtype).
        batch_size: slices per forward pass.
        device: where to run.
        tta: also run each slice mirrored along ``H`` (left-right on the canonical grid)
            and average the two probabilities.

    Returns:
        float32 ``(n, H, W)`` probabilities (sigmoid of the logits).
    """
    model = model.to(device).eval()
    out = np.empty(slices.shape, dtype=np.float32)
    for start in range(0, len(slices), batch_size):
        chunk = np.asarray(slices[start : start + batch_size], dtype=np.float32)
        batch = torch.from_numpy(chunk)[:, None].to(device, non_blocking=True)
        probs = torch.sigmoid(model(batch).float())
        if tta:
            mirrored = torch.sigmoid(model(torch.flip(batch, dims=(-2,))).float())
            probs = (probs + torch.flip(mirrored, dims=(-2,))) / 2
        out[start : start + len(chunk)] = probs[:, 0].cpu().numpy()
    return out


def build_postprocessors(components: list[Component], registry: Registry) -> list[PostProcessor]:
    """Postprocessor plugins from recipe entries (``evaluate.postprocess``).

    Raises:
        RecipeError: unknown name or parameter (names ``evaluate.postprocess[i]``).
    """
    return [
        registry.create("postprocessor", c.name, c.params, f"evaluate.postprocess[{i}]")
        for i, c in enumerate(components)
    ]


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
    """A scan's prediction in its own geometry: uint8 mask ``(X, Y, Z)``, float32 probs."""

    mask: np.ndarray
    probs: np.ndarray


def predict_scan(
    model: nn.Module,
    chain: Chain,
    image: np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, ...],
    *,
    threshold: float,
    batch_size: int,
    device: str | torch.device,
    tta: bool = False,
    posts: list[PostProcessor] | None = None,
    source: str = "<array>",
    timings: Timings | None = None,
) -> ScanPrediction:
    """Chain forward -> model -> chain inverse -> threshold -> postprocessors.

    Args:
        model: the network (logits out).
        chain: the checkpoint's preprocessing chain.
        image: float32 ``(X, Y, Z)`` Hounsfield units in the scan's own orientation.
        affine: the scan's voxel-to-world affine.
        spacing: mm per axis, for postprocessors.
        threshold: probability at and above which a voxel is tumour.
        batch_size: slices per forward pass.
        device: where the model runs.
        tta: flip test-time augmentation (see :func:`predict_probs`).
        posts: postprocessors applied to the thresholded mask.
        source: the file, for messages.
        timings: filled with seconds for ``forward chain``, ``model``, ``invert``,
            ``threshold + postprocess``.

    Returns:
        The mask (uint8 {0, 1}, slices the chain drops are 0) and the probabilities.

    Raises:
        DataError: the chain cannot handle the scan (for example too few slices).
    """
    timings = timings or Timings()
    with timings.stage("forward chain"):
        volume, trace = chain.forward(Volume(image, None, affine, source))
        slices = np.ascontiguousarray(np.moveaxis(volume.image, 2, 0))
    with timings.stage("model"):
        probs = predict_probs(model, slices, batch_size, device, tta=tta)
    with timings.stage("invert"):
        back = chain.invert(np.moveaxis(probs, 0, 2), trace, is_label=False)
    with timings.stage("threshold + postprocess"):
        mask = postprocess(back >= threshold, image, spacing, posts or [])
    return ScanPrediction(mask.astype(np.uint8), back.astype(np.float32, copy=False))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
