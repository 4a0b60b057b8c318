#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, on a fresh GPU machine without network access.
#
#   benchmarks/gpu_check.sh [--wheels DIR] [--work DIR] [--python PY] [--cpu-smoke]
#
#   --wheels DIR   (or LUNGSEG_WHEELS=DIR) wheels of lungseg's dependencies that the machine
#                  lacks (made beforehand where there is network, see benchmarks/README.md).
#                  They and lungseg itself, from this repository, are installed with
#                  `pip --no-index` into a virtual environment under --work that sees the
#                  machine's own packages (torch with CUDA).
#   --work DIR     where the environment, data and runs go (default: a new temporary folder).
#   --python PY    the interpreter (default: $PYTHON or python3). When it already imports
#                  this repository's lungseg and its dependencies, nothing is installed.
#   --cpu-smoke    every step at toy sizes on the CPU: checks this script, measures nothing.
#
# Steps, each reported as passed or FAILED:
#   1. bench_gpu.py: the seed UNet at 256x256, batch 32: fp32 strict, fp32 default (TF32
#      convolutions), bf16-mixed + channels_last, + torch.compile: images/s and MFU.
#   2. gpu_train_check.py: `lungseg synth` + `lungseg preprocess`, then a short real training
#      run (bf16-mixed, channels_last, accelerator gpu): images/s and the fraction of
#      training time spent waiting on the loader.
#   3. (GPU only) bench_predict.py with the seed UNet on the GPU: the measured share of
#      prediction time outside the network; and tests/preprocess/test_invert_fast.py, which
#      runs the batched inverse on CUDA too (when pytest is installed).
# Exit status: 0 when every step passed, 1 when one failed, 2 for a usage or install error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=${LUNGSEG_WHEELS:-}
PY=${PYTHON:-python3}
WORK=""
SMOKE=0

die() {
    echo "gpu_check: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels) [[ $# -ge 2 ]] || die "--wheels needs a folder"; WHEELS=$2; shift 2 ;;
        --work) [[ $# -ge 2 ]] || die "--work needs a folder"; WORK=$2; shift 2 ;;
        --python) [[ $# -ge 2 ]] || die "--python needs an interpreter"; PY=$2; shift 2 ;;
        --cpu-smoke) SMOKE=1; shift ;;
        -h | --help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ -z "$WHEELS" || -d "$WHEELS" ]] || die "--wheels $WHEELS: no such folder"
command -v "$PY" > /dev/null || die "--python $PY: not found"
if [[ -z "$WORK" ]]; then
    WORK=$(mktemp -d -t lungseg-gpu-check.XXXXXX)
elif [[ -e "$WORK" && -n "$(ls -A "$WORK")" ]]; then
    die "--work $WORK: not empty; give a new or empty folder"
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$ROOT"

ready() { # does $1 import this repository's lungseg and what the checks need?
    "$1" - "$ROOT" << 'EOF' > /dev/null 2>&1
import os, sys
import albumentations, cv2, isal, nibabel, pytorch_lightning, torch, yaml, zarr
import lungseg
sys.exit(0 if os.path.realpath(lungseg.__file__).startswith(os.path.realpath(sys.argv[1])) else 1)
EOF
}

# ---------------------------------------------------------------- 0. the environment
if ready "$PY"; then
    echo "gpu_check: using $PY (lungseg and its dependencies import)"
else
    [[ -n "$WHEELS" ]] || die "lungseg or a dependency does not import with $PY; pass --wheels DIR"
    echo "gpu_check: installing from $WHEELS into $WORK/venv (no network)"
    "$PY" -m venv --system-site-packages "$WORK/venv" || die "could not create $WORK/venv"
    PY="$WORK/venv/bin/python"
    pip_offline() { "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "$@"; }
    pip_offline "setuptools>=68" || die "setuptools>=68 is neither installed nor in $WHEELS"
    pip_offline --no-build-isolation -e "$ROOT" || die "pip could not install lungseg from $WHEELS"
    ready "$PY" || die "lungseg still does not import after installing (see pip's messages)"
fi
if [[ $SMOKE -eq 0 ]]; then
    command -v nvidia-smi > /dev/null && nvidia-smi -L || true
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "torch sees no CUDA GPU here (use --cpu-smoke to check the script on a CPU)"
fi

# ---------------------------------------------------------------- the steps
FAILED=()
step() { # step NAME COMMAND...: run it, report, remember a failure
    local name=$1
    shift
    echo
    echo "=== $name: $*"
    if "$@"; then
        echo "=== $name: passed"
    else
        echo "=== $name: FAILED (exit status $?)"
        FAILED+=("$name")
    fi
}

if [[ $SMOKE -eq 1 ]]; then
    step bench_gpu "$PY" benchmarks/bench_gpu.py --cpu-smoke
    step train "$PY" benchmarks/gpu_train_check.py --work "$WORK/train" --cpu-smoke
else
    step bench_gpu "$PY" benchmarks/bench_gpu.py --batch 32 --steps 30
    step train "$PY" benchmarks/gpu_train_check.py --work "$WORK/train"
    step predict "$PY" benchmarks/bench_predict.py --device cuda \
        --features 64,128,256,512 --batch-size 32 --work "$WORK/predict"
    if "$PY" -c 'import pytest' 2> /dev/null; then
        step invert-tests "$PY" -m pytest -q -p no:cacheprovider tests/preprocess/test_invert_fast.py
    else
        echo "gpu_check: pytest is not installed: the CUDA inverse tests are skipped"
    fi
fi

echo
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "gpu_check: FAILED: ${FAILED[*]} (work folder: $WORK)"
    exit 1
fi
echo "gpu_check: all steps passed (work folder: $WORK)"
