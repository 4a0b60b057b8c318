"""What each ``lungseg`` sub-command does; :mod:`lungseg.cli` parses the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg import exit_codes
from lungseg.core import console


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
    console.result(f"synthetic dataset: {root}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from lungseg.preprocess.run import run_preprocess

    parts = _parts(args)
    report = run_preprocess(parts, workers=args.workers, shard=args.shard, overwrite=args.overwrite)
    rate = report.slices / report.seconds if report.seconds else 0.0
    console.result(
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
    for trained in results:
        if trained.is_global_zero:
            console.result(f"best checkpoint: {trained.best}")
            console.result(f"last checkpoint: {trained.last}")
    return 0


def _print_metrics(metrics: dict, output: str | Path) -> None:
    dice = metrics["mean_case_dice"]
    shown = "n/a" if dice is None else f"{dice:.4f}"
    console.result(f"mean_case_dice ({metrics['split']}): {shown}")
    pooled = metrics.get("pooled_dice")
    if pooled is not None:
        console.result(f"pooled_dice ({metrics['split']}): {pooled:.4f}")
    console.result(f"metrics: {Path(output) / 'metrics.json'}, {Path(output) / 'per_case.csv'}")
    if (Path(output) / "figures").is_dir():
        console.result(f"figures: {Path(output) / 'figures'}")
    if (Path(output) / "loss_curve.png").is_file():
        console.result(f"loss curve: {Path(output) / 'loss_curve.png'}")


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
        engine=args.engine,
        output_format=args.format,
    )
    for path in report.written:
        console.result(f"mask: {path}")
    for path in report.extra:
        console.result(f"also: {path}")
    for name, why in report.failed.items():
        console.log.error(
            f"lungseg: error: {why}" if name in why else f"lungseg: error: {name}: {why}"
        )
    if not report.failed:
        return exit_codes.OK
    console.log.error(f"lungseg: {len(report.failed)} input(s) failed: {', '.join(report.failed)}")
    # some written: a partial result to look at; none: the inputs (data) are at fault
    return exit_codes.PARTIAL if report.written else exit_codes.DATA


def cmd_export(args: argparse.Namespace) -> int:
    from lungseg.inference.export import export

    for path in export(args.checkpoint, args.format, args.out, overwrite=args.overwrite):
        console.result(f"exported: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    parts = _parts(args)
    from lungseg.pipeline import run

    return run(parts, overwrite=args.overwrite, resume=args.resume)


def cmd_plugins(args: argparse.Namespace) -> int:
    from lungseg.core.build import registry as load
    from lungseg.core.registry import KINDS

    registry = load()
    plurals = {"loss": "losses"}
    for kind in KINDS:
        console.result(f"{plurals.get(kind, kind + 's')}:")
        for entry in registry.entries(kind):
            console.result(f"  {entry.name:<16} [{entry.plugin}] ({entry.signature()})")
            if entry.description:
                console.result(f"  {'':<16} {entry.description}")
    for name, why in sorted(registry.broken.items()):
        console.result(f"broken plugin {name}: {why}")
    return 0
