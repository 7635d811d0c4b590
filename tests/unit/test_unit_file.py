"""systemd/lvsd.service passes `systemd-analyze verify` (Debian package: systemd)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "lvsd.service"
INSTALLED_BINARY = "/usr/local/bin/lvsd"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install -y systemd")
    return path


def local_exec_start() -> str:
    """What ExecStart= runs here: verify insists that the binary exists."""
    script = Path(sys.executable).with_name("lvsd")
    if script.exists():
        return str(script)
    return f"{sys.executable} -m lvsd"


def unit_for_verify(tmp_path: Path, text: str) -> Path:
    assert f"ExecStart={INSTALLED_BINARY} " in text
    unit = tmp_path / "lvsd.service"
    unit.write_text(
        text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={local_exec_start()} ")
    )
    return unit


def verify_findings(unit: Path) -> list[str]:
    """Everything verify says about the unit: errors (non-zero exit) and ignored lines."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and unparsable values are only warnings ("…, ignoring.") with exit 0.
    findings = [line for line in result.stderr.splitlines() if unit.name in line]
    if result.returncode != 0:
        findings.append(f"exit {result.returncode}: {result.stderr.strip()}")
    return findings


def test_the_unit_file_verifies_cleanly(tmp_path: Path) -> None:
    unit = unit_for_verify(tmp_path, UNIT.read_text())
    assert verify_findings(unit) == []


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("[Service]\nWatchdogSecs=30s\n", "Unknown key"),
        ("[Service]\nRestart=sometimes\n", "restart"),
        ("[Service]\nRestrictAddressFamilies=AF_NOPE\n", "AF_NOPE"),
        ("[Service\n", "Invalid section header"),
    ],
)
def test_verify_catches_mistakes_in_the_unit(tmp_path: Path, mistake: str, expected: str) -> None:
    unit = unit_for_verify(tmp_path, UNIT.read_text() + mistake)
    findings = verify_findings(unit)
    assert any(expected.lower() in line.lower() for line in findings), findings


def test_exposure_level_is_reported(tmp_path: Path) -> None:
    unit = unit_for_verify(tmp_path, UNIT.read_text())
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    # Printed for the reader (pytest -s); what counts is the directives above, not a score.
    print(*overall or [result.stdout[-500:], result.stderr[-500:]], sep="\n")
    assert result.returncode == 0, result.stderr
