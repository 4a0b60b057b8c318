"""Quickstart benchmark: `lungseg run recipes/quickstart.yaml` from scratch, timed.

Runs the shipped quickstart recipe in a fresh temporary directory (synthetic data generated,
store built, model trained, evaluated, test scans predicted) and prints the wall time, the
peak resident memory and the held-out per-case 3D Dice against the targets
(< 10 minutes on a 2-core CPU, mean_case_dice >= 0.80).

    python benchmarks/bench_quickstart.py [--keep DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600.0
TARGET_DICE = 0.80


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="run in this folder and keep the outputs")
    parser.add_argument("--set", action="append", default=[], help="recipe override")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="lungseg-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "lungseg",
        "run",
        str(ROOT / "recipes" / "quickstart.yaml"),
        "--set",
        "trainer.enable_progress_bar=false",
    ]
    for item in args.set:
        command += ["--set", item]
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=work, capture_output=True, encoding="utf-8", errors="replace"
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-4000:], sep="\n")
        return result.returncode
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = json.loads((work / "runs" / "quickstart" / "metrics.json").read_text())
    dice = metrics["mean_case_dice"]
    print(result.stdout.strip())
    print(f"cases evaluated:       {len(metrics['per_case'])} (held-out validation cases)")
    scores = ", ".join(f"{row['dice']:.3f}" for row in metrics["per_case"])
    print(f"per-case 3D Dice:      {scores}")
    print(
        f"wall time:             {seconds:.0f} s (target < {TARGET_SECONDS:.0f} s): "
        f"{'ok' if seconds < TARGET_SECONDS else 'MISSED'}"
    )
    print(
        f"mean_case_dice:        {dice:.4f} (target >= {TARGET_DICE}): "
        f"{'ok' if dice >= TARGET_DICE else 'MISSED'}"
    )
    print(f"peak RSS (largest child process): {peak_mb:.0f} MB")
    print(f"outputs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
