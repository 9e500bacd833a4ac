"""utils: atomic writes respect the umask; output folder checks give one-line errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medseg.utils import MedsegError, atomic_write_text, check_output_dir, current_umask, printable


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_respects_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        p = atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert not list(tmp_path.glob(".*.tmp"))


def test_printable_shows_non_utf8_bytes_of_file_names() -> None:
    name = os.fsdecode(b"ct_\xff01")
    assert printable(name) == "ct_\\xff01" and printable("plain é") == "plain é"


def test_check_output_dir_errors_name_the_path(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("keep")
    for bad in (f, f / "sub"):
        with pytest.raises(MedsegError, match=str(bad)):
            check_output_dir(bad)
    assert f.read_text() == "keep"
    assert check_output_dir(tmp_path / "a" / "b").is_dir()
