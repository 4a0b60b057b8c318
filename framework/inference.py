"""Running a trained network over slices, and mapping predictions back to the scan."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.inference_mode()
def predict_probs(
    model: nn.Module, slices: np.ndarray, batch_size: int = 16, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Tumour probabilities for preprocessed slices.

    Args:
        model: returns logits ``(N, 1, H, W)``.
        slices: ``(n, H, W)`` preprocessed images.
        batch_size: slices per forward pass.
        device: where to run.

    Returns:
        float32 ``(n, H, W)`` probabilities (sigmoid of the logits).
    """
    model = model.to(device).eval()
    out = np.empty(slices.shape, dtype=np.float32)
    for start in range(0, len(slices), batch_size):
        batch = torch.from_numpy(np.asarray(slices[start : start + batch_size], dtype=np.float32))
        logits = model(batch[:, None].to(device))
        out[start : start + len(batch)] = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    return out


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
