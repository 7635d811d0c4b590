"""Socket probes share one epoll set per event loop (``lvsd.checks.sockets``): a request
that does not fit the socket buffer is still sent whole, an fd reused within one batch of
events never gets the closed socket's event, and a loop that ran probes is not kept alive.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import select
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop

from lvsd.checks import sockets
from lvsd.checks.sockets import SocketProbe, Verdict
from lvsd.checks.target import ProbeTarget
from lvsd.probe import ProbeResult

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
BIG = 4 * 1024 * 1024


class _EchoLength:
    """Sends ``request``; the answer is the peer's line "got N"."""

    stage = "reply"

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""

    def connected(self) -> Verdict | None:
        return None

    def received(self, data: bytes) -> Verdict | None:
        self.data += data
        return (True, self.data.decode().strip()) if self.data.endswith(b"\n") else None

    def closed(self, error: OSError | None) -> Verdict:
        return False, f"closed: {error}"


@pytest.fixture
def counting_server() -> Iterator[int]:
    """Reads BIG bytes per connection, then answers "got N"."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                got = 0
                while got < BIG:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                conn.sendall(f"got {got}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_a_request_larger_than_the_socket_buffer_is_sent_whole(
        kind: str, counting_server: int) -> None:
    loop = LOOPS[kind]()
    try:
        target = ProbeTarget(ipaddress.ip_address("127.0.0.1"), counting_server)
        exchange = _EchoLength(b"x" * BIG)
        result = loop.run_until_complete(sockets.run_to_end(
            lambda done: SocketProbe(target, exchange, done)))
    finally:
        loop.close()
    assert result.ok, result
    assert result.reason == f"got {BIG}"


@pytest.mark.parametrize("kind", LOOPS)
def test_a_loop_that_ran_probes_is_freed_once_dropped(kind: str) -> None:
    async def refused_probes(port: int) -> list[ProbeResult]:
        target = ProbeTarget(ipaddress.ip_address("127.0.0.1"), port)
        return list(await asyncio.gather(*(sockets.run_to_end(
            lambda done: SocketProbe(target, _EchoLength(b"hello"), done)) for _ in range(20))))

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: every probe is refused
    loop = LOOPS[kind]()
    results = loop.run_until_complete(refused_probes(port))
    assert [result.ok for result in results] == [False] * 20
    loop.close()
    dropped = weakref.ref(loop)
    del loop
    gc.collect()
    assert dropped() is None


class _Recording:
    """Stands in for a probe in the poller: records the events it got, and may act on one."""

    def __init__(self, name: str, log: list[str], act: Callable[[], None] | None = None) -> None:
        self.name = name
        self.log = log
        self.act = act
        self._turn = 0

    def _event(self, events: int) -> None:
        self.log.append(self.name)
        if self.act is not None:
            act, self.act = self.act, None
            act()


async def test_an_fd_closed_and_reused_within_one_batch_does_not_get_the_old_event() -> None:
    poller = sockets._poller(asyncio.get_running_loop())
    log: list[str] = []
    pairs = [socket.socketpair() for _ in range(2)]
    kept: list[Any] = []

    def replace(index: int) -> Callable[[], None]:
        """Close the other pair's socket (its event is in the batch) and open one that takes
        its fd number."""
        def act() -> None:
            other = pairs[1 - index][0]
            fd = other.fileno()
            poller.forget(fd)
            other.close()
            fresh, peer = socket.socketpair()
            kept.extend((fresh, peer))
            assert fresh.fileno() == fd, "the kernel gave the new socket another fd"
            poller.add(_Recording("new", log), fresh.fileno(), select.EPOLLIN)  # type: ignore[arg-type]
            peer.send(b"!")  # readable at once: only the turn keeps the old event from it
        return act

    for index, (mine, peer) in enumerate(pairs):
        poller.add(_Recording(f"old{index}", log, replace(index)),  # type: ignore[arg-type]
                   mine.fileno(), select.EPOLLIN)
        peer.send(b"x")
    poller._dispatch()
    assert len(log) == 1 and log[0].startswith("old"), log
    poller._dispatch()  # the next batch: the new socket's own event
    assert log[1:] == ["new", log[0]] or log[1:] == [log[0], "new"], log
    for fd in list(poller._probes):
        poller.forget(fd)
    for sock in [*(s for pair in pairs for s in pair), *kept]:
        sock.close()
