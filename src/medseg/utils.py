"""Small helpers shared across the package: atomic writes and user-facing errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class MedsegError(Exception):
    """An error caused by user input (bad file, wrong argument); the CLI prints it on one line."""


class DataError(MedsegError, ValueError):
    """Unreadable or inconsistent data; the message names the file and the problem."""


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``).

    Elsewhere it is read by setting and restoring it, which is not thread-safe for the instant between.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(fh)`` into a temp file next to ``path``, then rename over it.

    The file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask), not
    the ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files :func:`atomic_write` leaves when its process is killed mid-write.

    A killed write never reached its rename, so the file it was replacing is intact; only call this
    when no other process writes into ``folder`` (e.g. before resuming a run).
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def json_safe(x: Any) -> Any:
    """``x`` for strict JSON (RFC 8259): NaN/Inf as ``None``, numpy scalars as Python numbers, keys as str."""
    import math

    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # numpy / torch scalar
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text; a name decoded from non-UTF-8 bytes (surrogate escapes) is written as ``\\xNN``."""
    return atomic_write(path, lambda fh: fh.write(printable(text).encode("utf-8")))


def printable(text: str) -> str:
    """``text`` with the surrogate escapes of non-UTF-8 bytes (from file names) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_output_dir(path: str | Path) -> Path:
    """Create folder ``path`` (and parents) and check a file can be written in it, else one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MedsegError(f"{path}: output folder is an existing file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".medseg-probe-"):
            pass
    except OSError as err:
        raise MedsegError(f"{path}: cannot write output folder ({err.strerror or err})") from None
    return path


def check_output_file(path: str | Path) -> Path:
    """Check file ``path`` can be written (its folder is created); one-line error if not."""
    path = Path(path)
    if path.is_dir():
        raise MedsegError(f"{path}: output file is an existing folder")
    check_output_dir(path.parent)
    return path


def atomic_save_torch(obj: object, path: str | Path) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))
