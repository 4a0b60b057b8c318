"""Time ``predict --format dicom-seg``'s writer on a realistic CT series, stage by stage.

Writes a 512x512xN CT series with pydicom (one file per slice, as scanners do), reads it as
``predict`` does, puts a box-shaped "tumour" on a few slices and times the three parts of
:func:`lungseg.inference.dicom_seg.write_dicom_seg`: reading the instances' headers,
mapping the mask onto each instance's pixels, and encoding + saving the Segmentation with
highdicom. The first call in a process also loads highdicom's DICOM standard tables (about a
second), so it is timed on its own before the stages.

    python benchmarks/bench_dicom_seg.py [--slices 120] [--tumour-slices 20] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' series builder

from lungseg.data.dicom import read_dicom_series
from lungseg.inference.dicom_seg import (
    instance_frames,
    read_sources,
    write_dicom_seg,
)
from tests.inference.test_dicom_seg import write_ct_series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--tumour-slices", type=int, default=20)
    parser.add_argument("--work", type=Path, default=None, help="folder for the series")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        hu = np.full((512, 512, args.slices), -1000.0)
        start = (args.slices - args.tumour_slices) // 2
        hu[200:260, 220:300, start : start + args.tumour_slices] = 100
        series = write_ct_series(hu, np.diag([-0.7, -0.7, 2.5, 1.0]), work / "series")
        image, geometry = read_dicom_series(series)
        mask = image > 0
        t0 = time.perf_counter()
        write_dicom_seg(work / "first.dcm", mask, geometry.affine, series)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        sources = read_sources(series)
        t1 = time.perf_counter()
        frames = instance_frames(mask, geometry.affine, sources)
        t2 = time.perf_counter()
        path = write_dicom_seg(work / "seg.dcm", mask, geometry.affine, series)
        t3 = time.perf_counter()
        tumour = int(frames.any(axis=(1, 2)).sum())
        print(f"series: 512x512x{args.slices}, tumour on {tumour} slices")
        print(f"write_dicom_seg, first in the process: {cold:6.2f} s")
        print(f"  then: read instance headers (pydicom): {t1 - t0:6.2f} s")
        print(f"  then: map the mask onto the instances: {t2 - t1:6.2f} s")
        print(f"  then: write_dicom_seg (all of it):     {t3 - t2:6.2f} s")
        print(f"SEG file: {path.stat().st_size / 1e3:.0f} kB ({tumour} frames)")


if __name__ == "__main__":
    main()
