"""The split-brain owner: probes the segment for another holder of each VIP this director holds.

One thread does all of it, so the event loop never waits on rtnetlink or a packet socket:
each round it asks rtnetlink (pyroute2) which configured VIPs are on this director's
ARP-capable interfaces (a VIP on ``lo`` or a dummy, as behind ECMP, is nobody's business on
the segment), sends each one probe (``packets.probe_for``) from an ``AF_PACKET`` socket on its
interface, and reads the answers until the next round. It hands the VIPs' status to the loop,
where conflicts that begin or clear are logged. A socket or rtnetlink error is recorded in
the status, logged once, and tried again next round: it never stops lvsd.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsd import logs
from lvsd.model import Address
from lvsd.spec import Config
from lvsd.splitbrain.book import Change, ConflictBook, HeldVip, VipStatus, changes
from lvsd.splitbrain.packets import (
    ADVERTISEMENT_FILTER,
    ETH_P_ARP,
    ETH_P_IPV6,
    evidence_in,
    filter_program,
    probe_for,
)

log = logs.get_logger(__name__)

CLEAR_AFTER_PROBES = 3  # a conflict clears after this many probe intervals without evidence
MIN_CLEAR_AFTER = 3.0  # seconds
READ_SLICE = 0.2  # seconds: how soon the thread sees a stop or a new setting
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
ARPHRD_ETHER = 1
IFF_UP, IFF_LOOPBACK, IFF_NOARP = 0x1, 0x8, 0x80
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


def configured_vips(config: Config) -> frozenset[Address]:
    return frozenset(spec.key.address for spec in config.services
                     if spec.key.address is not None)


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    mac: bytes
    arp: bool  # up, Ethernet, neither loopback nor NOARP


@dataclass(frozen=True, slots=True)
class LocalAddress:
    index: int
    address: Address
    usable: bool  # not tentative, not failed duplicate address detection


def held_vips(links: Iterable[Link], addresses: Iterable[LocalAddress],
              vips: frozenset[Address]) -> list[HeldVip]:
    """The configured ``vips`` on an ARP-capable interface of this director (pure)."""
    by_index = {link.index: link for link in links if link.arp}
    held: dict[Address, HeldVip] = {}
    for local in addresses:
        link = by_index.get(local.index)
        if link is not None and local.usable and local.address in vips:
            held.setdefault(local.address, HeldVip(local.address, link.name, link.index,
                                                   link.mac))
    return list(held.values())


def _link_of(message: Any) -> Link | None:
    mac_text = message.get("IFLA_ADDRESS")
    name = message.get("IFLA_IFNAME")
    if not isinstance(mac_text, str) or not isinstance(name, str):
        return None
    mac = bytes.fromhex(mac_text.replace(":", ""))
    flags = int(message.get("flags", 0))
    arp = (message.get("ifi_type") == ARPHRD_ETHER and len(mac) == 6 and bool(flags & IFF_UP)
           and not flags & (IFF_LOOPBACK | IFF_NOARP))
    return Link(int(message["index"]), name, mac, arp)


def _addresses_of(message: Any) -> list[LocalAddress]:
    flags = int(message.get("IFA_FLAGS") or message.get("flags", 0))
    usable = not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
    found: list[LocalAddress] = []
    for name in ("IFA_LOCAL", "IFA_ADDRESS"):
        value = message.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                found.append(LocalAddress(int(message["index"]), ipaddress.ip_address(value),
                                          usable))
    return found


class _Sockets:
    """One packet socket per (interface, family) a held VIP needs; closed when none does."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int], socket.socket] = {}

    def sync(self, held: Sequence[HeldVip]) -> dict[tuple[int, int], str]:
        """Open what ``held`` needs, close the rest; the errors of those that failed."""
        wanted = {(vip.index, vip.address.version): vip.interface for vip in held}
        for key in set(self.open) - set(wanted):
            self.open.pop(key).close()
        errors: dict[tuple[int, int], str] = {}
        for key, interface in wanted.items():
            if key not in self.open:
                try:
                    self.open[key] = _packet_socket(interface, key[1])
                except OSError as exc:
                    errors[key] = f"packet socket on {interface}: {exc.strerror or exc}"
        return errors

    def close(self) -> None:
        for sock in self.open.values():
            sock.close()
        self.open.clear()


