"""Stream probes on bare non-blocking sockets, driven by event-loop callbacks.

A probe here is a small object, not a task: one socket (SO_LINGER set once, at creation,
so that closing it resets the connection and leaves no TIME_WAIT), one ``connect``, the
request sent as soon as the connection is open (at once on a fast network: the kernel
completes a loopback handshake inside ``connect``), then reads until the ``Exchange``
has its answer. No coroutine, future, transport or timer per probe: the runner enforces
the timeout. This halves the CPU of a plain HTTP probe against an asyncio transport.

The sockets are watched by one epoll set per event loop (``_Poller``), itself one reader of
the loop, not by a loop reader per socket: uvloop's ``add_reader``/``remove_reader`` cost six
``epoll_ctl``, an ``ioctl`` and a ``getpid`` per probe (strace) where one ``epoll_ctl`` does,
since closing a socket takes it out of the set.

``Exchange`` is the protocol logic (what to send, what the bytes received mean); the same
logic can sit behind an asyncio transport where one is needed (TLS).
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
import time
import weakref
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


class _Poller:
    """One epoll set for every socket probe of one event loop; the loop watches only the set.

    Level-triggered: a probe that does not consume an event sees it again. The set is a loop
    reader only while a probe is in it, so an idle or closed loop holds nothing.
    """

    __slots__ = ("__weakref__", "_epoll", "_loop", "_probes", "_turn", "_watched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry's value must not keep its key alive
        self._epoll = select.epoll()
        self._probes: dict[int, SocketProbe] = {}
        self._watched = False
        self._turn = 0  # dispatches so far: a probe added during one skips that batch's events

    def add(self, probe: SocketProbe, fd: int, events: int) -> None:
        self._epoll.register(fd, events)
        self._probes[fd] = probe
        probe._turn = self._turn
        if not self._watched:
            loop = self._loop()
            assert loop is not None  # a probe is being added from it
            self._watched = True
            loop.add_reader(self._epoll.fileno(), self._dispatch)

    def change(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def forget(self, fd: int) -> None:
        """Before the socket closes (which takes it out of the set)."""
        del self._probes[fd]
        if not self._probes and self._watched:
            self._watched = False
            loop = self._loop()
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self._epoll.fileno())

    def _dispatch(self) -> None:
        turn = self._turn
        self._turn = turn + 1
        probes = self._probes
        for fd, events in self._epoll.poll(0, 512):
            probe = probes.get(fd)
            # an fd closed earlier in this batch and reused by a new probe: not its event
            if probe is not None and probe._turn != turn + 1:
                probe._event(events)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = (
    weakref.WeakKeyDictionary())


class _LastPoller:
    """The poller last asked for, and its loop: a lookup per probe without the registry's."""

    loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
    poller: _Poller | None = None


def _poller(loop: asyncio.AbstractEventLoop) -> _Poller:
    last = _LastPoller
    if last.loop is not None and last.loop() is loop and last.poller is not None:
        return last.poller
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = _Poller(loop)
    last.loop, last.poller = weakref.ref(loop), poller
    return poller


_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT


class SocketProbe:
    """One probe in flight; ``done`` gets its result unless ``cancel()`` came first.

    ``done`` is never called from inside the constructor: a probe that fails at once
    (refused on loopback, no route) reports on the next loop iteration.
    """

    __slots__ = ("_done", "_exchange", "_fd", "_loop", "_pending", "_poller", "_sock", "_start",
                 "_turn", "_watching", "stage")

    def __init__(self, target: ProbeTarget, exchange: Exchange,
                 done: Callable[[ProbeResult], None]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._poller = _poller(loop)
        self._start = time.monotonic()  # uvloop's loop.time() counts whole milliseconds
        self._done: Callable[[ProbeResult], None] | None = done
        self._exchange = exchange
        self._pending = b""
        self.stage = "connect"
        self._sock: socket.socket | None = None
        self._fd = -1
        self._watching = 0  # the epoll events asked for; 0 while not in the set
        self._turn = 0
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
            self._watch(_WRITE)  # nothing to send: wait for the open
            return
        try:
            sent = sock.send(exchange.request)
        except (BlockingIOError, InterruptedError):  # still connecting (a real network)
            self._watch(_WRITE)
            return
        except OSError as exc:
            loop.call_soon(self._fail, exc)
            return
        self._opened(exchange.request[sent:])

    def cancel(self) -> None:
        """Release the socket without reporting (the runner's timeout, or a removed check)."""
        self._done = None
        self._close()

    # --- the poller's events --------------------------------------------------------------

    def _event(self, events: int) -> None:
        if self._sock is None:
            return
        if self.stage == "connect":
            self._on_connect()
        elif self._pending and events & (_WRITE | select.EPOLLERR | select.EPOLLHUP):
            self._on_writable()
        elif events & ~_WRITE:
            self._on_readable()

    def _on_connect(self) -> None:
        sock = self._sock
        assert sock is not None
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
        self._pending = unsent
        self._watch(_READ | _WRITE if unsent else _READ)

    def _on_writable(self) -> None:
        assert self._sock is not None
        pending, self._pending = self._pending, b""
        try:
            sent = self._sock.send(pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self._pending = pending[sent:]
        if not self._pending:
            self._watch(_READ)

    def _on_readable(self) -> None:
        sock = self._sock
        assert sock is not None
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

    def _watch(self, events: int) -> None:
        if self._watching == events:
            return
        if self._watching:
            self._poller.change(self._fd, events)
        else:
            self._poller.add(self, self._fd, events)
        self._watching = events

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._watching:
                self._watching = 0
                self._poller.forget(self._fd)
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
