"""sd_notify against a real unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsd.systemd import Notifier, feed_watchdog, start_watchdog, watchdog_interval


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, as PID 1 opens it (SO_PASSCRED on)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)

    def receive(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        finally:
            self.sock.setblocking(False)

    def receive_with_sender_pid(self) -> tuple[str, int]:
        self.sock.settimeout(2.0)
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        self.sock.setblocking(False)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
                return data.decode(), pid
        raise AssertionError("no SCM_CREDENTIALS on the datagram")

    def drain(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@lvsd-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(address)
    yield fake
    fake.close()


@pytest.fixture
def notifier(systemd: FakeSystemd) -> Iterator[Notifier]:
    n = Notifier.from_environment({"NOTIFY_SOCKET": systemd.address})
    yield n
    n.close()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[FakeSystemd, Notifier]]:
    """One socket kind is enough for the timing tests."""
    fake = FakeSystemd(str(tmp_path / "notify"))
    n = Notifier.from_environment({"NOTIFY_SOCKET": fake.address})
    yield fake, n
    n.close()
    fake.close()


def test_ready_with_status_is_one_datagram(systemd: FakeSystemd, notifier: Notifier) -> None:
    assert notifier.enabled
    assert notifier.ready("3 services, 12 servers up")
    assert systemd.receive() == "READY=1\nSTATUS=3 services, 12 servers up"
    assert systemd.drain() == []


def test_plain_ready_stopping_and_watchdog(systemd: FakeSystemd, notifier: Notifier) -> None:
    assert notifier.ready()
    assert notifier.watchdog()
    assert notifier.stopping("shutting down")
    assert [systemd.receive() for _ in range(3)] == [
        "READY=1",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=shutting down",
    ]


def test_reloading_carries_the_monotonic_clock(systemd: FakeSystemd, notifier: Notifier) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading /etc/lvsd/lvsd.toml")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = systemd.receive().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert lines[2] == "STATUS=reloading /etc/lvsd/lvsd.toml"


def test_status_cannot_smuggle_a_second_assignment(
    systemd: FakeSystemd, notifier: Notifier
) -> None:
    assert notifier.status("config rejected\nREADY=1")
    assert systemd.receive() == "STATUS=config rejected READY=1"


def test_messages_carry_our_pid_for_notify_access_main(
    systemd: FakeSystemd, notifier: Notifier
) -> None:
    notifier.ready()
    message, pid = systemd.receive_with_sender_pid()
    assert (message, pid) == ("READY=1", os.getpid())


def test_from_environment_hides_the_socket_from_children(systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "30000000"}
    Notifier.from_environment(env).close()
    assert "NOTIFY_SOCKET" not in env
    assert env["WATCHDOG_USEC"] == "30000000"

    kept = {"NOTIFY_SOCKET": systemd.address}
    Notifier.from_environment(kept, unset=False).close()
    assert kept == {"NOTIFY_SOCKET": systemd.address}


@pytest.mark.parametrize("value", [None, "", "relative/path", "vsock:2:1234", "@"])
def test_without_a_usable_socket_every_call_is_a_quiet_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = Notifier.from_environment(env)
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert not notifier.status("x")
    assert not notifier.watchdog()


def test_a_vanished_systemd_does_not_raise(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    fake = FakeSystemd(address)
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    fake.close()
    os.unlink(address)
    assert not notifier.watchdog()
    notifier.close()


def test_watchdog_interval_reads_usec_for_our_pid_only() -> None:
    me = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me)}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000"}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}, pid=7) == 1.0


async def test_start_watchdog_needs_both_a_timeout_and_a_socket(
    systemd: FakeSystemd, notifier: Notifier
) -> None:
    assert start_watchdog(notifier, {}) is None
    assert start_watchdog(Notifier(None), {"WATCHDOG_USEC": "200000"}) is None


async def test_watchdog_pings_at_half_the_timeout(watched: tuple[FakeSystemd, Notifier]) -> None:
    systemd, notifier = watched
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    max_lag = 0.0

    def on_datagram() -> None:
        for message in systemd.drain():
            assert message == "WATCHDOG=1"
            arrivals.append(loop.time())

    async def measure_lag() -> None:
        """How late this loop's own wake-ups run (a busy machine delays pings as much)."""
        nonlocal max_lag
        while True:
            expected = loop.time() + 0.005
            await asyncio.sleep(0.005)
            max_lag = max(max_lag, loop.time() - expected)

    loop.add_reader(systemd.sock.fileno(), on_datagram)
    sampler = asyncio.create_task(measure_lag())
    task = start_watchdog(notifier, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert task is not None
    try:
        deadline = loop.time() + 10
        while len(arrivals) < 7:
            assert loop.time() < deadline, f"the watchdog stopped pinging: {arrivals}"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        sampler.cancel()
        loop.remove_reader(systemd.sock.fileno())
    # Every 0.1 s: never faster, and slower only by how late the loop itself ran.
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    assert 0.08 <= gaps[len(gaps) // 2] <= 0.15 + max_lag, (gaps, max_lag)


async def test_a_blocked_event_loop_stops_the_pings(watched: tuple[FakeSystemd, Notifier]) -> None:
    systemd, notifier = watched
    task = start_watchdog(notifier, {"WATCHDOG_USEC": "100000"})
    assert task is not None
    try:
        await asyncio.sleep(0.2)
        assert systemd.drain(), "the watchdog should ping while the loop runs"
        time.sleep(0.5)  # freezes the loop for ten ping periods: that is the test
        assert systemd.drain() == []
        await asyncio.sleep(0.2)
        assert systemd.drain(), "pings resume once the loop runs again"
    finally:
        task.cancel()


async def test_a_stalled_daemon_can_withhold_the_ping(
    watched: tuple[FakeSystemd, Notifier],
) -> None:
    systemd, notifier = watched
    healthy = True
    task = asyncio.create_task(feed_watchdog(notifier, 0.1, alive=lambda: healthy))
    try:
        await asyncio.sleep(0.12)
        assert systemd.drain()
        healthy = False
        await asyncio.sleep(0.3)
        assert systemd.drain() == []
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
