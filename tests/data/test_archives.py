"""lungseg.data.archives: nothing lands outside the target folder, however links chain.

Tar archives are built in the tests, member by member; the helpers here also serve the
download tests.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.core.errors import DataError
from lungseg.data.archives import extract_archive


def _nifti_bytes(seed: int) -> bytes:
    data = np.random.default_rng(seed).integers(-1000, 400, (8, 8, 6)).astype(np.int16)
    image = nib.Nifti1Image(data, np.eye(4))
    return image.to_bytes()


def _layout(top: str, cases: int = 2) -> dict[str, bytes]:
    """Files of a tiny MSD layout under ``top`` (no dataset.json: paired by name)."""
    files: dict[str, bytes] = {}
    for i in range(1, cases + 1):
        files[f"{top}/imagesTr/lung_{i:03d}.nii"] = _nifti_bytes(i)
        files[f"{top}/labelsTr/lung_{i:03d}.nii"] = _nifti_bytes(100 + i)
    files[f"{top}/imagesTs/lung_009.nii"] = _nifti_bytes(9)
    return files


def _tar(files: dict[str, bytes], extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def test_links_inside_the_target_are_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar(_layout("Task06_Lung"), [_link("Task06_Lung/alias", "imagesTr")]))
    extract_archive(archive, tmp_path / "out")
    alias = tmp_path / "out" / "Task06_Lung" / "alias"
    assert alias.is_symlink() and (alias / "lung_001.nii").is_file()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


# Links whose text stays inside once normalised, but which resolve outside the target folder
# once the archive's earlier (or later) symlinks exist on disk.
CHAINED_ESCAPES = {
    "chain": ([_dir("d"), _link("d/l1", ".."), _link("esc", "d/l1/../..")], "esc"),
    "chain-link-first": ([_link("esc", "d/l1/../.."), _dir("d"), _link("d/l1", "..")], "esc"),
    "link-to-link": (
        [_link("d/up", ".."), _link("d/up2", "up"), _link("e/f", "../d/up2/..")],
        "e/f",
    ),
    "through-symlinked-dir": (
        [_link("a/b/c", "../.."), _link("x", "a/b/c/../Task06_Lung")],
        "x",
    ),
    "via-symlinked-dir-alias": (
        [_link("d/l1", ".."), _link("sub", "d/l1"), _link("Task06_Lung/esc", "../sub/..")],
        "Task06_Lung/esc",
    ),
    "hardlink-through-symlink": (
        [_link("d/l1", ".."), _link("hard", "d/l1/../outside/x", tarfile.LNKTYPE)],
        "hard",
    ),
    "backslash-absolute": ([_link("Task06_Lung/w", "\\\\server\\share")], "Task06_Lung/w"),
    "loop": ([_link("p", "q"), _link("q", "p/x")], "p"),
}


@pytest.mark.parametrize("filtered", [True, False], ids=["data-filter", "no-data-filter"])
@pytest.mark.parametrize("case", list(CHAINED_ESCAPES), ids=list(CHAINED_ESCAPES))
def test_chained_links_are_judged_by_where_they_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, filtered: bool
) -> None:
    """Our own check refuses them, also where tarfile has no ``data`` filter (Python < 3.11.4)."""
    if not filtered:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    extra, member = CHAINED_ESCAPES[case]
    (tmp_path / "outside").mkdir()
    archive = tmp_path / "outside" / "evil.tar"
    archive.write_bytes(_tar(_layout("Task06_Lung"), extra))
    target = tmp_path / "outside" / "deeper" / "target"
    with pytest.raises(DataError, match=rf"evil\.tar holds {re.escape(repr(member))}"):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []  # staging removed, nothing moved in
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["deeper", "evil.tar"]
    assert [p.name for p in (tmp_path / "outside" / "deeper").iterdir()] == ["target"]


def test_a_later_member_written_through_a_symlink_of_the_same_name_is_refused(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "twice.tar"
    members = [_link("Task06_Lung/a", "imagesTr/lung_001.nii"), _file("Task06_Lung/a")]
    archive.write_bytes(_tar(_layout("Task06_Lung"), members))  # the file would overwrite 001
    with pytest.raises(DataError, match="'Task06_Lung/a' more than once"):
        extract_archive(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_internal_chain_of_links_still_extracts(tmp_path: Path) -> None:
    extra = [
        _link("Task06_Lung/alias", "imagesTr"),
        _link("Task06_Lung/alias2", "alias"),  # a link to a link
        _link("Task06_Lung/imagesTr/up", ".."),  # climbs, but only to Task06_Lung
        _link("Task06_Lung/labels", "alias2/up/labelsTr"),  # through links to folders
        _link("top", "Task06_Lung/imagesTr/up/../Task06_Lung/imagesTr/up/.."),  # the root
        _link("Task06_Lung/copy", "Task06_Lung/imagesTr/lung_001.nii", tarfile.LNKTYPE),
    ]
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar(_layout("Task06_Lung"), extra))
    out = tmp_path / "out"
    extract_archive(archive, out)
    root = out / "Task06_Lung"
    assert (root / "alias2").is_symlink() and (root / "alias2" / "lung_001.nii").is_file()
    assert (root / "labels").resolve() == (root / "labelsTr").resolve()
    assert (root / "labels" / "lung_002.nii").read_bytes() == _nifti_bytes(102)
    assert (out / "top").resolve() == out.resolve()
    assert (root / "copy").read_bytes() == _nifti_bytes(1)
    assert sorted(p.name for p in out.iterdir()) == ["Task06_Lung", "top"]
