"""Startup benchmark: wall time of `lungseg --help`, `lungseg plugins`, `lungseg preprocess`.

Every installed plugin is loaded as usual (in this repository's environment, the torchvision
example too). ``preprocess`` runs on a tiny synthetic store that is already complete, so it
measures the command's fixed startup: reading the recipe, loading and checking the plugins,
checking the paths, finding the cases and opening the store, with no case to process.

Each command runs ``--runs`` times in a fresh interpreter through :func:`lungseg.cli.main`
(what the ``lungseg`` script calls), which then reports whether torch was imported; the
median, fastest and slowest wall times are printed against the 1.5 s target, with
``python -c pass`` (the interpreter alone) for scale.

Usage::

    python benchmarks/bench_startup.py [--runs 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.5
HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning")

_WRAPPER = f"""
import json, sys
from lungseg.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def make_recipe(work: Path) -> Path:
    """A tiny synthetic dataset (5 cases 32x32x40), its recipe, and its store filled once."""
    import yaml

    from lungseg.data.synth import write_dataset

    data = work / "data"
    synthetic = {"cases": 5, "seed": 1, "size": 32, "slices": 40, "abdomen_slices": 10}
    if not data.is_dir():
        write_dataset(data, **synthetic, test_cases=1)
    recipe = {
        "name": "startup",
        "data": {
            "source": "synthetic",
            "root": str(data),
            "synthetic": {**synthetic, "test_cases": 1},
        },
        "store": {"path": str(work / "store.zarr")},
        "output": str(work / "run"),
        "preprocess": [
            {"name": "canonical"},
            {"name": "lung-crop"},
            {"name": "normalize", "divisor": 3071},
            {"name": "resize", "size": 32},
        ],
        "model": {"name": "unet", "features": [4, 8]},
    }
    path = work / "startup.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _, heavy, seconds = run(["preprocess", str(path), "--workers", "1"], work)
    print(f"filled the store once in {seconds:.2f} s (torch imported: {bool(heavy)})")
    return path


def run(args: list[str], cwd: Path) -> tuple[int, list[str], float]:
    """``(exit code, heavy modules imported, wall seconds)`` of one ``lungseg ARGS``."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args], cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    if done.returncode != 0 or report["code"] not in (0, None):
        sys.exit(f"lungseg {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return int(report["code"] or 0), report["heavy"], seconds


def baseline(runs: int) -> float:
    """Median wall time of ``python -c pass``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the tiny data here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    example = importlib.util.find_spec("lungseg_torchvision") is not None
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load:.1f}")
    print(f"example plugin lungseg-torchvision installed: {example}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        recipe = make_recipe(work)
        commands = {
            "lungseg --help": ["--help"],
            "lungseg plugins": ["plugins"],
            "lungseg preprocess (store complete)": ["preprocess", str(recipe), "--workers", "1"],
        }
        print(f"python -c pass: {baseline(args.runs):.2f} s (median of {args.runs})")
        print("\n| command | median s | min s | max s | target | torch imported |")
        print("| --- | ---: | ---: | ---: | --- | --- |")
        for label, argv in commands.items():
            results = [run(argv, work) for _ in range(args.runs)]
            times = [seconds for _, _, seconds in results]
            torch = any("torch" in heavy for _, heavy, _ in results)
            median = statistics.median(times)
            verdict = "met" if median < TARGET_S else "MISSED"
            print(
                f"| `{label}` | {median:.2f} | {min(times):.2f} | {max(times):.2f} "
                f"| < {TARGET_S} s: {verdict} | {'yes' if torch else 'no'} |"
            )


if __name__ == "__main__":
    main()
