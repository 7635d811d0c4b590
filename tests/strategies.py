"""Hypothesis strategies for IPVS tables that the kernel and ipvsadm would both accept.

``tables()`` draws whole tables: services of every kind (TCP, UDP, SCTP, fwmark; IPv4 and IPv6),
every scheduler with its flags, persistence with netmasks and engines, one-packet scheduling, real
servers with every forwarding method, tunnel settings and thresholds, and timeouts. Keys are
unique. Drawn values are in the canonical form a kernel dump produces, so that
``restore.parse(save.format_table(t)) == t``:

- a TCP/UDP/SCTP service on port 0 is persistent; ``-o`` only on UDP and fwmark services;
- a direct-routing or tunnel real server of a non-fwmark service has the service's port;
- a tunnel real server always has a ``Tunnel``, with the options ipvsadm allows for its type;
  others have none; only tunnel servers may be of the other address family;
- a host netmask is ``None``, never written out;
- a lower threshold is at most the upper one (the kernel refuses more);
- addresses are of the classes ``lvsd.limits`` lets a virtual service or a real server have;
- ``LOCAL`` forwarding is left out unless asked for: ipvsadm cannot express it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hypothesis import strategies as st

from lvsd.limits import TIMEOUT_MAX, real_server_address_error, virtual_address_error
from lvsd.model import (
    HOST_NETMASK_V4,
    KERNEL_DEFAULT_TIMEOUTS,
    SCHEDULERS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_CSUM,
    TUN_NOCSUM,
    TUN_REMCSUM,
    Address,
    Dest,
    DestKey,
    DestStats,
    Family,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
)

MAX_TIMEOUT = 86400 * 31
SAVE_FORWARDS = (Forward.ROUTE, Forward.MASQ, Forward.TUNNEL)
ALL_FORWARDS = (*SAVE_FORWARDS, Forward.LOCAL)

_V4_EDGES = ("0.0.0.1", "10.0.0.3", "127.0.0.1", "192.0.2.1", "200.0.0.254", "255.255.255.254")
_V6_EDGES = ("2001:db8::2", "::1", "::102:304", "::ffff:1.2.3.4", "fe80::1", "2001:db8:0:0:1::1")


def addresses(family: Family) -> st.SearchStrategy[Address]:
    """Any address of ``family``: spread over the whole space, so that ipvsadm's wrap-around
    sort is exercised, plus a few whose text forms are tricky."""
    if family is Family.INET:
        return st.one_of(st.integers(1, 2**32 - 1).map(ipaddress.IPv4Address),
                         st.sampled_from(_V4_EDGES).map(ipaddress.IPv4Address))
    return st.one_of(
        st.integers(1, 2**128 - 1).map(ipaddress.IPv6Address),
        st.integers(0, 2**32 - 1).map(lambda n: ipaddress.IPv6Address(0x2001_0DB8 << 96 | n)),
        st.sampled_from(_V6_EDGES).map(ipaddress.IPv6Address))


def ports() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 65535), st.sampled_from((0, 53, 80, 443, 8080)))


@st.composite
def service_keys(draw: st.DrawFn, families: Sequence[Family] = (Family.INET, Family.INET6),
                 protocols: Sequence[Protocol] = (Protocol.TCP, Protocol.UDP, Protocol.SCTP,
                                                  Protocol.FWMARK)) -> ServiceKey:
    family = draw(st.sampled_from(families))
    protocol = draw(st.sampled_from(protocols))
    if protocol is Protocol.FWMARK:
        return ServiceKey.mark(draw(st.integers(1, 2**32 - 1)), family)
    address = draw(addresses(family).filter(lambda a: virtual_address_error(a) is None))
    return ServiceKey.virtual(protocol, address, draw(ports()))


def _sched_flags(scheduler: str) -> st.SearchStrategy[int]:
    return st.sets(st.sampled_from((SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)),
                   max_size=3).map(sum) if scheduler in ("sh", "mh") else st.one_of(
        st.just(0), st.sets(st.sampled_from((SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)),
                            max_size=3).map(sum))


@st.composite
def persistences(draw: st.DrawFn, family: Family) -> Persistence:
    timeout = draw(st.one_of(st.integers(1, MAX_TIMEOUT), st.sampled_from((300, 360, 3600))))
    if family is Family.INET6:
        netmask = draw(st.one_of(st.none(), st.integers(1, 127)))
    else:
        netmask = draw(st.one_of(st.none(), st.sampled_from((0xFFFFFF00, 0xFFFF0000, 0)),
                                 st.integers(0, HOST_NETMASK_V4 - 1)))
    return Persistence(timeout, netmask)


def service_stats() -> st.SearchStrategy[ServiceStats]:
    counter = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 10**9))
    return st.builds(ServiceStats, counter, counter, counter, counter, counter,
                     counter, counter, counter, counter, counter)


@st.composite
def services(draw: st.DrawFn, key: ServiceKey, stats: bool = False) -> Service:
    scheduler = draw(st.sampled_from(SCHEDULERS))
    needs_persistence = not key.is_fwmark and key.port == 0
    persistence = draw(persistences(key.family) if needs_persistence else
                       st.one_of(st.none(), persistences(key.family)))
    onepacket = (key.is_fwmark or key.protocol is Protocol.UDP) and draw(st.booleans())
    return Service(
        key,
        scheduler=scheduler,
        sched_flags=draw(_sched_flags(scheduler)),
        onepacket=onepacket,
        persistence=persistence,
        pe_name=draw(st.sampled_from((None, None, "sip"))),
        stats=draw(service_stats()) if stats else ServiceStats(),
    )


def tunnels() -> st.SearchStrategy[Tunnel]:
    return st.one_of(
        st.just(Tunnel(TunnelType.IPIP)),
        st.builds(Tunnel, st.just(TunnelType.GUE), st.integers(1, 65535),
                  st.sampled_from((TUN_NOCSUM, TUN_CSUM, TUN_REMCSUM))),
        st.builds(Tunnel, st.just(TunnelType.GRE), st.just(0),
                  st.sampled_from((TUN_NOCSUM, TUN_CSUM))))


def thresholds() -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.just(0), st.integers(1, 2**31 - 1))


@st.composite
def dests(draw: st.DrawFn, service: ServiceKey, forwards: Sequence[Forward] = SAVE_FORWARDS,
          stats: bool = False) -> Dest:
    forward = draw(st.sampled_from(forwards))
    family = service.family
    if forward is Forward.TUNNEL and draw(st.integers(0, 4)) == 0:
        family = Family.INET6 if family is Family.INET else Family.INET
    address = draw(addresses(family).filter(lambda a: real_server_address_error(a) is None))
    keeps_service_port = not service.is_fwmark and forward in (Forward.ROUTE, Forward.TUNNEL)
    port = service.port if keeps_service_port else draw(ports())
    counts = st.integers(0, 2**32 - 1)
    upper = draw(thresholds())
    return Dest(
        DestKey(address, port),
        weight=draw(st.one_of(st.integers(0, 65535), st.sampled_from((0, 1, 100)))),
        forward=forward,
        tunnel=draw(tunnels()) if forward is Forward.TUNNEL else None,
        upper_threshold=upper,
        lower_threshold=draw(st.integers(0, upper) if upper else st.just(0)),
        stats=draw(st.builds(DestStats, counts, counts, counts, service_stats()))
        if stats else DestStats(),
    )


@st.composite
def virtual_services(draw: st.DrawFn, key: ServiceKey, max_dests: int = 4,
                     forwards: Sequence[Forward] = SAVE_FORWARDS,
                     stats: bool = False) -> VirtualService:
    service = draw(services(key, stats))
    drawn = draw(st.lists(dests(key, forwards, stats), max_size=max_dests,
                          unique_by=lambda d: d.key))
    return VirtualService(service, tuple(drawn))


def timeouts() -> st.SearchStrategy[Timeouts]:
    seconds = st.one_of(st.integers(1, TIMEOUT_MAX), st.sampled_from((5, 30, 60, 900)))
    return st.builds(Timeouts, seconds, seconds, seconds).filter(
        lambda t: t != KERNEL_DEFAULT_TIMEOUTS)


@st.composite
def tables(draw: st.DrawFn, max_services: int = 5, max_dests: int = 4,
           forwards: Sequence[Forward] = SAVE_FORWARDS, with_timeouts: bool = True,
           stats: bool = False, keys: st.SearchStrategy[ServiceKey] | None = None) -> Table:
    """A whole table in an arbitrary order, with unique service and real-server keys."""
    key_strategy = keys if keys is not None else service_keys()
    drawn_keys = draw(st.lists(key_strategy, max_size=max_services, unique=True))
    return Table(
        tuple(draw(virtual_services(k, max_dests, forwards, stats)) for k in drawn_keys),
        draw(st.one_of(st.none(), timeouts())) if with_timeouts else None,
    )
