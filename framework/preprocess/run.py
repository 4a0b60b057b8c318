"""``lungseg preprocess``: every case through the recipe's chain into the slice store."""

from __future__ import annotations

import logging
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungseg.core import console
from lungseg.core.build import Parts, assemble
from lungseg.core.errors import DataError, LungsegError, LungsegWarning, RecipeError
from lungseg.core.recipe import Recipe, recipe_from_dict
from lungseg.core.safety import check_recipe_paths
from lungseg.data.msd import Case, find_cases
from lungseg.data.sources import prepare_source
from lungseg.data.volume import Volume, read_image, read_label
from lungseg.preprocess.chain import Chain, is_crop
from lungseg.store.slices import SliceStore


@dataclass
class PreprocessReport:
    """What one ``preprocess`` call did.

    ``tumour_removed`` maps each case written whose tumour the chain's crops cut into to the
    share of its labelled voxels they removed (each also warned about).
    """

    written: list[str]
    skipped: list[str]
    failed: dict[str, str]
    slices: int
    seconds: float
    tumour_removed: dict[str, float] = field(default_factory=dict)


class _Tally:
    """A chain step that also records the share of tumour voxels each crop keeps."""

    def __init__(self, step: Any, kept: list[float]) -> None:
        self.step, self.kept = step, kept

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        before = 0 if volume.mask is None else int(np.count_nonzero(volume.mask))
        out, info = self.step.apply(volume)
        if before and is_crop(info) and out.mask is not None:
            self.kept.append(int(np.count_nonzero(out.mask)) / before)
        return out, info

    def invert(self, array: np.ndarray, info: dict[str, Any], *, is_label: bool) -> np.ndarray:
        return self.step.invert(array, info, is_label=is_label)


_WORKER_CHAINS: dict[str, Chain] = {}


def _worker_chain(recipe: Recipe | Parts) -> Chain:
    """The recipe's chain, built once per process (forked workers inherit the parent's)."""
    parts = assemble(recipe)
    key = parts.recipe.preprocess_hash()
    if key not in _WORKER_CHAINS:
        _WORKER_CHAINS[key] = parts.chain
    return _WORKER_CHAINS[key]


def preprocess_case(
    case: Case, chain: Chain
) -> tuple[Volume, list[dict[str, Any]], dict[str, Any]]:
    """Read one case and run it through ``chain``.

    The chain owns the arrays read here (:attr:`Volume.owned`), so steps work in place where
    they can and no reference to an earlier stage's full-size array is kept: the peak is about
    the stored voxels plus one float32 copy of the scan.

    The attributes record the labelled voxels read (``tumour_voxels``) and the share of them
    in the slices the chain's crops dropped (``tumour_removed_fraction``; 0 when the scan has
    no label or no tumour): a crop that cuts into the tumour is not silent.

    Returns:
        The preprocessed volume, the chain's trace and the attributes to store.

    Raises:
        DataError: unreadable or inconsistent files, or a step refused the volume; the
            message names the file.
    """
    image, geometry = read_image(case.image)
    mask = None
    if case.label is not None:
        mask = read_label(case.label, geometry, str(case.image))
    tumour = 0 if mask is None else int(np.count_nonzero(mask))
    volume = Volume(image, mask, geometry.affine, str(case.image), owned=True)
    del image, mask  # the chain may drop or overwrite them
    kept: list[float] = []
    volume, trace = Chain([(n, _Tally(step, kept)) for n, step in chain.steps]).forward(volume)
    attrs = {
        "geometry": geometry.to_attrs(),
        "trace": trace,
        "kept_slices": Chain.kept_slices(
            trace, Chain.canonical_depth(trace, volume.image.shape[2])
        ),
        "image_path": str(case.image),
        "label_path": None if case.label is None else str(case.label),
        "tumour_voxels": tumour,
        "tumour_removed_fraction": round(1 - float(np.prod(kept)), 6) if tumour else 0.0,
    }
    return volume, trace, attrs


