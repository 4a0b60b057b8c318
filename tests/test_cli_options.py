"""Global options anywhere, ``--version``, and help text with defaults for every option."""

from __future__ import annotations

import argparse

import pytest
import yaml

from lungseg import __version__, exit_codes
from lungseg.cli import _subparsers, build_parser, main

from .conftest import lungseg, tiny_recipe_dict


def test_version_prints_the_package_version():
    result = lungseg("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lungseg {__version__}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(tmp_path, where):
    missing = str(tmp_path / "missing.yaml")
    args = ["--debug", "train", missing] if where == "before" else ["train", missing, "--debug"]
    result = lungseg(*args)
    assert result.returncode == exit_codes.USAGE
    assert "Traceback" in result.stderr and "recipe file not found" in result.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["plugins"], 0),
        (["-v", "plugins"], 1),
        (["plugins", "-v"], 1),
        (["-v", "plugins", "-vv"], 3),
        (["plugins", "--verbose", "--verbose"], 2),
        (["-q", "plugins"], -1),
        (["plugins", "--quiet"], -1),
        (["download", "msd", "--to", "d", "-q"], -1),
    ],
)
def test_verbose_and_quiet_count_before_and_after_the_command(argv, expected):
    from lungseg.cli import _verbosity

    assert _verbosity(build_parser().parse_args(argv)) == expected


def _preprocess_recipe(tiny_dataset, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_dataset, tmp_path)))
    return str(recipe)


def test_messages_go_to_stderr_results_to_stdout_and_quiet_keeps_only_results(
    tiny_dataset, tmp_path
):
    recipe = _preprocess_recipe(tiny_dataset, tmp_path)
    result = lungseg("preprocess", recipe, "--workers", "1")
    assert result.returncode == 0, result.stderr
    store = tmp_path / "store.zarr"
    # stdout: the result line alone; stderr: what it was doing
    assert result.stdout.splitlines() == [
        line for line in result.stdout.splitlines() if line.startswith(f"store: {store} (")
    ]
    assert len(result.stdout.splitlines()) == 1 and "5 cases written" in result.stdout
    assert f"preprocess: 5 cases to write into {store} (0 already complete), 1 worker\n" == (
        result.stderr
    )
    # -q after the command: the same result, no message; -v: debug messages too
    quiet = lungseg("preprocess", recipe, "--workers", "1", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "5 already complete" in quiet.stdout and len(quiet.stdout.splitlines()) == 1
    verbose = lungseg("-v", "preprocess", recipe, "--workers", "1")
    assert f"lungseg {__version__}: -v preprocess {recipe}" in verbose.stderr
    assert "preprocess: 0 cases to write" in verbose.stderr
    assert "lungseg 0" not in result.stderr  # no debug message without -v


def test_in_process_messages_follow_the_captured_stderr(capsys):
    assert main(["plugins", "-v"]) == 0
    captured = capsys.readouterr()
    assert f"lungseg {__version__}: plugins -v" in captured.err
    assert "lungseg" not in captured.out.splitlines()[0] and captured.out.startswith("preproc")


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    return [("lungseg", parser)] + [(p.prog, p) for p in _subparsers(parser)]


#: Defaults that need no mention: nothing given, a flag not set, a counter at zero.
_TRIVIAL = (None, False, 0, [], argparse.SUPPRESS)


def _option_problems(parsers) -> tuple[list[str], int]:
    """Options without help, or with a default their help does not show; and options seen."""
    problems = []
    seen = 0
    for prog, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                problems += [
                    f"{prog} {c.dest}: no help" for c in action._choices_actions if not c.help
                ]
                continue
            seen += 1
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                problems.append(f"{prog} {name}: no help")
                continue
            default = action.default
            if any(default is t or default == t for t in _TRIVIAL if type(t) is type(default)):
                continue
            if "%(default)s" not in action.help and str(default) not in action.help:
                problems.append(f"{prog} {name}: default {default!r} not shown in its help")
    return problems, seen


def test_every_option_has_help_and_shows_its_default():
    problems, seen = _option_problems(_parsers())
    assert seen > 60  # every sub-command was walked
    assert problems == []


def test_the_walk_catches_an_option_without_help_or_default():
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--threshold", type=float, default=0.5, help="a threshold")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch", type=int, default=8, help="slices (default: %(default)s)")
    parser.add_argument("--tta", action="store_true", help="flip")
    problems, _ = _option_problems([("x", parser)])
    assert problems == ["x --threshold: default 0.5 not shown in its help", "x --split: no help"]


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("synth", ["(default: 16)", "(default: easy)"]),
        ("evaluate", ["--split {val,test,train}", "(default: val)", "checkpoints/best.ckpt"]),
        ("predict", ["evaluate.threshold", "(default: torch)", "(default: nifti)"]),
        ("run", ["[--resume | --overwrite]", "continues from its last.ckpt"]),
    ],
)
def test_command_help_shows_defaults(command, words):
    result = lungseg(command, "--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for word in words:
        assert word in flat, word


def test_help_ends_with_the_exit_codes():
    result = lungseg("--help")
    assert result.returncode == 0
    help_text = result.stdout[result.stdout.index("exit status:") :]
    for code, meaning in exit_codes.TABLE:
        assert f"{code:<4} {meaning}" in help_text
