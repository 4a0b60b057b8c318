"""Small helpers shared by the contract checks."""

from __future__ import annotations

import numpy as np


def _fail(message: str) -> None:
    raise AssertionError(message)


def _block(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = 1
    return mask
