"""The command line passes ``export`` and ``predict --engine/--format`` through as documented."""

from __future__ import annotations

import pytest

from lungseg.cli import build_parser
from lungseg.commands import cmd_export, cmd_predict


def test_export_parses_checkpoint_format_out_and_overwrite():
    args = build_parser().parse_args(
        ["export", "--checkpoint", "run/best.ckpt", "--format", "onnx", "--out", "m.onnx"]
    )
    assert args.func is cmd_export
    assert (args.checkpoint, args.format, args.out, args.overwrite) == (
        "run/best.ckpt",
        "onnx",
        "m.onnx",
        False,
    )
    args = build_parser().parse_args(
        ["export", "--checkpoint", "c", "--format", "torchscript", "--out", "m.pt", "--overwrite"]
    )
    assert args.format == "torchscript" and args.overwrite


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--checkpoint", "c", "--format", "tflite", "--out", "m"],
        ["export", "--format", "onnx", "--out", "m"],
        ["predict", "s.nii.gz", "--checkpoint", "c", "--out", "o", "--engine", "tensorrt"],
        ["predict", "s.nii.gz", "--checkpoint", "c", "--out", "o", "--format", "png"],
    ],
)
def test_export_and_predict_reject_unknown_choices_as_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "usage: lungseg" in capsys.readouterr().err


def test_predict_engine_and_format_default_to_torch_and_nifti():
    parser = build_parser()
    args = parser.parse_args(["predict", "s.nii.gz", "--checkpoint", "c", "--out", "o"])
    assert args.func is cmd_predict
    assert (args.engine, args.format) == ("torch", "nifti")
    onnx = ["--engine", "onnx", "--format", "dicom-seg"]
    args = parser.parse_args(["predict", "dcm/", "--checkpoint", "m.onnx", "--out", "o", *onnx])
    assert (args.engine, args.format) == ("onnx", "dicom-seg")
