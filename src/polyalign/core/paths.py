"""Output paths, checked before any work: one line up front instead of a traceback after the computation."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from polyalign.core.errors import PolyalignError


def check_output_path(path: str | Path, folder: bool = True) -> None:
    """Refuse an --out that cannot be written: a file in the way, no permission, a read-only disk.

    `folder`: the output is a folder (else a file). Nothing is created: the nearest existing folder
    on the way is probed with a temporary file that is removed at once.
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():  # mkdir would fail on it after the computation
        raise PolyalignError(f"{path}: is a symlink to {path.readlink()}, which does not exist (choose another --out)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and path.exists():
        if folder and not path.is_dir():
            raise PolyalignError(f"{path}: is a file, not a folder (choose another --out)")
        if not folder and path.is_dir():
            raise PolyalignError(f"{path}: is a folder, not a file (choose another --out)")
        probe = path if path.is_dir() else path.parent
    else:
        if not existing.is_dir():
            raise PolyalignError(f"{path}: cannot be created: {existing} is a file, not a folder")
        probe = existing
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise PolyalignError(f"{path}: cannot write in {probe}: {exc.strerror or exc}") from None


def check_replaceable(path: str | Path, overwrite: bool) -> None:
    """--overwrite replaces a folder, never what a symlink points to (removing a link's target
    failed with a traceback, or would delete another folder's contents)."""
    path = Path(path).expanduser()
    if overwrite and path.is_symlink():
        raise PolyalignError(
            f"{path}: is a symlink to {path.readlink()}; --overwrite does not replace through a link "
            "(give the folder itself or another --out)"
        )


def slug(text: str) -> str:
    """`text` as a file-name part: runs of anything but ASCII letters, digits, '_', '.' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"
