"""The ``lungseg`` command line. User mistakes print one line and exit 2 (``--debug`` for more)."""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from lungseg import __version__
from lungseg.core.errors import LungsegError, LungsegWarning

EXIT_USER_ERROR = 2
_PYTHON_FORMAT = warnings.formatwarning


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """lungseg's own warnings as one line, like its errors; others as Python shows them."""
    if issubclass(category, LungsegWarning):
        return f"lungseg: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


def _parts(args: argparse.Namespace):
    """The command's recipe, checked whole (plugins, paths) before any work, as built parts."""
    from lungseg.core.build import assemble
    from lungseg.core.recipe import load_recipe
    from lungseg.core.safety import check_recipe_paths

    parts = assemble(load_recipe(args.recipe, args.set or []))  # every plugin name and parameter
    check_recipe_paths(parts.recipe)  # the store, the scans and the run folder kept apart
    return parts


def cmd_synth(args: argparse.Namespace) -> int:
    from lungseg.data.synth import write_dataset

    root = write_dataset(
        args.out,
        args.cases,
        seed=args.seed,
        size=args.size,
        slices=args.slices,
        abdomen_slices=args.abdomen_slices,
        test_cases=args.test_cases,
        preset=args.preset,
        overwrite=args.overwrite,
    )
    print(f"synthetic dataset: {root}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from lungseg.preprocess.run import run_preprocess

    parts = _parts(args)
    report = run_preprocess(parts, workers=args.workers, shard=args.shard, overwrite=args.overwrite)
    rate = report.slices / report.seconds if report.seconds else 0.0
    print(
        f"store: {parts.recipe.store.path} ({len(report.written)} cases written, "
        f"{len(report.skipped)} already complete, {report.slices} slices, {rate:.0f} slices/s)"
    )
    return 0


def _fold(value: str) -> int | str:
    """``--fold``: a fold number, or ``all``."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or all, got {value!r}") from None


def cmd_train(args: argparse.Namespace) -> int:
    parts = _parts(args)
    from lungseg.training.train import train, train_folds

    kwargs = {"resume": args.resume, "overwrite": args.overwrite}
    if args.fold == "all":
        results = train_folds(parts, **kwargs)
    else:
        results = [train(parts, fold=args.fold, **kwargs)]
    for result in results:
        if result.is_global_zero:
            print(f"best checkpoint: {result.best}\nlast checkpoint: {result.last}")
    return 0


def _print_metrics(metrics: dict, output: str | Path) -> None:
    dice = metrics["mean_case_dice"]
    shown = "n/a" if dice is None else f"{dice:.4f}"
    print(f"mean_case_dice ({metrics['split']}): {shown}")
    pooled = metrics.get("pooled_dice")
    if pooled is not None:
        print(f"pooled_dice ({metrics['split']}): {pooled:.4f}")
    print(f"metrics: {Path(output) / 'metrics.json'}, {Path(output) / 'per_case.csv'}")
    if (Path(output) / "figures").is_dir():
        print(f"figures: {Path(output) / 'figures'}")
    if (Path(output) / "loss_curve.png").is_file():
        print(f"loss curve: {Path(output) / 'loss_curve.png'}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    parts = _parts(args)
    from lungseg.inference.evaluate import evaluate, output_folder

    metrics = evaluate(parts, args.checkpoint, args.split, overwrite=args.overwrite, fold=args.fold)
    if args.fold is not None:
        from lungseg.training.folds import fold_parts

        parts = fold_parts(parts, args.fold)
    _print_metrics(metrics, output_folder(parts.recipe, args.split))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lungseg.core.errors import RecipeError
    from lungseg.core.recipe import Component
    from lungseg.inference.predict import predict

    names = args.postprocess or []
    if "auto" in names and len(names) > 1:
        raise RecipeError("--postprocess auto: applies the recorded choice; name no others")
    posts = "auto" if names == ["auto"] else [Component(n) for n in names] if names else None
    report = predict(
        args.checkpoint,
        args.inputs,
        args.out,
        threshold=args.threshold,
        batch_size=args.batch_size,
        device=args.device,
        tta=True if args.tta else None,
        postprocess=posts,
        prob=args.prob,
        overlay=args.overlay,
        overwrite=args.overwrite,
    )
    for path in report.written:
        print(f"mask: {path}")
    for path in report.extra:
        print(f"also: {path}")
    for name, why in report.failed.items():
        print(
            f"lungseg: error: {why}" if name in why else f"lungseg: error: {name}: {why}",
            file=sys.stderr,
        )
    if report.failed:
        print(
            f"lungseg: {len(report.failed)} input(s) failed: {', '.join(report.failed)}",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    parts = _parts(args)
    from lungseg.pipeline import run

    return run(parts, overwrite=args.overwrite)


def cmd_plugins(args: argparse.Namespace) -> int:
    from lungseg.core.build import registry as load
    from lungseg.core.registry import KINDS

    registry = load()
    plurals = {"loss": "losses"}
    for kind in KINDS:
        print(f"{plurals.get(kind, kind + 's')}:")
        for entry in registry.entries(kind):
            print(f"  {entry.name:<16} [{entry.plugin}] ({entry.signature()})")
            if entry.description:
                print(f"  {'':<16} {entry.description}")
    for name, why in sorted(registry.broken.items()):
        print(f"broken plugin {name}: {why}")
    return 0


def _add_recipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY.PATH=VALUE",
        help="override a recipe key (value parsed as YAML); repeatable",
    )


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"{what} (lungseg never replaces files it did not make)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungseg", description="Lung-tumour segmentation from chest CT."
    )
    parser.add_argument("--version", action="version", version=f"lungseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from lungseg.core.recipe import SyntheticConfig

    d = SyntheticConfig()
    p = sub.add_parser("synth", help="write a synthetic CT dataset in the MSD Task06_Lung layout")
    p.add_argument("out", help="a new or empty folder (or one `lungseg synth` made)")
    p.add_argument("--cases", type=int, default=d.cases, help="labelled scans (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="dataset seed (%(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="in-plane voxels (%(default)s)")
    p.add_argument("--slices", type=int, default=d.slices, help="axial slices (%(default)s)")
    p.add_argument(
        "--abdomen-slices",
        type=int,
        default=d.abdomen_slices,
        help="abdomen-only slices at the inferior end (%(default)s)",
    )
    p.add_argument(
        "--test-cases",
        type=int,
        default=d.test_cases,
        help="unlabelled scans in imagesTs/ (%(default)s)",
    )
    p.add_argument(
        "--preset",
        choices=["easy", "hard"],
        default=d.preset,
        help="easy: the quickstart's scans; hard: varied anatomy, spacing and lesions, "
        "some scans without tumour (%(default)s)",
    )
    _add_overwrite(p, "replace a synthetic dataset lungseg made there")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preprocess", help="preprocess the recipe's data into its Zarr slice store")
    _add_recipe(p)
    p.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: all cores)"
    )
    p.add_argument("--shard", default=None, metavar="I/N", help="only every N-th case from I")
    _add_overwrite(p, "delete and rebuild a lungseg store made with another chain")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train the recipe's model")
    _add_recipe(p)
    p.add_argument("--resume", action="store_true", help="continue from checkpoints/last.ckpt")
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
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--split", default="val", choices=["val", "test", "train"])
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
        "repeatable: several average their probabilities",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    p.add_argument("--prob", action="store_true", help="also write <name>_prob.nii.gz (float32)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    p.add_argument("--tta", action="store_true", help="average with left-right flipped slices")
    p.add_argument(
        "--postprocess",
        action="append",
        metavar="NAME",
        help="postprocessor plugin (min-size, largest-components, inside-lungs); repeatable; "
        "auto: the ones `lungseg evaluate` chose for the checkpoint's run",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    _add_overwrite(p, "replace masks that an earlier predict wrote in --out")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="data, preprocess, train, evaluate and predict, in order")
    _add_recipe(p)
    _add_overwrite(p, "replace an earlier run's checkpoints, evaluation and predictions")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plugins", help="list every registered plugin name by kind")
    p.set_defaults(func=cmd_plugins)

    from lungseg.data.download import register_cli

    register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _warning_line
    try:
        return args.func(args)
    except LungsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"lungseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lungseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
