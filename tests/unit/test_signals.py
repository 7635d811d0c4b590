"""Signals at a bad moment: before the event loop handles them, while lvsd starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsd.signals import EarlySignals

CONFIG = """
[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{port}"
[[services]]
address = "192.0.2.1"
port = 80
[[services.real_servers]]
address = "198.51.100.1"
"""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_reload(self) -> None:
        self.calls.append("reload")

    def request_stop(self) -> None:
        self.calls.append("stop")


def test_early_signals_are_remembered_in_order_and_replayed_once() -> None:
    before = {s: signal.getsignal(s) for s in EarlySignals.SIGNALS}
    early = EarlySignals()
    try:
        early.install()
        for signum in (signal.SIGHUP, signal.SIGHUP, signal.SIGTERM):
            os.kill(os.getpid(), signum)
    finally:
        early.restore()
    assert {s: signal.getsignal(s) for s in EarlySignals.SIGNALS} == before
    daemon = Recorder()
    early.replay(daemon)
    early.replay(daemon)
    assert daemon.calls == ["reload", "reload", "stop"]


def start_lvsd(tmp_path: Path) -> subprocess.Popen[str]:
    config = tmp_path / "lvsd.toml"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(CONFIG.format(state=tmp_path / "state", port=port))
    return subprocess.Popen([sys.executable, "-m", "lvsd", "run", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_lvsds_handlers(process: subprocess.Popen[str]) -> None:
    """Until /proc says the process catches SIGHUP, which only lvsd's handlers do (the
    interpreter catches SIGINT from its first instant): from then on a signal reaches lvsd's
    own code; sent earlier, it would test the interpreter, not lvsd."""
    signum = signal.SIGHUP
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines()
                          if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.002)
    pytest.fail("lvsd never installed its signal handlers")


def test_sighup_during_start_up_does_not_kill_lvsd(tmp_path: Path) -> None:
    process = start_lvsd(tmp_path)
    wait_for_lvsds_handlers(process)
    # Ten reloads asked for within 50 ms, while lvsd imports (that alone takes longer). Not
    # until it exits: at the very end the interpreter restores the default handlers.
    for _ in range(10):
        process.send_signal(signal.SIGHUP)
        time.sleep(0.005)
    output, _ = process.communicate(timeout=60)
    # This host has no IPVS: lvsd got as far as asking the kernel, and says so.
    assert process.returncode == 3, output
    assert "Traceback" not in output and "start_failed" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_start_up_ends_lvsd_cleanly_before_the_kernel(
        tmp_path: Path, signum: int) -> None:
    process = start_lvsd(tmp_path)
    wait_for_lvsds_handlers(process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "the kernel was not touched" in output
