"""systemd/lvsd.service passes `systemd-analyze verify` (Debian package: systemd), and its
ExecReload= refuses a config the daemon would reject before any SIGHUP is sent."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
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
    unit.write_text(re.sub(rf"^(Exec\w+=){re.escape(INSTALLED_BINARY)} ",
                           lambda m: f"{m[1]}{local_exec_start()} ", text, flags=re.M))
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


# --- ExecReload=, run as systemd runs it ---------------------------------------------------


def directives(text: str, name: str) -> list[str]:
    """Every value of ``name=`` in the unit, in order (ExecReload= may repeat)."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{name}=")]


def command_line(value: str, main_pid: int) -> list[str]:
    """What systemd executes for one Exec line: ``$MAINPID`` expanded, then split."""
    assert value[:1] not in "-@:+!", f"prefix not handled here: {value}"
    assert "$" not in value.replace("$MAINPID", ""), f"variable not handled here: {value}"
    return [word.replace("$MAINPID", str(main_pid)) for word in shlex.split(value)]


def config_path(text: str) -> str:
    (start,) = directives(text, "ExecStart")
    words = shlex.split(start)
    return words[words.index("--config") + 1]


def reload_as_systemd(config: Path, main_pid: int) -> list[subprocess.CompletedProcess[str]]:
    """Run the unit's ExecReload= lines in order, with its config path pointed at ``config``,
    stopping at the first failure as systemd does; every command's result."""
    text = UNIT.read_text()
    installed_config = config_path(text)
    results = []
    for value in directives(text, "ExecReload"):
        argv = [str(config) if word == installed_config else word
                for word in command_line(value, main_pid)]
        if argv[0] == INSTALLED_BINARY:
            argv = [*shlex.split(local_exec_start()), *argv[1:]]
        results.append(subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                      check=False))
        if results[-1].returncode != 0:
            break
    return results


HUP_WATCHER = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *_: (print("HUP", flush=True), sys.exit(0)))
print("waiting", flush=True)
time.sleep(30)
"""


def hup_watcher() -> subprocess.Popen[str]:
    """A stand-in for the main process that prints HUP when it gets SIGHUP."""
    process = subprocess.Popen([sys.executable, "-c", HUP_WATCHER], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None and process.stdout.readline() == "waiting\n"
    return process


def got_hup(process: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    out, _ = process.communicate(timeout=10)
    return "HUP" in out


def test_reload_checks_the_config_the_daemon_runs_with() -> None:
    text = UNIT.read_text()
    assert directives(text, "ExecReload") == [
        f"{INSTALLED_BINARY} check-config {config_path(text)}", "/bin/kill -HUP $MAINPID"]


@pytest.mark.parametrize(
    "broken",
    [
        '[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80\nscheduler = "nope"\n',
        "[daemon\n",
    ],
    ids=["invalid", "not-toml"],
)
def test_reload_fails_on_a_broken_config_without_signalling(tmp_path: Path, broken: str) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text(broken)
    main = hup_watcher()
    results = reload_as_systemd(config, main.pid)
    assert results[-1].returncode != 0
    assert len(results) == 1, "the SIGHUP was sent after a failed check"
    assert str(config) in results[-1].stderr
    assert not got_hup(main)


def test_reload_signals_the_daemon_when_the_config_is_valid(tmp_path: Path) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text(
        '[daemon]\nlisten = "127.0.0.1:9163"\n'
        '[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80\nscheduler = "rr"\n'
        '[[services.real_servers]]\naddress = "198.51.100.1"\n'
    )
    main = hup_watcher()
    results = reload_as_systemd(config, main.pid)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert got_hup(main)
