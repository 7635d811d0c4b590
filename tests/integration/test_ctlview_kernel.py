"""``lvsd ctl status`` and ``lvsd ctl events`` against the real daemon and the real kernel: one DR
lab and one daemon for the module; each test leaves every server serving.

The web service (port 80) has an HTTP check; a second service on port 8080 shares rs1 and rs2
without checks, so ``--host`` changes two services with one request.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from lvsd.cli_ctl import ControlClient
from tests.integration.conftest import DrLab, dr_lab_context
from tests.integration.control_lab import (
    ALL_SERVING,
    ALT,
    CONFIG,
    RS1,
    RS2,
    VIP,
    WEB,
    adopt_serving,
    table_weights,
)
from tests.integration.daemon_support import LVSD, LvsdProcess


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(2) as lab:
        yield lab


@pytest.fixture(scope="module")
def lvsd(lab: DrLab) -> Iterator[LvsdProcess]:
    # Adopted as serving: the servers need no first probe before they take traffic.
    adopt_serving(lab)
    process = LvsdProcess(lab.director, CONFIG)
    try:
        asyncio.run(process.start(timeout=240))
        yield process
    finally:
        process.cleanup()


# --- lvsd ctl status and lvsd ctl events -------------------------------------------------------


def ipvsadm_stats(lab: DrLab) -> list[str]:
    """``ipvsadm -Ln --stats --exact`` without its version line."""
    return lab.director.run("ipvsadm", "-Ln", "--stats", "--exact").stdout.splitlines()[1:]


def ctl_piped(lvsd: LvsdProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``lvsd ctl`` with its output a pipe and NO_COLOR unset: only the pipe keeps it plain."""
    env = {name: value for name, value in os.environ.items() if name != "NO_COLOR"}
    return subprocess.run([LVSD, "ctl", "--socket", str(lvsd.control_socket), *args],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**env, "TERM": "xterm-256color"})


def health_of(lvsd: LvsdProcess, address: str) -> str | None:
    web = next(s for s in lvsd.status()["services"] if s["name"] == "web")
    return next(s["health"] for s in web["servers"] if s["address"] == address)


async def test_ctl_status_numbers_are_ipvsadm_stats_exact_with_a_killed_server_down(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    answers = await lab.fetch(10)
    assert None not in answers, answers
    lab.stop_server("rs2")
    try:
        await lvsd.wait_for(lambda: health_of(lvsd, RS2) == "down", 60, "rs2 seen down")
        for _ in range(5):  # the kernel folds its counters in on a ~2 s timer: until it is still
            before = ipvsadm_stats(lab)
            text, document = await asyncio.gather(
                asyncio.to_thread(ctl_piped, lvsd, "status", "--exact"),
                asyncio.to_thread(ctl_piped, lvsd, "status", "--json", "web"))
            if ipvsadm_stats(lab) == before:
                break
            await asyncio.sleep(2.5)
        assert text.returncode == 0 and document.returncode == 0, (text.stderr, document.stderr)
        assert "\x1b[" not in text.stdout, "no colour when piped"
        shown = text.stdout.splitlines()[1:]  # after lvsd's summary line
        assert len(shown) == len(before), (text.stdout, before)
        for line, want in zip(shown, before, strict=True):
            assert line.startswith(want), (line, want)
        conns = {line.split()[1]: int(line.split()[2]) for line in before[2:]}
        assert conns[f"{VIP}:80"] >= 10, before
        web = shown[shown.index(next(s for s in shown if s.startswith(f"TCP  {VIP}:80 "))):]
        rs2 = next(line for line in web if line.startswith(f"  -> {RS2}:80 "))
        lvsd_columns = rs2[len(next(w for w in before if w.startswith(f"  -> {RS2}:80 "))):]
        assert lvsd_columns.split()[0] == "down", rs2
        assert lvsd_columns.split()[5:7] == ["1", "0"], "configured weight 1, kernel 0"
        server = next(s for s in json.loads(document.stdout)["services"][0]["servers"]
                      if s["address"] == RS2)
        assert (server["health"], server["kernel_weight"]) == ("down", 0), server
    finally:
        await lab.start_server("rs2")
        await lvsd.wait_for(lambda: table_weights(lab) == ALL_SERVING, 60, "rs2 back")


async def test_ctl_events_shows_100_admin_changes_in_order_with_none_missing(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    follower = subprocess.Popen([LVSD, "ctl", "--socket", str(lvsd.control_socket), "events"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None

    async def line() -> dict[str, Any]:
        assert follower.stdout is not None
        read: dict[str, Any] = json.loads(await asyncio.wait_for(
            asyncio.to_thread(follower.stdout.readline), 120))
        return read

    try:
        greeting = await line()
        assert greeting["type"] == "subscribed", greeting
        actions = ["drain" if n % 2 == 0 else "undrain" for n in range(50)]
        async with ControlClient(lvsd.control_socket) as client:
            for action in actions:  # one request each, both services: 100 admin changes
                status, answer = await client.call("POST", "/admin",
                                                   {"action": action, "host": RS1})
                assert status == 200, answer
        events = []
        while sum(e["type"] == "admin" for e in events) < 100 or \
                sum(e["type"] == "table" for e in events) < 100:
            events.append(await line())
        follower.send_signal(signal.SIGINT)
        assert follower.wait(60) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
    first = greeting["after_seq"] + 1
    assert [e["seq"] for e in events] == list(range(first, first + len(events))), "none missing"
    admin = [(e["action"], e["service"], e["server"]) for e in events if e["type"] == "admin"]
    assert admin == [(action, service, server) for action in actions
                     for service, server in ((WEB, f"{RS1}:80"), (ALT, f"{RS1}:8080"))]
    written = [(e["service"], e["weight"]) for e in events if e["type"] == "table"]
    # Each request's pass writes both services (in either order), before the next request.
    assert [set(written[i:i + 2]) for i in range(0, len(written), 2)] == [
        {(WEB, 0 if action == "drain" else 1), (ALT, 0 if action == "drain" else 1)}
        for action in actions], "each change in the order made"
    assert table_weights(lab) == ALL_SERVING
