"""This director's role, learnt from the kernel: master iff a role address (by default every
service VIP) is on one of its interfaces.

The source of truth is level-triggered: pyroute2's asyncio rtnetlink socket dumps the
addresses once and then follows ``RTM_NEWADDR``/``RTM_DELADDR``; every event recomputes the
role from the whole address set, so a missed transition cannot stick. keepalived's
``vrrp_notify_fifo`` is an optional, faster hint (``INSTANCE "VI_1" MASTER 100``): a line
sets the role at once, and the next address event or dump puts the kernel's truth back.

pyroute2's asyncio socket cannot run on uvloop (its datagram endpoint has the netlink family),
so it runs on a plain asyncio loop in a thread of its own, started in the daemon's network
namespace; its events reach lvsd's loop by ``call_soon_threadsafe`` with the time each was
read. ``RoleWatcher`` is the owner: ``role``, ``changes`` (the last ones, for /status),
``subscribe(callback)`` for whoever wants each ``RoleChange`` (the sync daemons, the event
stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lvsd import logs
from lvsd.model import Address

log = logs.get_logger(__name__)

Role = Literal["master", "backup", "unknown"]
RoleSource = Literal["addresses", "notify_fifo"]
ROLE_VALUES: dict[Role, int] = {"unknown": -1, "backup": 0, "master": 1}  # lvsd_role
HISTORY = 20
FIFO_REOPEN_DELAY = 1.0
MAX_FIFO_LINE = 4096

_FIFO_LINE = re.compile(r'(INSTANCE|GROUP)\s+"((?:[^"\\]|\\.)*)"\s+([A-Z_]+)(?:\s+(\d+))?\s*')
FIFO_STATES: dict[str, Role] = {"MASTER": "master", "BACKUP": "backup", "FAULT": "backup",
                                "STOP": "backup", "DELETED": "backup"}


@dataclass(frozen=True, slots=True)
class RoleChange:
    role: Role
    previous: Role
    source: RoleSource
    at: float  # epoch seconds the event was read from the kernel or the FIFO
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"role": self.role, "previous": self.previous, "source": self.source,
                "at": self.at, "detail": self.detail}


def role_of(present: Iterable[Address], addresses: frozenset[Address]) -> Role:
    """Master iff one of ``addresses`` is among the ``present`` ones; backup otherwise (and
    unknown when there is nothing to look for)."""
    if not addresses:
        return "unknown"
    return "master" if any(a in addresses for a in present) else "backup"


def parse_fifo_line(line: str, instance: str | None) -> tuple[Role, str] | None:
    """The role a keepalived notify-FIFO line announces, and the line's instance words; None
    for lines about other instances, priorities, or anything else."""
    match = _FIFO_LINE.fullmatch(line.strip())
    if match is None or match.group(1) != "INSTANCE":
        return None
    name, state = match.group(2), match.group(3)
    if instance is not None and name != instance:
        return None
    role = FIFO_STATES.get(state)
    if role is None:
        return None
    return role, f"instance {name!r} {state}"


def _address_of(message: Any) -> tuple[int, Address] | None:
    value = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
    if value is None:
        return None
    try:
        return int(message["index"]), ipaddress.ip_address(value)
    except (ValueError, KeyError, TypeError):
        return None


class RoleWatcher:
    """The owner of the role. ``start()`` in the daemon's loop; ``stop()`` at the end."""

    def __init__(self, addresses: frozenset[Address], *, notify_fifo: Path | None = None,
                 instance: str | None = None) -> None:
        self.addresses = addresses
        self.notify_fifo = notify_fifo
        self.instance = instance
        self.role: Role = "unknown"
        self.source: RoleSource = "addresses"
        self.changes: deque[RoleChange] = deque(maxlen=HISTORY)
        self.present: set[tuple[int, Address]] = set()
        self.watching = False  # the rtnetlink dump answered
        self.error: str | None = None
        self._subscribers: list[Callable[[RoleChange], object]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._fifo_task: asyncio.Task[None] | None = None
        self._first_dump = asyncio.Event()

    def subscribe(self, callback: Callable[[RoleChange], object]) -> None:
        """``callback(change)`` on lvsd's loop after every change of role."""
        self._subscribers.append(callback)

    def configure(self, addresses: frozenset[Address], notify_fifo: Path | None,
                  instance: str | None) -> None:
        """A reload: new role addresses count at once; a new FIFO path at the next reopen."""
        self.addresses = addresses
        self.instance = instance
        if notify_fifo != self.notify_fifo:
            self.notify_fifo = notify_fifo
            self._restart_fifo()
        self._recompute(time.time(), "role addresses reloaded")

    async def start(self, first_dump_timeout: float = 30.0) -> None:
        """Start watching; wait (bounded: pyroute2's import takes seconds under emulation)
        for the first address dump, so the first reconcile knows the role."""
        self.watch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_dump.wait(), first_dump_timeout)

    def watch(self) -> None:
        """Start watching without waiting for the first dump (once; later calls do nothing)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._rtnetlink_thread, name="lvsd-role", daemon=True).start()
        self.follow_fifo()

    def stop(self) -> None:
        thread_loop, follow = self._thread_loop, self._follow_task
        if thread_loop is not None and follow is not None:
            with contextlib.suppress(RuntimeError):  # its loop ended already
                thread_loop.call_soon_threadsafe(follow.cancel)
        if self._fifo_task is not None:
            self._fifo_task.cancel()

    # --- the kernel's addresses ---------------------------------------------------------------

    def _rtnetlink_thread(self) -> None:
        loop = asyncio.new_event_loop()
        follow = loop.create_task(self._follow_addresses())
        self._thread_loop, self._follow_task = loop, follow
        try:
            loop.run_until_complete(follow)
        except asyncio.CancelledError:
            pass  # stopped
        except Exception as exc:  # pyroute2 raises its own types too
            self._post(self._watch_failed, f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

    async def _follow_addresses(self) -> None:
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

        rtnl = AsyncIPRoute()
        try:
            await rtnl.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
            dumped = set()
            async for message in await rtnl.addr("dump"):
                found = _address_of(message)
                if found is not None:
                    dumped.add(found)
            self._post(self.take_dump, frozenset(dumped), time.time())
            while True:
                async for message in rtnl.get():
                    at = time.time()
                    found = _address_of(message)
                    event = message.get("event")
                    if found is not None and event in ("RTM_NEWADDR", "RTM_DELADDR"):
                        self._post(self.take_address_event, event == "RTM_NEWADDR", found, at)
        finally:
            with contextlib.suppress(Exception):
                await rtnl.close()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # lvsd's loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def take_dump(self, present: frozenset[tuple[int, Address]], at: float) -> None:
        self.present = set(present)
        self.watching = True
        self.error = None
        self._recompute(at, "address dump")
        self._first_dump.set()

    def take_address_event(self, added: bool, found: tuple[int, Address], at: float) -> None:
        if added:
            self.present.add(found)
        else:
            self.present.discard(found)
        if found[1] in self.addresses:
            verb = "added" if added else "deleted"
            self._recompute(at, f"{found[1]} {verb} on interface {found[0]}")

    def _watch_failed(self, error: str) -> None:
        self.watching = False
        self.error = error
        log.error("role_watch_failed", error=error,
                  detail="the role stays as last known; lvsd keeps running")
        self._first_dump.set()

    def _recompute(self, at: float, detail: str) -> None:
        if not self.watching:
            return
        self._set(role_of((a for _, a in self.present), self.addresses), "addresses", at,
                  detail)

    # --- keepalived's notify FIFO ------------------------------------------------------------

    def follow_fifo(self) -> None:
        """Read ``notify_fifo`` (if set) from the running loop on."""
        self._loop = asyncio.get_running_loop()
        self._restart_fifo()

    def _restart_fifo(self) -> None:
        if self._fifo_task is not None:
            self._fifo_task.cancel()
            self._fifo_task = None
        if self.notify_fifo is not None and self._loop is not None:
            self._fifo_task = self._loop.create_task(self._follow_fifo(self.notify_fifo))

    async def _follow_fifo(self, path: Path) -> None:
        """Read lines for as long as lvsd runs; reopen after an error (keepalived made the
        FIFO anew, or it is missing for now). Opened read-write, so a writer that goes away
        (a keepalived restart) is no end of file."""
        while True:
            try:
                await self._read_fifo(path)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENXIO):
                    log.warning("notify_fifo_unreadable", path=str(path), error=str(exc))
            await asyncio.sleep(FIFO_REOPEN_DELAY)

    async def _read_fifo(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        pending = b""
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                at = time.time()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_FIFO_LINE:
                    pending = b""
                for line in lines:
                    self._fifo_line(line.decode(errors="replace"), at)
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def _fifo_line(self, line: str, at: float) -> None:
        parsed = parse_fifo_line(line, self.instance)
        if parsed is not None:
            role, detail = parsed
            self._set(role, "notify_fifo", at, detail)

    # --- changes -------------------------------------------------------------------------------

    def _set(self, role: Role, source: RoleSource, at: float, detail: str) -> None:
        if role == self.role:
            return
        change = RoleChange(role, self.role, source, at, detail)
        self.role, self.source = role, source
        self.changes.append(change)
        log.info("role_change", role=role, previous=change.previous, source=source,
                 event_at=at, detail=detail)
        for callback in self._subscribers:
            try:
                callback(change)
            except Exception as exc:  # a subscriber's bug is not the watcher's end
                log.error("role_subscriber_failed", error=f"{type(exc).__name__}: {exc}")

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "source": self.source,
            "addresses": sorted(str(a) for a in self.addresses),
            "watching": self.watching,
            "error": self.error,
            "notify_fifo": str(self.notify_fifo) if self.notify_fifo else None,
            "changes": [c.to_json() for c in self.changes],
        }
