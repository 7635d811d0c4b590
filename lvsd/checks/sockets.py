"""Stream probes on bare non-blocking sockets, driven by event-loop callbacks.

A probe here is a small object, not a task: one socket (SO_LINGER set once, at creation,
so that closing it resets the connection and leaves no TIME_WAIT), one ``connect``, the
request sent as soon as the connection is open (at once on a fast network: the kernel
completes a loopback handshake inside ``connect``), then reads until the ``Exchange``
has its answer. No coroutine, future, transport or timer per probe: the runner enforces
the timeout. This halves the CPU of a plain HTTP probe against an asyncio transport.

``Exchange`` is the protocol logic (what to send, what the bytes received mean); the same
logic can sit behind an asyncio transport where one is needed (TLS).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol

from lvsd.checks.base import os_error_reason
from lvsd.checks.target import ProbeTarget
from lvsd.probe import ProbeResult

_LINGER_RESET = struct.pack("ii", 1, 0)
_READ_SIZE = 65536
_CONNECTING = (0, errno.EINPROGRESS, errno.EAGAIN)

Verdict = tuple[bool, str]


class Exchange(Protocol):
    """One probe's conversation: ``request`` is sent once the connection is open."""

    request: bytes
    stage: str  # what the probe waits for once connected: "response", "reply", …

    def connected(self) -> Verdict | None:
        """The answer at connect time (connect-only checks), or None to wait for data."""

    def received(self, data: bytes) -> Verdict | None:
        """Bytes arrived: the answer, or None while more are needed."""

    def closed(self, error: OSError | None) -> Verdict:
        """The peer closed (``error`` None) or the connection failed before an answer."""


def _new_socket(target: ProbeTarget) -> socket.socket:
    family = socket.AF_INET if target.address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        if target.mark or target.source is not None:
            from lvsd.checks.drpath import prepare_socket

            prepare_socket(sock, target, stream=True)
    except BaseException:
        sock.close()
        raise
    return sock


class SocketProbe:
    """One probe in flight; ``done`` gets its result unless ``cancel()`` came first.

    ``done`` is never called from inside the constructor: a probe that fails at once
    (refused on loopback, no route) reports on the next loop iteration.
    """

    __slots__ = ("_done", "_exchange", "_fd", "_loop", "_pending", "_reading", "_sock", "_start",
                 "_writing", "stage")

    def __init__(self, target: ProbeTarget, exchange: Exchange,
                 done: Callable[[ProbeResult], None]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._start = time.monotonic()  # uvloop's loop.time() counts whole milliseconds
        self._done: Callable[[ProbeResult], None] | None = done
        self._exchange = exchange
        self._pending = b""
        self.stage = "connect"
        self._sock: socket.socket | None = None
        self._fd = -1
        self._reading = self._writing = False  # registered with the loop
        try:
            sock = self._sock = _new_socket(target)
            self._fd = sock.fileno()
            code = sock.connect_ex((target.host, target.port))
        except OSError as exc:
            loop.call_soon(self._fail, exc)
            return
        if code not in _CONNECTING:
            loop.call_soon(self._fail, OSError(code, ""))
            return
        if not exchange.request:
            self._watch_write(self._on_connect)  # nothing to send: wait for the open
            return
        try:
            sent = sock.send(exchange.request)
        except (BlockingIOError, InterruptedError):  # still connecting (a real network)
            self._watch_write(self._on_connect)
            return
        except OSError as exc:
            loop.call_soon(self._fail, exc)
            return
        self._opened(exchange.request[sent:])

    def cancel(self) -> None:
        """Release the socket without reporting (the runner's timeout, or a removed check)."""
        self._done = None
        self._close()

    # --- event-loop callbacks ------------------------------------------------------------

    def _on_connect(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._unwatch_write()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(OSError(code, ""))
            return
        self._send(self._exchange.request)

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(data) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self._opened(data[sent:])

    def _opened(self, unsent: bytes) -> None:
        if self.stage == "connect":
            self.stage = self._exchange.stage
            verdict = self._exchange.connected()
            if verdict is not None:
                self._finish(verdict)
                return
        if unsent:
            self._pending = unsent
            self._watch_write(self._on_writable)
        self._reading = True
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_writable(self) -> None:
        if self._sock is None:
            return
        pending, self._pending = self._pending, b""
        self._unwatch_write()
        try:
            sent = self._sock.send(pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        if sent < len(pending):
            self._pending = pending[sent:]
            self._watch_write(self._on_writable)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        verdict = self._exchange.received(data) if data else self._exchange.closed(None)
        if verdict is not None:
            self._finish(verdict)

    def _fail(self, exc: OSError) -> None:
        if self.stage == "connect":
            self._finish((False, os_error_reason(exc)))
        else:
            self._finish(self._exchange.closed(exc))

    def _finish(self, verdict: Verdict) -> None:
        self._close()
        done, self._done = self._done, None
        if done is not None:
            done(ProbeResult(verdict[0], verdict[1], time.monotonic() - self._start))

    def _watch_write(self, callback: Callable[[], None]) -> None:
        self._writing = True
        self._loop.add_writer(self._fd, callback)

    def _unwatch_write(self) -> None:
        self._writing = False
        self._loop.remove_writer(self._fd)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._reading:
                self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
            sock.close()


async def run_to_end(start: Callable[[Callable[[ProbeResult], None]], SocketProbe]
                     ) -> ProbeResult:
    """One socket probe as a coroutine (``Prober.probe``); cancelling it cancels the probe
    and names the step it was in (``set_stage``) for the caller's timeout message."""
    from lvsd.checks.base import set_stage

    future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()

    def done(result: ProbeResult) -> None:
        if not future.done():
            future.set_result(result)

    probe = start(done)
    try:
        return await future
    except asyncio.CancelledError:
        set_stage(probe.stage)
        probe.cancel()
        raise
