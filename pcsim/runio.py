"""Atomic file writes: write to a temporary name in the same folder, then rename, so a
crash never leaves a truncated file where a good one was (SPEC section 5)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_json"]


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that choose a format by suffix
    (matplotlib's ``savefig``) behave.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run folder is for sharing
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
