"""systemd/lvsd.service passes `systemd-analyze verify` (Debian package: systemd), and its
ExecReload= (``lvsd ctl reload``) fails, printing the problems, when the daemon rejects the
new config."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.checks.manual import ManualRunner
from lvsd.config import DEFAULT_CONTROL_SOCKET, load
from lvsd.control import create_control_app, start_control
from lvsd.daemon import Daemon
from lvsd.ipvs.fake import FakeIpvs

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


def socket_path(text: str) -> str:
    (reload,) = directives(text, "ExecReload")
    words = shlex.split(reload)
    return words[words.index("--socket") + 1]


async def reload_as_systemd(config: Path, tmp_path: Path) -> tuple[int, str, str, Daemon]:
    """A daemon (in-memory kernel) serving its control socket under ``tmp_path``, and the
    unit's ExecReload= run against it as systemd runs it: (exit code, stdout, stderr, the
    daemon after it). ``config`` is replaced by then with what the test wrote to
    ``config.with_suffix(".next")``."""
    text = UNIT.read_text()
    control = tmp_path / "lvsd.sock"
    daemon = Daemon(load(config), FakeIpvs(), config_path=config, runner=ManualRunner)
    await daemon.start()
    server = await start_control(create_control_app(daemon.steering), control, None)
    config.write_bytes(config.with_suffix(".next").read_bytes())
    try:
        (value,) = directives(text, "ExecReload")
        argv = [str(control) if word == socket_path(text) else word
                for word in command_line(value, os.getpid())]
        assert argv[0] == INSTALLED_BINARY
        argv = [*shlex.split(local_exec_start()), *argv[1:]]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await server.close()
        await daemon.stop()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), daemon


def test_reload_asks_the_daemon_on_its_default_control_socket() -> None:
    text = UNIT.read_text()
    assert directives(text, "ExecReload") == [
        f"{INSTALLED_BINARY} ctl --socket {DEFAULT_CONTROL_SOCKET} reload"]
    assert socket_path(text) == str(DEFAULT_CONTROL_SOCKET)
    assert "RuntimeDirectory=lvsd" in text.splitlines()
    assert DEFAULT_CONTROL_SOCKET.parent == Path("/run/lvsd")


VALID = ('[daemon]\nstate_dir = "{state}"\n'
         '[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80\nscheduler = "rr"\n'
         '[[services.real_servers]]\naddress = "198.51.100.1"\n')


@pytest.mark.parametrize(
    "broken",
    [
        '[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80\nscheduler = "nope"\n',
        "[daemon\n",
    ],
    ids=["invalid", "not-toml"],
)
async def test_reload_fails_on_a_broken_config_and_prints_the_problem(
        tmp_path: Path, broken: str) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text(VALID.format(state=tmp_path / "state"))
    config.with_suffix(".next").write_text(broken)
    code, _, err, daemon = await reload_as_systemd(config, tmp_path)
    assert code == 2, err
    assert "reload rejected, the old config runs on" in err
    assert ("scheduler" in err) if "nope" in broken else ("TOML" in err or "toml" in err), err
    assert [spec.name for spec in daemon.config.services] == ["web"]
    assert daemon.config.services[0].service.scheduler == "rr"


async def test_reload_applies_a_valid_config_and_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text(VALID.format(state=tmp_path / "state"))
    config.with_suffix(".next").write_text(
        VALID.format(state=tmp_path / "state").replace('"rr"', '"wrr"'))
    code, out, err, daemon = await reload_as_systemd(config, tmp_path)
    assert code == 0, err
    assert "reloaded" in out
    assert daemon.config.services[0].service.scheduler == "wrr"
