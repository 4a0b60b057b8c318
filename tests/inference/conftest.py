"""Fixtures of the inference tests: the tiny trained run exported to ONNX once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_onnx(tiny_trained, tmp_path_factory) -> Path:
    """The tiny run's best checkpoint exported to ONNX: ``<tmp>/tiny.onnx`` (and its card)."""
    from lungseg.inference.export import export

    _, best = tiny_trained
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert export(best, "onnx", out) == [out, out.with_name("tiny.onnx.json")]
    return out
