"""A network over a case's slices: batches, 2.5D context stacks, flip TTA, probabilities.

:func:`predict_probs` is what every prediction runs the network through
(:class:`~lungseg.inference.predictor.Predictor`); the network is any module mapping image
batches to logits: a checkpoint's network, an :class:`~lungseg.inference.ensemble.Ensemble`
or an ONNX export behind :class:`~lungseg.inference.onnx_engine.OnnxNetwork`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungseg.store.layout import context_indices

__all__ = ["default_device", "predict_probs"]


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    slices: np.ndarray,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    tta: bool = False,
    context: int = 0,
) -> np.ndarray:
    """Tumour probabilities for preprocessed slices.

    Args:
        model: returns logits ``(N, 1, H, W)`` for images ``(N, 2 * context + 1, H, W)``.
        slices: ``(n, H, W)`` preprocessed images of one case (any float dtype), in order.
        batch_size: slices per forward pass.
        device: where to run.
        tta: also run each slice mirrored along ``H`` (left-right on the canonical grid)
            and average the two probabilities.
        context: ``data.context``: each slice goes in with the ``context`` slices on either
            side as channels, the end slices repeated past the ends, as in training
            (:func:`~lungseg.store.layout.context_indices`). Stacks are built one batch at a
            time.

    Returns:
        float32 ``(n, H, W)`` probabilities (sigmoid of the logits).
    """
    model = model.to(device).eval()
    out = np.empty(slices.shape, dtype=np.float32)
    for start in range(0, len(slices), batch_size):
        stop = min(start + batch_size, len(slices))
        rows = context_indices(start, stop, len(slices), context)
        first = int(rows[0, 0])
        chunk = np.asarray(slices[first : int(rows[-1, -1]) + 1], dtype=np.float32)
        stack = chunk[:, None] if context == 0 else chunk[rows - first]  # (b, 2K+1, H, W)
        batch = torch.from_numpy(stack).to(device, non_blocking=True)
        probs = torch.sigmoid(model(batch).float())
        if tta:
            mirrored = torch.sigmoid(model(torch.flip(batch, dims=(-2,))).float())
            probs = (probs + torch.flip(mirrored, dims=(-2,))) / 2
        out[start:stop] = probs[:, 0].cpu().numpy()
    return out


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
