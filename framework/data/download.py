"""Fetch the lung data: the MSD Task06_Lung archive over HTTP, or a copy published on Kaggle.

Downloads resume where they stopped, the MSD archive is checked against its md5 before it is
unpacked, and every archive is unpacked only after each member was checked to stay inside the
target folder. ``lungseg download`` is the command line face of this module.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from lungseg.core import console
from lungseg.core.errors import DataError, RecipeError
from lungseg.core.safety import claim_dir
from lungseg.data.archives import extract_archive
from lungseg.data.msd import find_cases, find_msd_root, locate_msd_root
from lungseg.data.transfer import Transfer, file_md5

__all__ = ["MSD_MD5", "MSD_URL", "download_kaggle", "download_msd", "register_cli"]

MSD_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task06_Lung.tar"
MSD_MD5 = "8afd997733c7fc0432f71255ba4e52dc"

_DATASET_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def download_msd(
    to: str | os.PathLike[str],
    url: str = MSD_URL,
    md5: str | None = MSD_MD5,
    *,
    progress: bool = True,
) -> Path:
    """Downloads, verifies and unpacks the MSD Task06_Lung archive into ``to``.

    Nothing happens when ``to`` already holds the unpacked layout. An interrupted download is
    resumed (HTTP Range) from ``to/<archive>.part``; the archive is kept after unpacking.

    Args:
        to: The folder to download and unpack into (created when missing).
        url: Where the archive is (``.tar``, ``.tar.gz`` or ``.zip``).
        md5: The archive's expected hex md5; ``None`` skips the check.
        progress: Whether to show a progress bar.

    Returns:
        The folder holding ``imagesTr/`` and ``labelsTr/`` (e.g. ``to/Task06_Lung``).

    Raises:
        RecipeError: ``md5`` is not 32 hex digits.
        DataError: The download failed, the md5 differs, the archive is unsafe or broken, or it
            does not hold an MSD layout.
    """
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise RecipeError(f"data.md5 / --md5 must be 32 hex digits, got {md5!r}")
    to = Path(to).expanduser()
    existing = locate_msd_root(to)
    if existing is not None:
        return existing
    claim_dir(to, "download", role="download folder")
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    archive = to / (name or "Task06_Lung.tar")
    if not archive.is_file():
        Transfer(url, archive, progress).run()
    if md5 is not None:
        actual = file_md5(archive)
        if actual != md5.lower():
            archive.unlink()
            raise DataError(
                f"{archive} has md5 {actual} but {md5.lower()} was expected; the file was "
                "deleted and nothing was extracted. Run the command again to download it afresh "
                "(or pass the right --md5 / data.md5 if the archive at the URL changed)"
            )
    extract_archive(archive, to)
    root = find_msd_root(to)
    find_cases(root)
    return root


def _kaggle_credentials_found() -> bool:
    """Whether any credential the kaggle package accepts is present (values are never read)."""
    env = os.environ
    if (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) or env.get("KAGGLE_API_TOKEN"):
        return True
    home = Path.home()
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    config_dirs = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    config_dirs += [home / ".kaggle", xdg / "kaggle"]
    files = [d / "kaggle.json" for d in config_dirs]
    files += [
        home / ".kaggle" / n for n in ("access_token", "access_token.txt", "credentials.json")
    ]
    return any(f.is_file() for f in files)


def _kaggle_api() -> Any:
    """Returns an authenticated ``KaggleApi`` (tests replace this function with a fake).

    Raises:
        DataError: No credentials are configured, the kaggle package is missing, or Kaggle
            refused the credentials.
    """
    if not _kaggle_credentials_found():
        raise DataError(
            "no Kaggle credentials found: create an API token at "
            "https://www.kaggle.com/settings/api, then either set KAGGLE_USERNAME and KAGGLE_KEY "
            "(or KAGGLE_API_TOKEN) in the environment, or save the downloaded kaggle.json as "
            "~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR/kaggle.json) with `chmod 600`"
        )
    quiet = contextlib.redirect_stdout(io.StringIO())  # the package prints help on failures
    try:
        with quiet:
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise DataError("the kaggle package is missing; run `pip install kaggle`") from exc
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except (Exception, SystemExit) as exc:
        raise DataError(
            f"Kaggle refused the configured credentials ({type(exc).__name__}); check "
            "KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN or ~/.kaggle/kaggle.json"
        ) from None
    return api


def download_kaggle(dataset: str, to: str | os.PathLike[str]) -> Path:
    """Downloads a Kaggle dataset holding an MSD-style layout and unpacks it into ``to``.

    Nothing happens when ``to`` already holds the layout. The zip Kaggle delivers is kept in
    ``to`` and unpacked by :func:`extract_archive`, never by the kaggle package.

    Args:
        dataset: ``OWNER/DATASET`` as in the dataset's Kaggle URL.
        to: The folder to download and unpack into (created when missing).

    Returns:
        The folder holding ``imagesTr/`` and ``labelsTr/``, wherever it sits in the zip.

    Raises:
        RecipeError: ``dataset`` is not ``OWNER/DATASET``.
        DataError: Credentials are missing, the download failed, the zip is unsafe, or it
            holds no MSD layout.
    """
    if not isinstance(dataset, str) or not _DATASET_RE.fullmatch(dataset):
        raise RecipeError(
            f"data.dataset must be a Kaggle OWNER/DATASET such as 'someone/msd-lung', "
            f"got {dataset!r}"
        )
    to = Path(to).expanduser()
    existing = locate_msd_root(to)
    if existing is not None:
        return existing
    claim_dir(to, "download", role="download folder")
    api = _kaggle_api()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.dataset_download_files(dataset, path=str(to), unzip=False, quiet=True)
    except Exception as exc:
        raise DataError(
            f"Kaggle could not download {dataset} ({type(exc).__name__}: {exc}); check the name "
            f"at https://www.kaggle.com/datasets/{dataset} and that your account may read it"
        ) from exc
    archive = to / f"{dataset.split('/')[1]}.zip"
    if not archive.is_file():
        raise DataError(f"Kaggle reported success for {dataset} but {archive} is missing")
    extract_archive(archive, to)
    root = find_msd_root(to)
    find_cases(root)
    return root


def _handle(args: argparse.Namespace) -> int:
    """Runs ``lungseg download`` and prints the folder holding the data."""
    if args.source == "msd":
        folder = download_msd(args.to, args.url, args.md5)
    else:
        folder = download_kaggle(args.dataset, args.to)
    console.result(str(folder))
    return 0


def register_cli(subparsers: Any) -> None:
    """Adds ``lungseg download {msd,kaggle}`` to an argparse subparsers object.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers()`` returned.
    """
    parser = subparsers.add_parser(
        "download",
        help="fetch the lung data (MSD Task06_Lung, or a Kaggle copy)",
        description="Download and unpack the lung data; prints the folder holding imagesTr/.",
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="{msd,kaggle}")
    msd = sources.add_parser("msd", help="the Medical Segmentation Decathlon archive (8.5 GB)")
    msd.add_argument("--to", required=True, type=Path, metavar="DIR", help="target folder")
    msd.add_argument("--url", default=MSD_URL, help="archive URL (default: %(default)s)")
    msd.add_argument(
        "--md5",
        default=MSD_MD5,
        metavar="HEX",
        help="expected md5 of the archive (default: %(default)s)",
    )
    kaggle = sources.add_parser("kaggle", help="a Kaggle dataset holding imagesTr/ and labelsTr/")
    kaggle.add_argument("dataset", metavar="OWNER/DATASET", help="as in the dataset's Kaggle URL")
    kaggle.add_argument("--to", required=True, type=Path, metavar="DIR", help="target folder")
    parser.set_defaults(func=_handle)
