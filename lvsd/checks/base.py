"""The checker contract: a check is a frozen spec; its prober answers one question.

A spec (``HttpCheck``, ``TcpCheck``, …) is a frozen pydantic model, hashable, with a ``type``
discriminator and the scheduling fields every check shares. ``spec.prober()`` builds the object
whose ``probe(target)`` says whether one probe passed and, if not, why. Retries, rise and fall
are not a checker's business: ``lvsd.health`` counts them, ``lvsd.checks.runner`` schedules.

``spec.target(...)`` turns a real server of a service into the ``ProbeTarget`` the probe uses
(connect_ip/connect_port and the DR path applied), keeping only what that check type depends
on: two services that share a real server and a spec get equal targets, hence one probe.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import errno
import ipaddress
import logging
import os
import re
import socket
import struct
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from lvsd import limits, model
from lvsd.checks.target import ProbeTarget
from lvsd.model import Address
from lvsd.probe import ProbeResult

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> object:
    """Accept 2, 2.5, "2s", "500ms", "1m": operators write durations both ways. A boolean is
    not a duration (pydantic would take ``true`` as 1 second)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration (seconds, or e.g. '2s'), got {str(value).lower()}")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"not a duration: {value!r} (use seconds, or e.g. '500ms', '2s', '1m')"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def parse_ip(value: object) -> object:
    """An IP literal usable as a probe's destination (one message, not one per family)."""
    if value is None or isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address (a string), got {value!r}")
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None
    error = limits.virtual_address_error(address)
    if error is not None:
        raise ValueError(error)
    return address


def checked_regex(value: str | None, what: str) -> str | None:
    """``value`` if it compiles as a bytes regex; a huge repeat count (``a{99999999999}``) is
    an OverflowError in ``re``, reported like any other bad pattern."""
    if value is not None:
        try:
            re.compile(value.encode())
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise ValueError(f"{what} is not a valid regex: {exc}") from None
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(allow_inf_nan=False)]
Count = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]


class RunningProbe(Protocol):
    """One probe in flight, as the runner holds it."""

    @property
    def stage(self) -> str:
        """What the probe waits for now ("connect", "response", …), for a timeout's reason."""

    def cancel(self) -> None:
        """Stop and release everything; its ``done`` callback is then never called."""


class Prober(abc.ABC):
    @abc.abstractmethod
    async def probe(self, target: ProbeTarget) -> ProbeResult:
        """Run one probe. Must release everything it holds when cancelled (the timeout)."""

    def start(self, target: ProbeTarget, done: Callable[[ProbeResult], None]) -> RunningProbe:
        """Start one probe; ``done`` gets its result on the event loop, never from inside
        ``start``. By default ``probe()`` runs as a task; the stream checkers override this
        with a callback-driven probe that needs no task (``lvsd.checks.sockets``)."""
        return TaskProbe(self, target, done)


_stage: contextvars.ContextVar[str] = contextvars.ContextVar("lvsd_probe_stage", default="")


class TaskProbe:
    """``Prober.probe`` run as a task (the default ``Prober.start``)."""

    __slots__ = ("context", "done", "task")

    def __init__(self, prober: Prober, target: ProbeTarget,
                 done: Callable[[ProbeResult], None]) -> None:
        self.done: Callable[[ProbeResult], None] | None = done
        self.context = contextvars.copy_context()
        self.task = asyncio.get_running_loop().create_task(
            self._run(prober, target), context=self.context)

    @property
    def stage(self) -> str:
        return self.context.get(_stage, "")

    def cancel(self) -> None:
        self.done = None
        self.task.cancel()

    async def _run(self, prober: Prober, target: ProbeTarget) -> None:
        _stage.set("")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await prober.probe(target)
        except Exception as exc:  # a checker bug must cost one probe, not the runner
            logging.getLogger(__name__).exception("probe of %s raised", target)
            result = ProbeResult(False, f"check error: {type(exc).__name__}: {exc}",
                                 loop.time() - started)
        if self.done is not None:
            self.done(result)


def set_stage(stage: str) -> None:
    """Name what the current probe waits for, so that a timeout can say which step hung."""
    _stage.set(stage)


def current_stage() -> str:
    return _stage.get()


