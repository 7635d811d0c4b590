"""Probing a direct-routing real server the way clients reach it: through IPVS, on the VIP.

A plain probe to a DR real server's own address passes even when the server would drop every
client packet (no VIP on ``lo``). With ``dr_path = true`` the probe takes the clients' path:

1. The reconciler gives each (DR service VIP:port, real server R) an IPVS fwmark service M of
   its own — same family, scheduler rr, R as its only destination, ``-g``, weight 1 whatever
   R's health (the probe must reach R while R is out of the VIP's rotation, or R could never
   come back). Clients never carry mark M, so this service only sees probes.
2. The probe socket gets ``SO_MARK = M`` (needs CAP_NET_ADMIN), is bound to the director's
   own address on the route towards R (``route_source``; or ``ProbeTarget.source``), and
   connects to VIP:port. IPVS hooks locally generated packets (LOCAL_OUT) and looks up fwmark
   services before address ones, so the SYN goes to R unchanged (destination still the VIP),
   exactly as a client's SYN would.
3. R accepts it only if the VIP is a local address on R (on ``lo``). Without it R drops the
   SYN, the probe times out and R stays out of rotation. (The ARP sysctls ``arp_ignore=1``/
   ``arp_announce=2`` decide who answers ARP for the VIP on the shared segment; a probe from
   the director cannot observe them.)
4. R answers from VIP:port straight to the director's address. The director holds the VIP
   itself, so by default it drops that reply as a martian (a packet from one of its own
   addresses). The director needs, on the interface those replies arrive on (the one towards
   R): ``net.ipv4.conf.<if>.accept_local = 1`` (or ``conf.all``); and, when the VIP is held
   by another interface (``lo``, a dummy, a second NIC), reverse-path filtering not strict:
   ``max(conf.all.rp_filter, conf.<if>.rp_filter)`` 0 or 2. These are per interface, so no
   socket option can stand in for them; ``director_problems`` reports them. When the VIP is
   not a local address of the director, none of this is needed.
5. The source address must be neither the VIP (R would drop a packet from its own address as
   a martian) nor loopback (IPVS refuses to send a loopback-sourced packet out): hence the
   explicit bind. ``IP_BIND_ADDRESS_NO_PORT`` keeps the source port chosen at connect time.

IPVS keeps a connection entry (director address:port → VIP:port → R) as for any client; with
the default ``net.ipv4.vs.conn_reuse_mode = 1`` a reused source port is rescheduled through
the mark. A director firewall that drops conntrack state INVALID must let these replies in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsd.checks.target import ProbeTarget
from lvsd.model import Address

SO_MARK = getattr(socket, "SO_MARK", 36)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def route_source(destination: Address) -> Address:
    """The source address the kernel's routing picks towards ``destination``."""
    family = socket.AF_INET if destination.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((str(destination), 9))  # a routing lookup; UDP connect sends nothing
        return ipaddress.ip_address(probe.getsockname()[0])


def source_for(target: ProbeTarget) -> Address | None:
    if target.source is not None:
        return target.source
    if target.mark and target.rs_address is not None:
        return route_source(target.rs_address)
    return None


def prepare_socket(sock: socket.socket, target: ProbeTarget, *, stream: bool) -> None:
    """Give a new socket towards ``target`` its mark and source address, before connect."""
    if target.mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, target.mark)
    source = source_for(target)
    if source is not None:
        if stream:  # without it, binding picks the port before the peer is known
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((str(source), 0))


async def connected_socket(target: ProbeTarget, *, stream: bool) -> socket.socket:
    """A non-blocking socket connected to ``target`` with its mark and source address."""
    family = socket.AF_INET if target.address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        prepare_socket(sock, target, stream=stream)
        await asyncio.get_running_loop().sock_connect(sock, (str(target.address), target.port))
    except BaseException:
        sock.close()
        raise
    return sock


RTNETLINK_TIMEOUT = 5.0  # seconds once pyroute2 is loaded; bounds a stuck answer


@dataclass(frozen=True, slots=True)
class Routing:
    """What the director's kernel says about a DR path (None where it could not tell)."""

    vip_holders: frozenset[str] | None  # interfaces holding the VIP
    reply_interface: str | None  # the interface of the route towards the real server


CANNOT_TELL = Routing(None, None)


