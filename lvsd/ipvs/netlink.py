"""The kernel's IPVS table over generic netlink: ``NetlinkIpvs`` implements ``IpvsBackend``.

This package is the edge where kernel messages become ``lvsd.model`` values; nothing else in
lvsd sees netlink. The layers, each in its own module:

- ``abi``: the kernel's numbers (commands, attribute ids, flags), each defined once;
- ``codec``: one attribute table per nest, from which requests and replies are packed and
  parsed with ``struct`` (pyroute2's message objects cost 27-64 times more per request,
  which ``bench/codec.py`` measures);
- ``channel``: the socket, pipelined windows, answers matched to requests;
- this module: the backend, turning everything that can go wrong into ``IpvsError``.

pyroute2 provides the part that is fiddly to get right: a socket opened inside a named network
namespace. A channel that broke (a socket error, a garbled or missing answer, a cancelled call)
is closed, and the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
from collections.abc import Callable, Sequence
from types import TracebackType

from lvsd.errors import IpvsError, IpvsUnavailable
from lvsd.ipvs.abi import Cmd
from lvsd.ipvs.backend import KernelInfo
from lvsd.ipvs.channel import (
    ANSWER_TIMEOUT,
    WINDOW,
    Channel,
    ChannelBroken,
    KernelError,
    Outcome,
    Reply,
    open_socket,
)
from lvsd.ipvs.codec import (
    DecodeError,
    DestLayout,
    EncodeError,
    decode_daemon,
    decode_dests,
    decode_info,
    decode_service,
    decode_timeouts,
    request,
    service_key_nest,
    sync_request,
)
from lvsd.ipvs.reasons import reason, sync_error
from lvsd.model import (
    Dest,
    Op,
    Service,
    SyncDaemon,
    SyncOp,
    Table,
    Timeouts,
    VirtualService,
)
from lvsd.pacing import Pacer

__all__ = ["WINDOW", "NetlinkIpvs"]

TABLE = "IPVS table"


class NetlinkIpvs:
    """The IPVS table of one network namespace (the caller's when ``netns`` is None).

    The socket opens on first use; a missing IPVS raises ``IpvsUnavailable`` there. Calls on
    one instance are serialised. ``socket_factory`` replaces the netlink socket (tests and the
    golden-byte capture wrap it).
    """

    def __init__(
        self, netns: str | None = None, *,
        socket_factory: Callable[[], socket.socket] | None = None,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.netns = netns
        self._socket_factory = socket_factory or (lambda: open_socket(netns))
        self._answer_timeout = answer_timeout
        self._channel: Channel | None = None
        self._lock = asyncio.Lock()
        self._dest_layout: DestLayout | None = None
        self._layout_failed = False

    async def __aenter__(self) -> NetlinkIpvs:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _open(self) -> Channel:
        if self._channel is not None and not self._channel.in_sync:
            self._drop_channel()
        if self._channel is None:
            where = f" in network namespace {self.netns!r}" if self.netns else ""
            try:
                sock = self._socket_factory()
            except OSError as exc:
                raise IpvsUnavailable(f"cannot open a netlink socket{where}: {exc}") from exc
            try:
                self._channel = await Channel.open(sock, self._answer_timeout)
            except KernelError as exc:
                if exc.code == errno.ENOENT and not isinstance(exc, ChannelBroken):
                    raise IpvsUnavailable(
                        "IPVS is not available: the kernel has no generic netlink family "
                        "'IPVS' (is the ip_vs module loaded? try 'modprobe ip_vs')") from exc
                raise IpvsUnavailable(f"cannot look up the IPVS netlink family{where}: "
                                      f"{_reason_of(exc)}") from exc
        return self._channel

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def close(self) -> None:
        async with self._lock:
            self._drop_channel()

    async def dump(self) -> Table:
        async with self._lock:
            channel = await self._open()
            try:
                timeouts = decode_timeouts(*await channel.query(channel.family, Cmd.GET_CONFIG))
                services = [decode_service(*reply)
                            for reply in await channel.dump(Cmd.GET_SERVICE)]
                dumped: list[tuple[Service, list[Reply]]] = []
                pacer = Pacer()
                for service in services:
                    await pacer.tick()
                    try:
                        dumped.append((service, await channel.dump(
                            Cmd.GET_DEST, service_key_nest(service.key))))
                    except KernelError as exc:
                        if exc.code == errno.ESRCH and not isinstance(exc, ChannelBroken):
                            continue  # deleted since the service dump
                        raise
                # Tens of thousands of new objects that all survive: the collector would walk
                # them again and again while they are made, for nothing.
                collecting = gc.isenabled()
                gc.disable()
                try:
                    decoded: list[VirtualService] = []
                    for service, replies in dumped:
                        decoded.append(VirtualService(service, self._decode_dests(replies,
                                                                                  service)))
                        await pacer.tick()
                    return Table(tuple(decoded), timeouts)
                finally:
                    if collecting:
                        gc.enable()
            except (KernelError, DecodeError) as exc:
                raise self._table_error("dump", exc) from exc

    def _decode_dests(self, replies: Sequence[Reply], service: Service) -> tuple[Dest, ...]:
        if self._dest_layout is None and not self._layout_failed and replies:
            try:
                self._dest_layout = DestLayout(*replies[0])
            except DecodeError:
                self._layout_failed = True
        return decode_dests(replies, service.key.family, self._dest_layout)

    async def timeouts(self) -> Timeouts:
        async with self._lock:
            channel = await self._open()
            try:
                return decode_timeouts(*await channel.query(channel.family, Cmd.GET_CONFIG))
            except (KernelError, DecodeError) as exc:
                raise self._table_error("get timeouts", exc) from exc

    async def info(self) -> KernelInfo:
        async with self._lock:
            channel = await self._open()
            try:
                version, size = decode_info(*await channel.query(channel.family, Cmd.GET_INFO))
            except (KernelError, DecodeError) as exc:
                raise self._table_error("get info", exc) from exc
        return KernelInfo(version, size)

    async def daemons(self) -> tuple[SyncDaemon, ...]:
        async with self._lock:
            channel = await self._open()
            try:
                found = [decode_daemon(*reply) for reply in await channel.dump(Cmd.GET_DAEMON)]
            except (KernelError, DecodeError) as exc:
                raise self._table_error("get sync daemons", exc) from exc
        return tuple(sorted(found, key=lambda daemon: daemon.state))

    async def apply_sync(self, ops: Sequence[SyncOp]) -> list[IpvsError]:
        errors: list[IpvsError] = []
        for op in ops:  # one at a time: a start takes the kernel a thread spawn, and is rare
            try:
                cmd, body = sync_request(op)
            except EncodeError as exc:
                errors.append(sync_error(op, errno.EINVAL, f"cannot be expressed to the "
                                                           f"kernel: {exc}"))
                continue
            async with self._lock:
                channel = await self._open()
                outcome = (await channel.execute([(cmd, body)]))[0]
                if not channel.in_sync:
                    self._drop_channel()
            if outcome.code:
                errors.append(sync_error(op, outcome.code, outcome.detail))
        return errors

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        if not ops:
            return []
        encoded: list[tuple[int, bytes] | EncodeError] = []
        pacer = Pacer()
        for op in ops:
            await pacer.tick()
            try:
                encoded.append(request(op))
            except EncodeError as exc:
                encoded.append(exc)
        sendable = [r for r in encoded if not isinstance(r, EncodeError)]
        async with self._lock:
            channel = await self._open()
            outcomes = iter(await channel.execute(sendable) if sendable else [])
            if not channel.in_sync:
                self._drop_channel()
        errors: list[IpvsError] = []
        for op, req in zip(ops, encoded, strict=True):
            if isinstance(req, EncodeError):
                errors.append(IpvsError.of(op, errno.EINVAL,
                                           f"cannot be expressed to the kernel: {req}"))
                continue
            outcome = next(outcomes)
            if outcome.code:
                errors.append(op_error(op, outcome))
        return errors

    def _table_error(self, operation: str, exc: KernelError | DecodeError
                     ) -> IpvsError | IpvsUnavailable:
        if isinstance(exc, DecodeError):
            self._drop_channel()
            return IpvsError(operation, TABLE, errno.EPROTO,
                             f"unreadable reply from the kernel: {exc}")
        if isinstance(exc, ChannelBroken):
            self._drop_channel()
        if exc.code == errno.EPERM:
            return IpvsUnavailable(f"{operation} {TABLE}: operation not permitted "
                                   "(needs CAP_NET_ADMIN)")
        return IpvsError(operation, TABLE, exc.code, _reason_of(exc))


def _reason_of(exc: KernelError) -> str:
    reason = os.strerror(exc.code).lower()
    return f"{reason}: {exc.detail}" if exc.detail else reason


def op_error(op: Op, outcome: Outcome) -> IpvsError:
    text = reason(op, outcome.code)
    return IpvsError.of(op, outcome.code, f"{text}: {outcome.detail}" if outcome.detail else text)
