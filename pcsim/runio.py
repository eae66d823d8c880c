"""Atomic file writes: write to a temporary name in the same folder, then rename, so a
crash never leaves a truncated file where a good one was (SPEC section 5)."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WriteError", "atomic_path", "write_text", "write_json", "finite_number"]


def finite_number(value) -> bool:
    """Whether a value read back from a run file is a finite int or float (a bool is
    not a number here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class WriteError(RuntimeError):
    """A run file could not be written (disk full, folder gone, no permission); the
    message names the file and says that the previous version is kept."""


def _why(exc: BaseException, folder: Path) -> str:
    """The reason of a failed write in words. torch.save reports a full disk as a
    RuntimeError of its zip writer ("unexpected pos ..."), so the free space is asked."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the device"
    try:
        full = os.statvfs(folder).f_bavail == 0
    except OSError:
        full = False
    if full:
        return "no space left on the device"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {str(exc)[:160]}"


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that choose a format by suffix
    (matplotlib's ``savefig``) behave.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as exc:
        raise WriteError(f"{path}: cannot be written ({_why(exc, path.parent)}); the previous "
                         "version, if any, is kept") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run folder is for sharing
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, WriteError) or (isinstance(exc, RuntimeError)
                                           and not _is_write_failure(exc)):
            raise
        raise WriteError(f"{path}: cannot be written ({_why(exc, path.parent)}); the "
                         "previous version, if any, is kept") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_write_failure(exc: RuntimeError) -> bool:
    """A RuntimeError that is torch's report of a failed file write (its zip writer)."""
    text = str(exc)
    return "inline_container" in text or "unexpected pos" in text or "PytorchStreamWriter" in text


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    """Atomically write ``data`` as indented JSON (non-finite floats as null would hide NaN,
    so they are refused, naming the file)."""
    try:
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not written: {exc}") from None
    write_text(path, text + "\n")