def _packet_socket(interface: str, version: int) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # receives nothing yet
    try:
        protocol = ETH_P_ARP if version == 4 else ETH_P_IPV6
        if version == 6:  # else every IPv6 frame on the interface would wake the thread
            program = filter_program(ADVERTISEMENT_FILTER)
            buffer = ctypes.create_string_buffer(program)
            fprog = struct.pack("HL", len(ADVERTISEMENT_FILTER), ctypes.addressof(buffer))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.bind((interface, protocol))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Prober:
    """One probing round at a time, synchronously: the guard's thread runs rounds back to back,
    ``lvsd doctor`` runs one (``probe_once``)."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 stop: threading.Event | None = None) -> None:
        self._clock = clock
        self._stop = stop or threading.Event()
        self.book = ConflictBook(MIN_CLEAR_AFTER)
        self._sockets = _Sockets()
        self._rtnl: Any = None

    def idle(self) -> None:
        self.book.hold(())
        self._sockets.sync(())

    def probe(self, vips: frozenset[Address], interval: float) -> dict[str, str]:
        """Find the held VIPs and send each its probe; the errors, by where they happened."""
        self.book.clear_after = max(MIN_CLEAR_AFTER, CLEAR_AFTER_PROBES * interval)
        errors: dict[str, str] = {}
        try:
            if self._rtnl is None:
                from pyroute2 import IPRoute
                self._rtnl = IPRoute()
            self.book.hold(self._held(self._rtnl, vips))
        except Exception as exc:  # pyroute2 raises its own types too
            errors["rtnetlink"] = f"{type(exc).__name__}: {exc}"
            self._close_rtnl()
        held = self.book.held
        failed = self._sockets.sync(held)
        for vip in held:
            key = (vip.index, vip.address.version)
            error = failed.get(key)
            sock = self._sockets.open.get(key)
            if sock is not None:
                try:
                    sock.send(probe_for(vip.mac, vip.address))
                except OSError as exc:
                    error = f"probe on {vip.interface}: {exc.strerror or exc}"
            self.book.probed(vip.address, error)
            if error is not None:
                errors[vip.interface] = error
        return errors

    @staticmethod
    def _held(rtnl: Any, vips: frozenset[Address]) -> list[HeldVip]:
        links = [link for message in rtnl.get_links() if (link := _link_of(message))]
        addresses = [local for message in rtnl.get_addr() for local in _addresses_of(message)]
        return held_vips(links, addresses, vips)

    def read_until(self, deadline: float) -> None:
        own: dict[tuple[int, int], bytes] = {(vip.index, vip.address.version): vip.mac
                                             for vip in self.book.held}
        while not self._stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            readable = list(self._sockets.open.items())
            if not readable:
                self._stop.wait(min(remaining, READ_SLICE))
                continue
            try:
                ready, _, _ = select.select([sock for _, sock in readable], [], [],
                                            min(remaining, READ_SLICE))
            except (OSError, ValueError):
                return
            for key, sock in readable:
                if sock in ready:
                    self._drain(sock, own.get(key, b""))

    def _drain(self, sock: socket.socket, own_mac: bytes) -> None:
        for _ in range(256):  # bounded: the next select comes back for the rest
            try:
                frame, address = sock.recvfrom(2048)
            except OSError:  # BlockingIOError: nothing more for now
                return
            if len(address) > 2 and address[2] == PACKET_OUTGOING:
                continue
            evidence = evidence_in(frame, own_mac)
            if evidence is not None:
                self.book.saw(evidence, self._clock())

    def _close_rtnl(self) -> None:
        if self._rtnl is not None:
            with contextlib.suppress(Exception):
                self._rtnl.close()
        self._rtnl = None

    def close(self) -> None:
        self._sockets.close()
        self._close_rtnl()


def probe_once(vips: frozenset[Address], wait: float = 1.5) -> tuple[tuple[VipStatus, ...],
                                                                    dict[str, str]]:
    """One probe for each of ``vips`` this host holds, and what answered within ``wait``."""
    prober = Prober()
    try:
        errors = prober.probe(vips, wait)
        if prober.book.held:
            prober.read_until(time.time() + wait)
        return prober.book.statuses(time.time()), errors
    finally:
        prober.close()


Report = Callable[[tuple[VipStatus, ...], list[Change]], None]


class VipGuard:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._vips: frozenset[Address] = frozenset()
        self._interval: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._report: Report | None = None
        self.statuses: tuple[VipStatus, ...] = ()
        self._logged_errors: set[str] = set()

    def configure(self, vips: frozenset[Address], interval: float | None) -> None:
        """What to guard, from the config (start and reload); ``interval`` None: nothing."""
        self._vips, self._interval = vips, interval

    def follow(self, config: Config) -> None:
        """Guard ``config``'s VIPs at its ``split_brain_probe`` interval (start and reload)."""
        self.configure(configured_vips(config), config.daemon.split_brain_probe)

    def start(self, report: Report) -> None:
        """Start the thread; ``report`` is called on the event loop with each new status."""
        self._loop = asyncio.get_running_loop()
        self._report = report
        self._thread = threading.Thread(target=self._run, name="lvsd-splitbrain", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)

    # --- the loop's side ----------------------------------------------------------------------

    def _deliver(self, statuses: tuple[VipStatus, ...], errors: Mapping[str, str]) -> None:
        found = changes(self.statuses, statuses)
        self.statuses = statuses
        for change in found:
            status = change.status
            if change.conflict:
                log.error("vip_conflict", vip=str(status.address), interface=status.interface,
                          other_holders=list(status.other_macs),
                          detail="another host on the segment answers for this director's "
                                 "VIP: split brain")
            else:
                log.info("vip_conflict_cleared", vip=str(status.address),
                         interface=status.interface)
        for where, error in errors.items():
            if error not in self._logged_errors:
                self._logged_errors.add(error)
                log.warning("split_brain_probe_failed", where=where, error=error,
                            detail="retried every probe interval")
        if self._report is not None:
            self._report(statuses, found)

    def _publish(self, statuses: tuple[VipStatus, ...], errors: Mapping[str, str]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._deliver, statuses, dict(errors))

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        prober = Prober(self._clock, self._stop)
        published: tuple[VipStatus, ...] | None = None
        try:
            while not self._stop.is_set():
                interval = self._interval
                if interval is None or not self._vips:
                    prober.idle()
                    published = self._publish_if_new(prober.book, published, {})
                    self._stop.wait(READ_SLICE)
                    continue
                started = self._clock()
                errors = prober.probe(self._vips, interval)
                published = self._publish_if_new(prober.book, published, errors)
                prober.read_until(started + interval)
                published = self._publish_if_new(prober.book, published, errors)
        finally:
            prober.close()

    def _publish_if_new(self, book: ConflictBook, published: tuple[VipStatus, ...] | None,
                        errors: Mapping[str, str]) -> tuple[VipStatus, ...]:
        statuses = book.statuses(self._clock())
        if statuses != published or errors:
            self._publish(statuses, errors)
        return statuses
