"""The ``lungseg`` sub-commands and their options, each with help text and its default shown."""

from __future__ import annotations

import argparse

from lungseg.commands import (
    _fold,
    cmd_evaluate,
    cmd_export,
    cmd_plugins,
    cmd_predict,
    cmd_preprocess,
    cmd_run,
    cmd_synth,
    cmd_train,
)


def _add_recipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="the YAML recipe file")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY.PATH=VALUE",
        help="override a recipe key (value parsed as YAML); repeatable",
    )


def _add_overwrite(p: argparse.ArgumentParser | argparse._ActionsContainer, what: str) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"{what} (lungseg never replaces files it did not make)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add every sub-command, with its options and the function that runs it, to ``sub``."""
    from lungseg.core.recipe import SyntheticConfig

    d = SyntheticConfig()
    p = sub.add_parser("synth", help="write a synthetic CT dataset in the MSD Task06_Lung layout")
    p.add_argument("out", help="a new or empty folder (or one `lungseg synth` made)")
    p.add_argument(
        "--cases", type=int, default=d.cases, help="labelled scans (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="dataset seed (default: %(default)s)")
    p.add_argument(
        "--size", type=int, default=d.size, help="in-plane voxels (default: %(default)s)"
    )
    p.add_argument(
        "--slices", type=int, default=d.slices, help="axial slices (default: %(default)s)"
    )
    p.add_argument(
        "--abdomen-slices",
        type=int,
        default=d.abdomen_slices,
        help="abdomen-only slices at the inferior end (default: %(default)s)",
    )
    p.add_argument(
        "--test-cases",
        type=int,
        default=d.test_cases,
        help="unlabelled scans in imagesTs/ (default: %(default)s)",
    )
    p.add_argument(
        "--preset",
        choices=["easy", "hard"],
        default=d.preset,
        help="easy: the quickstart's scans; hard: varied anatomy, spacing and lesions, "
        "some scans without tumour (default: %(default)s)",
    )
    _add_overwrite(p, "replace a synthetic dataset lungseg made there")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preprocess", help="preprocess the recipe's data into its Zarr slice store")
    _add_recipe(p)
    p.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: all cores)"
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="only every N-th case from the I-th (0-based), for N machines filling one store "
        "(default: every case)",
    )
    _add_overwrite(p, "delete and rebuild a lungseg store made with another chain")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train the recipe's model")
    _add_recipe(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from checkpoints/last.ckpt",
    )
    p.add_argument(
        "--fold",
        type=_fold,
        default=None,
        metavar="N|all",
        help="with split.folds > 1: train fold N (default split.fold), or all, into OUTPUT/fold_N",
    )
    _add_overwrite(p, "replace the checkpoints of an earlier run in the recipe's output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate the best checkpoint on validation cases")
    _add_recipe(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="the .ckpt to evaluate (default: OUTPUT/checkpoints/best.ckpt)",
    )
    p.add_argument(
        "--split",
        default="val",
        choices=["val", "test", "train"],
        help="the cases to score: val (into OUTPUT; k-fold: out-of-fold), test (the held-out "
        "cases) or train (k-fold: with --fold); test and train into OUTPUT/evaluate_SPLIT "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--fold",
        type=int,
        default=None,
        metavar="N",
        help="with split.folds > 1: evaluate fold N alone, into OUTPUT/fold_N "
        "(default: every fold, out-of-fold)",
    )
    _add_overwrite(p, "replace an earlier evaluation of the same split")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write tumour masks for new CT scans")
    p.add_argument(
        "inputs", nargs="+", help="NIfTI files, folders of them, or a folder with one DICOM series"
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="PATH",
        help="a .ckpt, or a run folder (its best.ckpt; a k-fold run: every fold's); "
        "repeatable: several average their probabilities; with --engine onnx, a .onnx file",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new, empty or one predict made)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability above which a voxel is tumour, in (0, 1) "
        "(default: the checkpoint recipe's evaluate.threshold)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices per forward pass (default: the checkpoint recipe's evaluate.batch_size)",
    )
    p.add_argument("--prob", action="store_true", help="also write <name>_prob.nii.gz (float32)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average with left-right flipped slices (default: the recipe's evaluate.tta)",
    )
    p.add_argument(
        "--postprocess",
        action="append",
        metavar="NAME",
        help="postprocessor plugin (min-size, largest-components, inside-lungs); repeatable; "
        "auto: the ones `lungseg evaluate` chose for the checkpoint's run "
        "(default: the recipe's evaluate.postprocess)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="what runs the network: torch (a .ckpt or run folder) or onnx (--checkpoint is "
        "a .onnx file from `lungseg export`) (default: %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=["nifti", "nii", "dicom-seg"],
        default="nifti",
        help="mask format: nifti (<name>.nii.gz in the scan's geometry), nii (the same, "
        "uncompressed: no deflate time) or dicom-seg (a DICOM SEG object; needs a DICOM series "
        "input) (default: %(default)s)",
    )
    _add_overwrite(p, "replace masks that an earlier predict wrote in --out")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a lungseg .ckpt")
    p.add_argument(
        "--format", required=True, choices=["onnx", "torchscript"], help="the exported format"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    _add_overwrite(p, "replace a file an earlier export wrote")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="data, preprocess, train, evaluate and predict, in order")
    _add_recipe(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="keep the stages an earlier run finished and do the rest: an interrupted "
        "training continues from its last.ckpt, only missing masks are predicted",
    )
    _add_overwrite(again, "replace an earlier run's checkpoints, evaluation and predictions")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plugins", help="list every registered plugin name by kind")
    p.set_defaults(func=cmd_plugins)

    from lungseg.data.download import register_cli

    register_cli(sub)