async def director_routing(vip: Address | None, rs_address: Address) -> Routing:
    """Ask rtnetlink, through pyroute2, which interfaces hold ``vip`` and which interface the
    kernel routes ``rs_address`` through (the interface the real server's replies come in on).

    pyroute2 answers from a thread of its own: its asyncio socket cannot run on uvloop and its
    synchronous API cannot run inside a running loop, and importing it takes seconds under
    emulation (the timeout counts from when it is loaded). The thread is started here, so it
    shares the caller's network namespace.
    """
    loop = asyncio.get_running_loop()
    loaded: asyncio.Future[None] = loop.create_future()
    answer: asyncio.Future[Routing] = loop.create_future()

    def settle(future: asyncio.Future[Any], value: Any) -> None:
        if not future.done():
            future.set_result(value)

    def from_thread(future: asyncio.Future[Any], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, future, value)

    def ask() -> None:
        routing = CANNOT_TELL
        try:
            from pyroute2 import IPRoute

            from_thread(loaded, None)
            with IPRoute() as rtnl:
                routing = routing_of(rtnl, vip, rs_address)
        except Exception:  # pyroute2 raises its own types too: any failure is "cannot tell"
            routing = CANNOT_TELL
        from_thread(loaded, None)
        from_thread(answer, routing)

    threading.Thread(target=ask, name="lvsd-rtnetlink", daemon=True).start()
    await loaded
    try:
        return await asyncio.wait_for(answer, RTNETLINK_TIMEOUT)
    except TimeoutError:
        return CANNOT_TELL


def routing_of(rtnl: Any, vip: Address | None, rs_address: Address) -> Routing:
    names = {link["index"]: link.get("IFLA_IFNAME") for link in rtnl.link("dump")}
    holders = None
    if vip is not None:
        family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
        holders = frozenset(
            names[message["index"]]
            for message in rtnl.addr("dump", family=family)
            if message["index"] in names
            and any(value is not None and ipaddress.ip_address(value) == vip
                    for value in (message.get("IFA_ADDRESS"), message.get("IFA_LOCAL")))
        )
    reply_interface = None
    try:
        routes = rtnl.route("get", dst=str(rs_address))
    except Exception:  # unreachable: NetlinkError(ENETUNREACH) and the like
        routes = []
    for route in routes:
        index = route.get("RTA_OIF")
        if index in names:
            reply_interface = names[index]
            break
    return Routing(holders, reply_interface)


async def director_problems(
    rs_address: Address,
    vip: Address | None = None,
    *,
    proc_sys: Path = Path("/proc/sys"),
    routing: Callable[[Address | None, Address], Awaitable[Routing]] = director_routing,
) -> list[str]:
    """What would drop DR-path replies from ``rs_address`` (sent from ``vip``) on this
    director, as sentences for the log; empty when nothing would. IPv4 only: IPv6 has no
    martian-source filter of this kind."""
    if rs_address.version != 4:
        return []
    facts = await routing(vip, rs_address)
    if facts == CANNOT_TELL:
        return ["cannot read the director's addresses and routes over rtnetlink: "
                "the DR-path sysctls (accept_local, rp_filter) were not checked"]
    conf = proc_sys / "net/ipv4/conf"

    def read(name: str, key: str) -> int:
        try:
            return int((conf / name / key).read_text())
        except (OSError, ValueError):
            return 0

    return [problem for problem, _ in martian_drops(rs_address, facts, read)]


def martian_drops(rs_address: Address, facts: Routing,
                  read: Callable[[str, str], int]) -> list[tuple[str, str]]:
    """Pure: what drops DR-path replies from ``rs_address``, given what rtnetlink said and
    ``read(interface, key)`` of net.ipv4.conf sysctls; each as (problem, fixing command)."""
    vip_holders = facts.vip_holders
    if vip_holders is not None and not vip_holders:
        return []  # the VIP is not an address of this director: its replies are no martians
    iface = facts.reply_interface
    if iface is None:
        return [(f"no IPv4 route towards {rs_address}", f"ip route add {rs_address} dev IFACE")]
    problems = []
    if not (read("all", "accept_local") or read(iface, "accept_local")):
        problems.append((f"net.ipv4.conf.{iface}.accept_local is 0: replies from the VIP "
                         f"arriving on {iface} are dropped as martians (set it to 1)",
                         f"sysctl -w net.ipv4.conf.{iface}.accept_local=1"))
    strict = max(read("all", "rp_filter"), read(iface, "rp_filter")) == 1
    if strict and (vip_holders is None or iface not in vip_holders):
        held = (f"the VIP is held by {', '.join(sorted(vip_holders))}" if vip_holders
                else f"unless the VIP is an address of {iface} itself")
        loosen = [f"net.ipv4.conf.{name}.rp_filter=2" for name in ("all", iface)
                  if read(name, "rp_filter") == 1]
        problems.append((f"strict rp_filter on {iface} (net.ipv4.conf.all/{iface}.rp_filter=1) "
                         f"drops replies from the VIP: {held} (use rp_filter 0 or 2)",
                         f"sysctl -w {' '.join(loosen)}"))
    return problems
