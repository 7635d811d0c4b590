"""Replacing a file whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lvsd.files import write_atomic

# --- write_atomic --------------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_whole_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    write_atomic(target, "-A -t 192.0.2.1:80 -s rr\n")
    assert target.read_text() == "-A -t 192.0.2.1:80 -s rr\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, "")
    assert target.read_text() == ""
    assert os.listdir(tmp_path) == ["ipvs.save"]


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    target.write_text("old\n")
    target.chmod(0o600)
    write_atomic(target, "new\n")
    assert (target.read_text(), stat.S_IMODE(target.stat().st_mode)) == ("new\n", 0o600)


def test_write_atomic_failure_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "-A \udcff\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["ipvs.save"]