class CheckSpec(BaseModel):
    """Fields every check has. Times are seconds.

    ``retry_interval`` is the probe period while the last probe failed (never longer than
    ``interval``). ``dr_path`` probes the VIP through a per-real-server fwmark service instead
    of the real server's own address (direct-routing services only; see ``drpath``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    # Whether the probe opens a connection to ``connect_ip``/``connect_port`` or the server.
    connects: ClassVar[bool] = True

    type: str
    interval: Duration = Field(default=2.0, gt=0, le=86400)
    timeout: Duration = Field(default=1.0, gt=0, le=3600)
    rise: Count = Field(default=2, ge=1, le=1000)
    fall: Count = Field(default=3, ge=1, le=1000)
    retry_interval: Duration = Field(default=1.0, gt=0, le=86400)
    connect_ip: Annotated[Address | None, BeforeValidator(parse_ip)] = None
    connect_port: Count | None = Field(default=None, ge=1, le=65535)
    dr_path: Flag = False

    @model_validator(mode="after")
    def _dr_path_goes_to_the_vip(self) -> CheckSpec:
        if self.dr_path and self.connect_ip is not None:
            raise ValueError("connect_ip cannot be combined with dr_path "
                             "(the probe goes to the VIP)")
        return self

    @abc.abstractmethod
    def prober(self) -> Prober:
        """The object that runs this check's probes; one per spec, shared by its targets."""

    def describe(self, target: ProbeTarget) -> str:
        """One line naming the probe, for logs and metric labels."""
        return f"{self.type} {target}"

    @property
    def failing_interval(self) -> float:
        return min(self.retry_interval, self.interval)

    def target(
        self,
        rs_address: Address,
        rs_port: int,
        *,
        vip: Address | None = None,
        vport: int = 0,
        protocol: model.Protocol | None = None,
        dr_mark: int = 0,
        source: Address | None = None,
    ) -> ProbeTarget:
        """The target probing real server ``rs_address:rs_port`` of service ``vip:vport``.

        With ``dr_path`` the probe connects to ``vip:(connect_port or vport)`` with SO_MARK
        ``dr_mark``; the caller owns an IPVS fwmark service ``dr_mark`` whose only destination
        is this real server (direct routing). Raises ValueError when that is impossible.
        """
        if self.dr_path:
            if vip is None:
                raise ValueError("dr_path needs a service with a VIP, not a fwmark service")
            if dr_mark <= 0:
                raise ValueError("dr_path needs the fwmark of the real server's probe service")
            address, port = vip, self.connect_port or vport
        else:
            address = self.connect_ip if self.connect_ip is not None else rs_address
            port = self.connect_port or rs_port
            dr_mark = 0
        full = ProbeTarget(address, port, rs_address, rs_port, vip, vport, protocol, dr_mark,
                           source)
        return self.relevant(full)

    def relevant(self, target: ProbeTarget) -> ProbeTarget:
        """``target`` with what this check's probe ignores cleared (the dedup identity).

        Network checks depend on where they connect; the DR path also on the real server's
        address (the source address is chosen by the route towards it).
        """
        return ProbeTarget(target.address, target.port,
                           rs_address=target.rs_address if target.mark else None,
                           mark=target.mark, source=target.source)


# --- helpers shared by the network checkers ---------------------------------------------------

_LINGER_RESET = struct.pack("ii", 1, 0)

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timeout (connect)",
    errno.EADDRNOTAVAIL: "source address not available",
    errno.EPERM: "not permitted",
    errno.EACCES: "not permitted",
    errno.EPIPE: "reset",
}


def os_error_reason(exc: OSError) -> str:
    """A short reason for a socket error: "refused", "reset", "host unreachable", …"""
    if exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def close_with_reset(transport: asyncio.BaseTransport) -> None:
    """Close a probe connection with RST, as HAProxy does: no TIME_WAIT left on either side.

    At thousands of probes per second, TIME_WAIT sockets would otherwise pile up by the
    hundred thousand on the director or on the real servers.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.close()


class ProbeProtocol(asyncio.Protocol):
    """A probe's connection, reset as soon as its answer is known (in the callback that
    learns it: no extra loop iteration) but never before ``create_connection`` returned:
    uvloop attaches the socket it was given only then, and a transport closed earlier would
    leave that socket object to close its number again later, under another connection."""

    transport: asyncio.BaseTransport | None = None
    _opened = False
    _answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def answered(self) -> None:
        self._answered = True
        if self._opened:
            self.close()

    def opened(self) -> None:
        self._opened = True
        if self._answered:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            close_with_reset(self.transport)
            self.transport = None


ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)


async def open_stream(
    factory: Callable[[], ProtocolT],
    target: ProbeTarget,
    **tls: Any,
) -> tuple[asyncio.Transport, ProtocolT]:
    """Connect a stream to ``target`` (over TLS when ``ssl=`` is given).

    The common case lets the event loop create and connect the socket (the cheapest path
    with uvloop); a DR-path or source-bound probe prepares its own socket first.
    """
    loop = asyncio.get_running_loop()
    if target.mark or target.source is not None:
        from lvsd.checks.drpath import connected_socket

        sock = await connected_socket(target, stream=True)
        try:
            transport, protocol = await loop.create_connection(factory, sock=sock, **tls)
        except BaseException:
            sock.close()
            raise
    else:
        transport, protocol = await loop.create_connection(
            factory, target.host, target.port, **tls)
    if isinstance(protocol, ProbeProtocol):
        protocol.opened()
    return transport, protocol


def elapsed_since(start: float) -> float:
    return asyncio.get_running_loop().time() - start
