"""Atomic, non-clobbering output: write to a temporary file beside the target, then rename.

A failure part-way (an exception, a kill) leaves either the old file or nothing, never a half-written
result, and an existing output is only replaced when the caller asked for it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import tempfile
from collections.abc import Iterator

from ..errors import OutputExistsError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Return ``path`` as a Path if a file can be written there; commands call it before any work.

    Raises:
        IsADirectoryError: ``path`` is a directory (never replaced, ``overwrite`` or not).
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        NotADirectoryError: a file stands where a folder above ``path`` should be.
        PermissionError: the nearest existing folder above ``path`` is not writable by this user.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "the output is a directory; name a file inside it", str(p))
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    folder = p.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_path creates the missing folders below this one
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file stands where the output's folder should be",
                                 str(folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "the output folder is not writable", str(folder))
    return p


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None
) -> Iterator[pathlib.Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    ``suffix`` defaults to the target's full suffix (``.nii.gz``, ``.npz``) so writers that infer the
    format from the name keep working.
    """
    target = check_writable(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    # mkstemp creates the file owner-only; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if not overwrite and target.exists():
            raise OutputExistsError(f"{target} appeared while writing; refusing to replace it")
        # again: some writers (safetensors) replace the file they are given with a new owner-only one
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> pathlib.Path:
    """Write a text file atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return pathlib.Path(path)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, overwrite: bool = False, replaceable_suffix: str = ""
) -> Iterator[pathlib.Path]:
    """Yield a fresh temporary folder beside ``path``; on success it takes ``path``'s place.

    For outputs made of many files (a DICOM series): a failure part-way leaves the old folder (or
    nothing), never a half-written series. ``path`` may be absent or an empty folder. A non-empty folder
    is replaced only when ``overwrite`` is True *and* every entry in it is a plain file whose name ends in
    ``replaceable_suffix`` (e.g. ``.dcm``), so an overwrite never deletes unrelated files or sub-folders.

    Raises:
        NotADirectoryError: ``path`` is a file.
        OutputExistsError: ``path`` is a non-empty folder and ``overwrite`` is False, or it holds
            entries that are not replaceable.
    """
    import shutil

    target = pathlib.Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the output must be a folder, not a file", str(target))
    existing = sorted(target.iterdir()) if target.is_dir() else []
    if existing and not overwrite:
        raise OutputExistsError(f"{target} is a non-empty folder; pass overwrite=True (CLI: --overwrite) "
                                "to replace it")
    foreign = [p.name for p in existing
               if not (p.is_file() and not p.is_symlink() and p.name.endswith(replaceable_suffix))]
    if existing and (foreign or not replaceable_suffix):
        raise OutputExistsError(f"{target} holds entries this writer did not make ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); name an empty or new folder")
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder owner-only
        if not target.exists():
            os.replace(tmp, target)
            return
        if any(target.iterdir()) and not overwrite:
            raise OutputExistsError(f"{target} was filled while writing; refusing to replace it")
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
        os.rmdir(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)  # put the previous series back
            raise
        shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
