"""The host routes lvsd announces, in one kernel routing table, over rtnetlink.

``KernelRoutes`` reads and writes them with pyroute2's async API. pyroute2's asyncio socket
cannot run on uvloop (it opens its netlink socket as a datagram endpoint, which uvloop refuses
for AF_NETLINK), so it runs on a standard asyncio loop in a thread of its own; the daemon's
loop awaits its answers. Only routes of lvsd's own protocol number are ever listed, and a
delete names that protocol too: a route someone else made in the table is never touched.

``watch_routes`` follows the same routes as they come and go (for ``lvsd announce exabgp``,
a process of its own on a standard asyncio loop).

``MemoryRoutes`` is the in-memory stand-in the unit tests use.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from lvsd.model import Address

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")

LOOPBACK_IFINDEX = 1  # the loopback device's index in every network namespace
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400


def host_prefix(address: Address) -> Prefix:
    """``198.51.100.10/32`` or ``2001:db8::10/128``."""
    return ipaddress.ip_network(address)


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """A route of lvsd's that is (``present``) or is no longer in its table."""

    prefix: Prefix
    present: bool


class RouteError(Exception):
    """The kernel refused a route request; ``errno`` says why."""

    def __init__(self, what: str, code: int, detail: str = "") -> None:
        self.errno = code
        super().__init__(f"{what}: {detail or errno.errorcode.get(code, str(code))}")


class Routes(Protocol):
    """Host routes of one ``protocol`` in one ``table``."""

    async def dump(self, table: int, protocol: int) -> frozenset[Prefix]: ...

    async def add(self, prefix: Prefix, table: int, protocol: int) -> None: ...

    async def delete(self, prefix: Prefix, table: int, protocol: int) -> None: ...

    async def close(self) -> None: ...


class KernelRoutes:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ipr: Any = None

    async def dump(self, table: int, protocol: int) -> frozenset[Prefix]:
        async def dump() -> frozenset[Prefix]:
            ipr = await self._socket()
            found: set[Prefix] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                async for msg in await ipr.route("dump", family=family, table=table):
                    if msg["proto"] != protocol or msg.get("table") != table:
                        continue
                    found.add(_prefix(msg))
            return frozenset(found)

        return await self._run(dump, f"dump table {table}")

    async def add(self, prefix: Prefix, table: int, protocol: int) -> None:
        await self._change("add", prefix, table, protocol)

    async def delete(self, prefix: Prefix, table: int, protocol: int) -> None:
        await self._change("del", prefix, table, protocol)

    async def _change(self, command: str, prefix: Prefix, table: int, protocol: int) -> None:
        family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6

        async def change() -> None:
            ipr = await self._socket()
            await ipr.route(command, dst=str(prefix), family=family, table=table,
                            proto=protocol, oif=LOOPBACK_IFINDEX)

        await self._run(change, f"{command} route {prefix} table {table}")

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._ipr is not None:
            ipr = self._ipr

            async def close() -> None:
                ipr.close()

            await self._run(close, "close")
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 5.0)
        self._loop = self._thread = self._ipr = None

    async def _socket(self) -> Any:
        """The rtnetlink socket, opened on the routes thread's loop the first time."""
        if self._ipr is None:
            from pyroute2 import AsyncIPRoute

            ipr = AsyncIPRoute()
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    async def _run(self, work: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="lvsd-routes",
                                            daemon=True)
            self._thread.start()
            self._loop = loop
        future = asyncio.run_coroutine_threadsafe(work(), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except RouteError:
            raise
        except Exception as exc:  # pyroute2's NetlinkError (``code``), socket errors, its own
            code = getattr(exc, "code", None) or getattr(exc, "errno", None)
            raise RouteError(what, code if isinstance(code, int) else errno.EIO,
                             "" if isinstance(code, int) else f"{type(exc).__name__}: {exc}"
                             ) from exc


def _prefix(msg: Any) -> Prefix:
    return ipaddress.ip_network(f"{msg.get('dst')}/{msg['dst_len']}")


async def watch_routes(table: int, protocol: int) -> AsyncIterator[RouteEvent]:
    """Every route of ``protocol`` in ``table`` as present, then each change as it happens.
    It listens before it lists, so nothing falls in between (an event may repeat what the
    list said). Runs on the caller's loop: a standard asyncio loop, not uvloop."""
    from pyroute2 import AsyncIPRoute

    async with AsyncIPRoute() as listener, AsyncIPRoute() as lister:
        await listener.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
        for family in (socket.AF_INET, socket.AF_INET6):
            async for msg in await lister.route("dump", family=family, table=table):
                if msg["proto"] == protocol and msg.get("table") == table:
                    yield RouteEvent(_prefix(msg), True)
        while True:
            async for msg in listener.get():
                if msg["proto"] != protocol or msg.get("table") != table:
                    continue
                if msg["event"] in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    yield RouteEvent(_prefix(msg), msg["event"] == "RTM_NEWROUTE")


class MemoryRoutes:
    """Routes in a dict: ``routes[(table, prefix)] = protocol``. ``refuse`` makes the next
    requests fail with that errno."""

    def __init__(self) -> None:
        self.routes: dict[tuple[int, Prefix], int] = {}
        self.refuse: int | None = None
        self.requests = 0
        self.closed = False

    async def dump(self, table: int, protocol: int) -> frozenset[Prefix]:
        self._request("dump")
        return frozenset(prefix for (tab, prefix), proto in self.routes.items()
                         if tab == table and proto == protocol)

    async def add(self, prefix: Prefix, table: int, protocol: int) -> None:
        self._request(f"add route {prefix}")
        if (table, prefix) in self.routes:
            raise RouteError(f"add route {prefix}", errno.EEXIST)
        self.routes[(table, prefix)] = protocol

    async def delete(self, prefix: Prefix, table: int, protocol: int) -> None:
        self._request(f"del route {prefix}")
        if self.routes.get((table, prefix)) != protocol:
            raise RouteError(f"del route {prefix}", errno.ESRCH)
        del self.routes[(table, prefix)]

    async def close(self) -> None:
        self.closed = True

    def _request(self, what: str) -> None:
        self.requests += 1
        if self.refuse is not None:
            raise RouteError(what, self.refuse)