def _work(case: Case, recipe_dict: dict, store_path: str, options: dict) -> tuple[str, Any]:
    """Preprocess and store one case; returns its id, slices stored and tumour removed."""
    recipe = recipe_from_dict(recipe_dict)
    volume, _, attrs = preprocess_case(case, _worker_chain(recipe))
    attrs.update(preprocess=recipe.preprocess_dict(), preprocess_hash=recipe.preprocess_hash())
    image = np.moveaxis(volume.image, 2, 0)  # (n, H, W); contiguous after the resize step
    mask = None if volume.mask is None else np.moveaxis(volume.mask, 2, 0)
    del volume
    SliceStore(store_path, options, cache_bytes=0).write_case(case.case_id, image, mask, attrs)
    removed = (attrs["tumour_removed_fraction"], attrs["tumour_voxels"])
    return case.case_id, (image.shape[0], removed)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``; ``None`` -> ``(0, 1)``."""
    if not text:
        return 0, 1
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise RecipeError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise RecipeError(f"--shard {text!r}: need 0 <= I < N")
    return index, count


def run_preprocess(
    recipe: Recipe | Parts,
    *,
    workers: int | None = None,
    shard: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessReport:
    """Preprocess every labelled case of the recipe's data into its store.

    Complete cases already in the store are skipped, so an interrupted (even killed) run
    can be repeated; a case a killed run left half-written is invisible and rewritten.
    A case that fails (unreadable file, image/label mismatch, a step's refusal) is
    reported and the others are still stored; nothing already in the store is changed.
    A case whose tumour the chain's crops cut into is stored, reported in
    ``tumour_removed`` and warned about (:class:`~lungseg.core.errors.LungsegWarning`,
    naming the case and the share of its tumour removed).

    Args:
        recipe: names the data, the chain and the store (a recipe, or its assembled parts).
        workers: processes, one case each at a time (default: all cores). Each holds about
            the scan's stored voxels plus one float32 copy of it (6 bytes a voxel for int16).
        shard: ``"I/N"``: only every N-th case from the I-th, for N machines filling one
            store.
        overwrite: rebuild a lungseg store made with another chain (everything in it is
            deleted); a path holding anything but a lungseg store is always refused.
        progress: show a progress bar.

    Returns:
        What was written, skipped and how fast.

    Raises:
        RecipeError: bad ``shard`` or chain.
        DataError: no cases, store made by another chain or format, or some cases failed
            (all listed in one message, each with the file at fault).
        OutputError: ``store.path`` is not a lungseg store, or overlaps ``data.root`` or
            ``output``.
    """
    start = time.perf_counter()
    parts = assemble(recipe)
    recipe = parts.recipe
    check_recipe_paths(recipe)  # never a store inside the scans or the run folder
    _worker_chain(parts)  # validate the chain before touching the store; forks inherit it
    root = prepare_source(recipe.data)
    index, count = parse_shard(shard)
    cases = find_cases(root)[index::count]
    store = SliceStore(recipe.store.path, recipe.store.storage_options, cache_bytes=0)
    store.initialise(recipe.preprocess_dict(), recipe.preprocess_hash(), overwrite)
    done = set(store.cases())
    todo = [c for c in cases if c.case_id not in done]
    skipped = [c.case_id for c in cases if c.case_id in done]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    report = PreprocessReport([], skipped, {}, 0, 0.0)
    console.log.log(
        logging.INFO if todo else logging.DEBUG,  # a complete store: nothing to say
        f"preprocess: {len(todo)} cases to write into {store.path} ({len(skipped)} already "
        f"complete), {workers} worker{'s' if workers > 1 else ''}",
    )
    cut: dict[str, tuple[float, int]] = {}  # case: (share of its tumour removed, tumour voxels)
    bar = console.progress(total=len(todo), desc="preprocess", unit="case", enabled=progress)
    args = (recipe.to_dict(), store.path, store.storage_options)
    if workers == 1:
        results = (_run_one(c, args) for c in todo)
        for case_id, outcome in results:
            _collect(case_id, outcome, report, cut, bar)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_work, c, *args): c.case_id for c in todo}
            for future in as_completed(futures):
                try:
                    outcome: Any = future.result()[1]
                except LungsegError as exc:
                    outcome = exc
                except Exception as exc:  # a worker crash is reported with its case
                    outcome = exc
                _collect(futures[future], outcome, report, cut, bar)
    bar.close()
    report.written.sort()
    report.seconds = time.perf_counter() - start
    for case_id, (share, voxels) in sorted(cut.items()):
        report.tumour_removed[case_id] = share
        warnings.warn(
            f"{case_id}: the preprocessing chain's crops removed {100 * share:.3g}% of its tumour "
            f"({round(share * voxels)} of {voxels} labelled voxels); check the crop steps",
            LungsegWarning,
            stacklevel=2,
        )
    failed = report.failed
    if failed:
        lines = "; ".join(f"{cid}: {why}" for cid, why in sorted(failed.items()))
        raise DataError(
            f"{len(failed)} of {len(todo)} cases failed ({lines}); the others were stored"
        )
    return report


def _run_one(case: Case, args: tuple) -> tuple[str, Any]:
    try:
        return case.case_id, _work(case, *args)[1]
    except Exception as exc:
        return case.case_id, exc


def _collect(case_id: str, outcome: Any, report: PreprocessReport, cut: dict, bar: Any) -> None:
    """Adds one case's outcome (``(slices, (share removed, tumour voxels))`` or an error)."""
    bar.update(1)
    if isinstance(outcome, Exception):
        why = str(outcome) if isinstance(outcome, LungsegError) else repr(outcome)
        report.failed[case_id] = why
        return
    slices, removed = outcome
    report.written.append(case_id)
    report.slices += int(slices)
    if removed[0] > 0:
        cut[case_id] = removed
