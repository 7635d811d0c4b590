"""The ipvsadm-save format: format a table as ``ipvsadm-save -n`` does, and parse it back.

Facts taken from ipvsadm 1.31 and checked against it in the VM:

- ``ipvsadm -S`` sorts services and real servers before printing. Its comparators subtract
  unsigned 32-bit numbers and read the result as a signed int, so 10.0.0.3 sorts *after*
  200.0.0.254, and glibc's merge sort turns the resulting cycles into an order that depends on
  the kernel's dump order. ``format_table`` reproduces this exactly (``sort=True``).
- A bare ``-p`` means 360 s (the manual page says 300; the code says ``6*60``).
- ``LOCAL`` forwarding (kernel code 1) is printed as ``-g``: ipvsadm has no switch for it.
- A tunnel destination always gets ``--tun-type``; gue/gre always get a checksum option.
- fwmarks are printed with ``%d``: mark 4294967295 appears as ``-f -1``.

ipvsadm-save drops thresholds and timeouts. Unless ``compat`` is asked for, ``format_table``
adds them (``-x``/``-y`` and a ``--set`` line), which ipvsadm-restore reads back. It also
prints large fwmarks unsigned and an ``sh``/``mh`` ``flag-3`` bit, the two cases where
ipvsadm-save prints something ipvsadm-restore cannot read.

``parse`` reads a file as ipvsadm-restore would run it after its flush, but all or nothing: any
problem raises ``SaveFormatError`` naming the line, and no table is returned.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
import tempfile
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from lvsd.errors import SaveFormatError
from lvsd.model import (
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    KERNEL_DEFAULT_TIMEOUTS,
    SCHEDULERS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_CSUM,
    TUN_NOCSUM,
    TUN_REMCSUM,
    AddDest,
    Address,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Family,
    Forward,
    Op,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    SetTimeouts,
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
)

PERSISTENCE_ENGINES = ("sip",)
DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENT_TIMEOUT = 360  # ipvsadm's IPVS_SVC_PERSISTENT_TIMEOUT
MAX_TIMEOUT = 86400 * 31
MAX_WEIGHT = 65535
MAX_THRESHOLD = 2**31 - 1
MAX_FWMARK = 2**32 - 1

# ---------------------------------------------------------------------------------------------
# Name lookups: the only part that may touch the system, injected so the rest stays pure.


class NameResolver(typing.Protocol):
    def host_name(self, address: Address) -> str | None:
        """The name ``gethostbyaddr`` gives, or None to print the address."""
        ...

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        """The services-database name of ``port``, or None to print the number."""
        ...

    def host_address(self, name: str, family: Family) -> Address | None: ...

    def service_port(self, name: str, protocol: Protocol) -> int | None: ...


_SERVICE_DB_PROTO = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}


class SystemResolver:
    """The C library's lookups, as ipvsadm makes them: hosts and the services database."""

    def host_name(self, address: Address) -> str | None:
        try:
            return socket.gethostbyaddr(str(address))[0]
        except OSError:
            return None

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        proto = _SERVICE_DB_PROTO.get(protocol)
        if proto is None:
            return None
        try:
            return socket.getservbyport(port, proto)
        except OSError:
            return None

    def host_address(self, name: str, family: Family) -> Address | None:
        try:
            if family is Family.INET:  # ipvsadm uses gethostbyname: IPv4 only
                return ipaddress.IPv4Address(socket.gethostbyname(name))
            infos = socket.getaddrinfo(name, None, socket.AF_INET6)
        except (OSError, UnicodeError):
            return None
        return ipaddress.IPv6Address(str(infos[0][4][0])) if infos else None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        proto = _SERVICE_DB_PROTO.get(protocol)
        if proto is None:
            return None
        try:
            return socket.getservbyname(name, proto)
        except OSError:
            return None


class NumericResolver:
    """Knows no names: formats numerically and refuses host and service names when parsing."""

    def host_name(self, address: Address) -> str | None:
        return None

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        return None

    def host_address(self, name: str, family: Family) -> Address | None:
        return None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        return None


# ---------------------------------------------------------------------------------------------
# ipvsadm's sort order.

T = TypeVar("T")


def _int32(value: int) -> int:
    """An unsigned difference read as a C ``int``, as ipvsadm's comparators do."""
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _words(address: Address | None) -> tuple[int, int, int, int]:
    """The address as libipvs's ``union nf_inet_addr``: four host-order 32-bit words."""
    if address is None:
        return (0, 0, 0, 0)
    if address.version == 4:
        return (int(address), 0, 0, 0)
    value = int(address)
    return (value >> 96, (value >> 64) & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF,
            value & 0xFFFFFFFF)


def _compare_addresses(family: Family, a: tuple[int, ...], b: tuple[int, ...]) -> int:
    if family is Family.INET6:
        for wa, wb in zip(a, b, strict=True):
            r = _int32(wa - wb)
            if r:
                return r
        return 0
    return _int32(a[0] - b[0])


def _service_sort_key(key: ServiceKey) -> tuple[int, ...]:
    return (key.fwmark, int(key.family), int(key.protocol), *_words(key.address), key.port)


def _compare_services(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """libipvs ``ipvs_cmp_services`` over ``_service_sort_key`` tuples."""
    r = _int32(a[0] - b[0])
    if r:
        return r
    if a[1] != b[1]:
        return a[1] - b[1]
    if a[2] != b[2]:
        return a[2] - b[2]
    r = _compare_addresses(Family(a[1]), a[3:7], b[3:7])
    return r if r else a[7] - b[7]


def _dest_sort_key(key: DestKey) -> tuple[int, ...]:
    return (int(Family.of(key.address)), *_words(key.address), key.port)


def _compare_dests(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """libipvs ``ipvs_cmp_dests``: the first entry's family decides how much address counts."""
    r = _compare_addresses(Family(a[0]), a[1:5], b[1:5])
    return r if r else a[5] - b[5]


def _glibc_merge_sort(items: list[tuple[tuple[int, ...], T]],
                      compare: Callable[[tuple[int, ...], tuple[int, ...]], int],
                      ) -> list[tuple[tuple[int, ...], T]]:
    """glibc 2.36 ``qsort``: top-down merge sort, first half ``n/2``, ties taken from the left."""
    n = len(items)
    if n <= 1:
        return list(items)
    left = _glibc_merge_sort(items[: n // 2], compare)
    right = _glibc_merge_sort(items[n // 2 :], compare)
    merged: list[tuple[tuple[int, ...], T]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if compare(left[i][0], right[j][0]) <= 0:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged


def _is_total_order(keys: Sequence[tuple[int, ...]], wrapping: Sequence[int],
                    family_index: int | None) -> bool:
    """True when no subtraction in the comparator can wrap, so it is a plain numeric order."""
    if not keys:
        return True
    if family_index is not None and len({k[family_index] for k in keys}) > 1:
        return False
    for index in wrapping:
        values = [k[index] for k in keys]
        if max(values) - min(values) >= 2**31:
            return False
    return True


def _ipvsadm_sorted(items: Sequence[T], sort_key: Callable[[T], tuple[int, ...]],
                    compare: Callable[[tuple[int, ...], tuple[int, ...]], int],
                    wrapping: Sequence[int], family_index: int | None) -> list[T]:
    keyed = [(sort_key(item), item) for item in items]
    if _is_total_order([k for k, _ in keyed], wrapping, family_index):
        # Keys are unique, so any correct sort gives the one order the merge sort gives.
        return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]
    return [item for _, item in _glibc_merge_sort(keyed, compare)]


def ipvsadm_order(table: Table) -> Table:
    """The table in the order ``ipvsadm -S``/``-L`` prints it, given it is in kernel dump order."""
    services = _ipvsadm_sorted(table.services, lambda vs: _service_sort_key(vs.key),
                               _compare_services, (0, 3, 4, 5, 6), None)
    return Table(tuple(
        VirtualService(vs.service, tuple(_ipvsadm_sorted(
            vs.dests, lambda d: _dest_sort_key(d.key), _compare_dests, (1, 2, 3, 4), 0)))
        for vs in services), table.timeouts)


# ---------------------------------------------------------------------------------------------
# Formatting.

_FORWARD_SWITCH = {Forward.MASQ: "-m", Forward.TUNNEL: "-i", Forward.LOCAL: "-g",
                   Forward.ROUTE: "-g"}
_FORWARD_NAME = {Forward.MASQ: "Masq", Forward.LOCAL: "Local", Forward.TUNNEL: "Tunnel",
                 Forward.ROUTE: "Route"}
_SERVICE_SWITCH = {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}
_CSUM_OPTION = {TUN_NOCSUM: "--tun-nocsum", TUN_CSUM: "--tun-csum",
                TUN_REMCSUM: "--tun-remcsum"}
_CSUM_SHORT = {TUN_NOCSUM: "-c", TUN_CSUM: "+c", TUN_REMCSUM: "r+c"}
_NAME_BUFFER = 59  # ipvsadm formats "host:port" into a 60-byte buffer


def format_address(address: Address) -> str:
    """Text as the C library's ``inet_ntop`` writes it: ``::1.2.3.4`` where Python has
    ``::102:304``."""
    if address.version == 6:
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def _endpoint(address: Address, port: int, protocol: Protocol,
              resolver: NameResolver | None) -> str:
    host = (resolver.host_name(address) if resolver else None) or format_address(address)
    service = (resolver.service_name(port, protocol) if resolver else None) or str(port)
    text = f"{host}:{service}" if address.version == 4 else f"[{host}]:{service}"
    return text[:_NAME_BUFFER]


@dataclass(frozen=True, slots=True)
class _Style:
    resolver: NameResolver | None  # None: numeric, as with -n
    compat: bool  # print exactly what ipvsadm-save prints, lossy cases included


_NUMERIC = _Style(None, compat=False)


def _service_ref(key: ServiceKey, style: _Style) -> str:
    if key.address is None:
        mark = _int32(key.fwmark) if style.compat else key.fwmark
        return f"-f {mark} -6" if key.family is Family.INET6 else f"-f {mark}"
    return f"{_SERVICE_SWITCH[key.protocol]} " + _endpoint(key.address, key.port, key.protocol,
                                                         style.resolver)


def _sched_flag_names(service: Service, complete: bool) -> list[str]:
    flags = service.sched_flags
    names: list[str] = []
    if service.scheduler in ("sh", "mh"):
        if flags & SVC_F_SCHED1:
            names.append(f"{service.scheduler}-fallback")
        if flags & SVC_F_SCHED2:
            names.append(f"{service.scheduler}-port")
        if complete and flags & SVC_F_SCHED3:
            names.append("flag-3")
    else:
        names.extend(f"flag-{n}" for n, bit in enumerate(
            (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3), start=1) if flags & bit)
    return names


def _has_sched_flags(service: Service) -> bool:
    return bool(service.sched_flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3))


def _netmask_text(key: ServiceKey, persistence: Persistence) -> str | None:
    mask = persistence.netmask
    if key.family is Family.INET6:
        return None if mask is None or mask == HOST_PREFIX_V6 else str(mask)
    if mask is None or mask == HOST_NETMASK_V4:
        return None
    return str(ipaddress.IPv4Address(mask))


def _service_options(service: Service, style: _Style) -> str:
    parts = [f"-s {service.scheduler}"]
    if service.persistence is not None:
        parts.append(f"-p {service.persistence.timeout}")
        mask = _netmask_text(service.key, service.persistence)
        if mask is not None:
            parts.append(f"-M {mask}")
    if service.pe_name:
        parts.append(f"--pe {service.pe_name}")
    if service.onepacket:
        parts.append("-o")
    if _has_sched_flags(service):
        parts.append("-b " + ",".join(_sched_flag_names(service, not style.compat)))
    return " ".join(parts)


def _dest_options(dest: Dest, style: _Style) -> str:
    parts = [_FORWARD_SWITCH[dest.forward], f"-w {dest.weight}"]
    if dest.forward is Forward.TUNNEL:
        tunnel = dest.tunnel or Tunnel()
        parts.append(f"--tun-type {tunnel.type.name.lower()}")
        if tunnel.type is TunnelType.GUE:
            parts.append(f"--tun-port {tunnel.port}")
        if tunnel.type is not TunnelType.IPIP:
            parts.append(_CSUM_OPTION[tunnel.csum])
    if not style.compat:
        if dest.upper_threshold:
            parts.append(f"-x {dest.upper_threshold}")
        if dest.lower_threshold:
            parts.append(f"-y {dest.lower_threshold}")
    return " ".join(parts)


def _dest_ref(service: ServiceKey, dest: DestKey, style: _Style) -> str:
    # A fwmark service has no protocol (libipvs reads 0), so its ports are never named.
    return "-r " + _endpoint(dest.address, dest.port, service.protocol, style.resolver)


def _timeouts_line(timeouts: Timeouts) -> str:
    return f"--set {timeouts.tcp} {timeouts.tcpfin} {timeouts.udp}"


def format_table(table: Table, *, resolve: bool = False, compat: bool = False,
                 sort: bool = True, resolver: NameResolver | None = None) -> str:
    """The table as ``ipvsadm-save -n`` prints it (``ipvsadm-save`` with ``resolve``).

    ``sort`` applies ipvsadm's own ordering, which is what makes the output byte-identical for a
    table in kernel dump order; ``sort=False`` keeps the table's order. Unless ``compat``, the
    thresholds and non-default timeouts that ipvsadm-save drops are added.
    """
    style = _Style((resolver or SystemResolver()) if resolve else None, compat)
    ordered = ipvsadm_order(table) if sort else table
    lines: list[str] = []
    if not compat and table.timeouts is not None and table.timeouts != KERNEL_DEFAULT_TIMEOUTS:
        lines.append(_timeouts_line(table.timeouts))
    for vs in ordered.services:
        ref = _service_ref(vs.key, style)
        lines.append(f"-A {ref} {_service_options(vs.service, style)}")
        lines.extend(f"-a {ref} {_dest_ref(vs.key, d.key, style)} {_dest_options(d, style)}"
                     for d in vs.dests)
    return "".join(line + "\n" for line in lines)


def format_op(op: Op) -> str:
    """An ipvsadm command line (without ``ipvsadm``) doing what ``op`` does."""
    style = _NUMERIC
    match op:
        case AddService(service) | EditService(service):
            command = "-A" if isinstance(op, AddService) else "-E"
            return f"{command} {_service_ref(service.key, style)} " \
                   f"{_service_options(service, style)}"
        case DeleteService(key):
            return f"-D {_service_ref(key, style)}"
        case AddDest(key, dest) | EditDest(key, dest):
            command = "-a" if isinstance(op, AddDest) else "-e"
            return f"{command} {_service_ref(key, style)} {_dest_ref(key, dest.key, style)} " \
                   f"{_dest_options(dest, style)}"
        case DeleteDest(key, dest_key):
            return f"-d {_service_ref(key, style)} {_dest_ref(key, dest_key, style)}"
        case SetTimeouts(timeouts):
            return _timeouts_line(timeouts)
    raise TypeError(f"not a plan operation: {op!r}")


# --- ipvsadm -L ------------------------------------------------------------------------------


def _large_number(value: int, exact: bool) -> str:
    if exact:
        digits = str(value)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    if value < 100_000_000:
        return f"{value:9d}"
    for limit, divisor, unit in ((10**9, 10**3, "K"), (10**11, 10**6, "M"),
                                 (10**14, 10**9, "G")):
        if value < limit:
            return f"{value // divisor:8d}{unit}"
    return f"{value // 10**12:8d}T"


def _tunnel_info(dest: Dest) -> str:
    if dest.forward is not Forward.TUNNEL:
        return "n/a"
    tunnel = dest.tunnel or Tunnel()
    name = tunnel.type.name.lower()
    if tunnel.type is TunnelType.GUE:
        text = f"{name}:{tunnel.port}:{_CSUM_SHORT[tunnel.csum]}"
    elif tunnel.type is TunnelType.GRE:
        text = f"{name}:{_CSUM_SHORT[tunnel.csum]}"
    else:
        text = name
    return text[:15]  # ipvsadm's 16-byte buffer


ListingView = Literal["plain", "stats", "rate", "thresholds", "persistent-conn", "tun-info"]

_TITLES: dict[ListingView, str] = {
    "stats": "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"),
    "rate": "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"),
    "thresholds": "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"),
    "persistent-conn": "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"),
    "tun-info": "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           "
                "Forward TunnelInfo    Weight ActiveConn InActConn\n",
    "plain": "Prot LocalAddress:Port Scheduler Flags\n"
             "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
}


def _listing_name(key: ServiceKey, resolver: NameResolver | None) -> str:
    if key.address is None:
        suffix = " IPv6" if key.family is Family.INET6 else ""
        return f"FWM  {_int32(key.fwmark)}{suffix}"
    name = f"{key.protocol.name:<4} {_endpoint(key.address, key.port, key.protocol, resolver)}"
    return name if key.family is Family.INET6 else name[:33]


def _traffic(stats: ServiceStats, rate: bool, exact: bool) -> str:
    values = ((stats.cps, stats.inpps, stats.outpps, stats.inbps, stats.outbps) if rate else
              (stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes))
    return "".join(_large_number(v, exact) for v in values)


def _service_listing_line(service: Service, view: ListingView, exact: bool,
                          resolver: NameResolver | None) -> str:
    name = _listing_name(service.key, resolver)
    if view in ("stats", "rate"):
        return f"{name:<33}" + _traffic(service.stats, view == "rate", exact)
    text = f"{name} {service.scheduler}"
    if _has_sched_flags(service):
        text += " (" + ",".join(_sched_flag_names(service, complete=False)) + ")"
    if service.persistence is not None:
        text += f" persistent {service.persistence.timeout}"
        mask = _netmask_text(service.key, service.persistence)
        if mask is not None:
            text += f" mask {mask}"
        if service.pe_name:
            text += f" pe {service.pe_name}"
    if service.onepacket:
        text += " ops"
    return text


def _dest_listing_line(service: ServiceKey, dest: Dest, view: ListingView, exact: bool,
                       resolver: NameResolver | None) -> str:
    name = _endpoint(dest.key.address, dest.key.port, service.protocol, resolver)
    if dest.key.address.version == 4:
        name = name[:28]
    s = dest.stats
    if view == "stats":
        return f"  -> {name:<28}" + _traffic(s.traffic, False, exact)
    if view == "rate":
        t = s.traffic
        return (f"  -> {name:<28} {t.cps:8d} {t.inpps:8d} {t.outpps:8d}"
                + _large_number(t.inbps, exact) + _large_number(t.outbps, exact))
    if view == "thresholds":
        return (f"  -> {name:<28} {dest.upper_threshold:<10} {dest.lower_threshold:<10} "
                f"{s.active:<10} {s.inactive:<10}")
    if view == "persistent-conn":
        return (f"  -> {name:<28} {dest.weight:<9} {s.persistent:<11} {s.active:<10} "
                f"{s.inactive:<10}")
    forward = _FORWARD_NAME[dest.forward]
    if view == "tun-info":
        return (f"  -> {name:<28} {forward:<7} {_tunnel_info(dest):<13} {dest.weight:<6} "
                f"{s.active:<10} {s.inactive:<10}")
    return f"  -> {name:<28} {forward:<7} {dest.weight:<6} {s.active:<10} {s.inactive:<10}"


def format_listing(table: Table, *, stats: bool = False, rate: bool = False,
                   thresholds: bool = False, persistent_conn: bool = False,
                   tun_info: bool = False, exact: bool = False, version: str | None = None,
                   conn_table_size: int | None = None, resolve: bool = False,
                   resolver: NameResolver | None = None, sort: bool = True) -> str:
    """What ``ipvsadm -Ln`` prints (with ``--stats``, ``--rate``, ... as ipvsadm ranks them).

    The ``IP Virtual Server version 1.2.1 (size=4096)`` header needs the kernel's ``version``
    and ``conn_table_size``; without them it is left out.
    """
    view: ListingView = ("stats" if stats else "rate" if rate else
                         "thresholds" if thresholds else
                         "persistent-conn" if persistent_conn else
                         "tun-info" if tun_info else "plain")
    names = (resolver or SystemResolver()) if resolve else None
    out: list[str] = []
    if version is not None and conn_table_size is not None:
        out.append(f"IP Virtual Server version {version} (size={conn_table_size})\n")
    out.append(_TITLES[view])
    for vs in (ipvsadm_order(table) if sort else table).services:
        out.append(_service_listing_line(vs.service, view, exact, names) + "\n")
        out.extend(_dest_listing_line(vs.key, d, view, exact, names) + "\n" for d in vs.dests)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Parsing.


class _LineError(Exception):
    """What is wrong with the line being parsed; ``parse`` adds where."""


Arity = Literal["none", "required", "optional"]


@dataclass(frozen=True, slots=True)
class _Option:
    group: str  # ipvsadm's option slot: a second option of one slot is an error
    arity: Arity


_COMMANDS = {
    "-A": "add-service", "--add-service": "add-service",
    "-E": "edit-service", "--edit-service": "edit-service",
    "-D": "delete-service", "--delete-service": "delete-service",
    "-a": "add-server", "--add-server": "add-server",
    "-e": "edit-server", "--edit-server": "edit-server",
    "-d": "delete-server", "--delete-server": "delete-server",
    "-C": "clear", "--clear": "clear",
    "--set": "set",
}

_OPTION_TABLE: tuple[tuple[tuple[str, ...], str, Arity], ...] = (
    (("-t", "--tcp-service", "-u", "--udp-service", "--sctp-service", "-f",
      "--fwmark-service"), "service", "required"),
    (("-s", "--scheduler"), "scheduler", "required"),
    (("-p", "--persistent"), "persistent", "optional"),
    (("-M", "--netmask"), "netmask", "required"),
    (("-r", "--real-server"), "real-server", "required"),
    (("-g", "--gatewaying", "-m", "--masquerading", "-i", "--ipip"), "forward", "none"),
    (("-w", "--weight"), "weight", "required"),
    (("-x", "--u-threshold"), "u-threshold", "required"),
    (("-y", "--l-threshold"), "l-threshold", "required"),
    (("-6", "--ipv6"), "ipv6", "none"),
    (("-o", "--ops"), "ops", "none"),
    (("--pe",), "pe", "required"),
    (("-b", "--sched-flags"), "sched-flags", "required"),
    (("--tun-type",), "tun-type", "required"),
    (("--tun-port",), "tun-port", "required"),
    (("--tun-nocsum",), "tun-nocsum", "none"),
    (("--tun-csum",), "tun-csum", "none"),
    (("--tun-remcsum",), "tun-remcsum", "none"),
)
_OPTIONS = {spelling: _Option(group, arity)
            for spellings, group, arity in _OPTION_TABLE for spelling in spellings}

_SERVICE_OPTIONS = {"service", "scheduler", "persistent", "netmask", "ops", "pe", "sched-flags",
                    "ipv6"}
_SERVER_OPTIONS = {"service", "real-server", "forward", "weight", "u-threshold", "l-threshold",
                   "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum", "ipv6"}
_ALLOWED: dict[str, set[str]] = {
    "add-service": _SERVICE_OPTIONS, "edit-service": _SERVICE_OPTIONS,
    "delete-service": {"service", "ipv6"},
    "add-server": _SERVER_OPTIONS, "edit-server": _SERVER_OPTIONS,
    "delete-server": {"service", "real-server", "ipv6"},
    "clear": set(), "set": set(),
}
_PROTOCOL_BY_SWITCH = {"-t": Protocol.TCP, "--tcp-service": Protocol.TCP,
                       "-u": Protocol.UDP, "--udp-service": Protocol.UDP,
                       "--sctp-service": Protocol.SCTP}
_FORWARD_BY_SWITCH = {"-g": Forward.ROUTE, "--gatewaying": Forward.ROUTE,
                      "-m": Forward.MASQ, "--masquerading": Forward.MASQ,
                      "-i": Forward.TUNNEL, "--ipip": Forward.TUNNEL}
_TUNNEL_BY_NAME = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}
_TUNNEL_GROUPS = ("tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
_CSUM_BY_GROUP = {"tun-nocsum": TUN_NOCSUM, "tun-csum": TUN_CSUM, "tun-remcsum": TUN_REMCSUM}
# ipvsadm's tunnel_types_v_options: which tunnel options each type forbids
_TUNNEL_FORBIDS = {TunnelType.IPIP: ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"),
                   TunnelType.GUE: (), TunnelType.GRE: ("tun-port", "tun-remcsum")}


@dataclass(slots=True)
class _Command:
    name: str
    # option group -> (the spelling used, its argument)
    options: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)

    def has(self, group: str) -> bool:
        return group in self.options

    def spelling(self, group: str) -> str:
        return self.options[group][0]

    def value(self, group: str) -> str | None:
        return self.options[group][1] if group in self.options else None


def _scan(tokens: list[str]) -> _Command:
    """Split a line into its command and options, with popt's spellings: ``--opt=value``,
    ``--opt value``, ``-ovalue``, ``-o value``; ``-p`` takes a value only if one follows."""
    if tokens[0] not in _COMMANDS:
        raise _LineError(f"a line must start with a command (-A, -E, -D, -a, -e, -d, -C or "
                         f"--set), not {tokens[0]!r}")
    command = _Command(_COMMANDS[tokens[0]])
    options = command.options
    count = len(tokens)
    i = 1
    while i < count:
        token = tokens[i]
        i += 1
        option = _OPTIONS.get(token)
        value: str | None = None
        if option is not None:  # the usual case: the option alone, as ipvsadm-save writes it
            spelling = token
        elif token[:1] != "-" or token == "-":
            command.arguments.append(token)
            continue
        else:
            if token.startswith("--"):
                spelling, has_value, attached = token.partition("=")
                value = attached if has_value else None
            else:
                spelling, value = token[:2], token[2:] or None
            if spelling in _COMMANDS:
                raise _LineError(f"more than one command: {tokens[0]!r} and {spelling!r}")
            option = _OPTIONS.get(spelling)
            if option is None:
                raise _LineError(f"unknown option {token!r}")
        if option.arity == "none":
            if value is not None:
                raise _LineError(f"option {spelling!r} takes no argument")
        elif value is None:
            if option.arity == "required":
                if i >= count:
                    raise _LineError(f"option {spelling!r} needs an argument")
                value = tokens[i]
                i += 1
            elif i < count and tokens[i][:1] != "-":
                value = tokens[i]
                i += 1
        if option.group in options:
            first = options[option.group][0]
            raise _LineError(f"option {spelling!r} given twice" if first == spelling else
                             f"option {spelling!r} conflicts with {first!r}")
        options[option.group] = (spelling, value)
    allowed = _ALLOWED[command.name]
    if not allowed.issuperset(options):
        spelling = next(options[g][0] for g in options if g not in allowed)
        raise _LineError(f"option {spelling!r} is not allowed with {tokens[0]} "
                         f"({command.name})")
    if command.name == "set":
        if len(command.arguments) != 3:
            raise _LineError("--set needs exactly three timeouts: tcp tcpfin udp")
    elif command.arguments:
        raise _LineError(f"unexpected argument {command.arguments[0]!r}")
    return command


def _number(text: str, what: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise _LineError(f"bad {what} {text!r} (an integer from {low} to {high})")
    return int(text)


def _looks_numeric(text: str) -> bool:
    return all(c in "0123456789." for c in text) or text.lower().startswith("0x")


def _ip_literal(text: str) -> Address | None:
    """A strict IPv4 dotted quad or IPv6 literal, read the fast way (``inet_pton``)."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        return None
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(packed)
    return ipaddress.IPv6Address(packed)


def _parse_host(text: str, bracketed: bool, resolver: NameResolver) -> Address:
    address = _ip_literal(text)
    if address is not None:
        if bracketed and address.version != 6:
            raise _LineError(f"bad address {text!r}: only IPv6 addresses go in brackets")
        return address
    if not text or _looks_numeric(text) or ":" in text:
        raise _LineError(f"bad address {text!r}")
    resolved = resolver.host_address(text, Family.INET6 if bracketed else Family.INET)
    if resolved is None:
        raise _LineError(f"bad address {text!r}: not an IP address and no such host name")
    return resolved


def _parse_port(text: str, protocol: Protocol, resolver: NameResolver) -> int:
    if text.isascii() and text.isdigit():
        return _number(text, "port", 0, 65535)
    port = resolver.service_port(text, protocol) if text else None
    if port is None:
        raise _LineError(f"bad port {text!r}: not a number from 0 to 65535 and no such "
                         f"{protocol.name.lower()} service name")
    return port


def _parse_endpoint(text: str, protocol: Protocol, what: str,
                    resolver: NameResolver) -> tuple[Address, int | None]:
    """ipvsadm's ``parse_service``: ``addr``, ``addr:port``, ``[addr6]:port`` or a bare IPv6
    address; ports and hosts may be names."""
    if text.isdigit():
        raise _LineError(f"bad {what} {text!r}: a port without an address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise _LineError(f"bad {what} {text!r}: write [IPv6-address]:port")
        return _parse_host(host, True, resolver), _parse_port(rest[1:], protocol, resolver)
    if text.count(":") > 1:  # a bare IPv6 address, without a port
        address = _ip_literal(text)
        if address is None:
            raise _LineError(f"bad {what} {text!r}: write [IPv6-address]:port")
        return address, None
    host, colon, port = text.rpartition(":")
    if not colon:
        return _parse_host(text, False, resolver), None
    return _parse_host(host, False, resolver), _parse_port(port, protocol, resolver)


def _parse_fwmark(text: str) -> int:
    # ipvsadm-save prints marks above 2**31-1 as negative numbers (%d): take those back too.
    digits = text[1:] if text.startswith("-") else text
    if digits.isascii() and digits.isdigit():
        value = -int(digits) if text.startswith("-") else int(digits)
        if 1 <= value <= MAX_FWMARK:
            return value
        if -(2**31) <= value <= -1:
            return value & 0xFFFFFFFF
    raise _LineError(f"bad fwmark {text!r} (an integer from 1 to {MAX_FWMARK})")


def _service_key(command: _Command, resolver: NameResolver) -> ServiceKey:
    if not command.has("service"):
        raise _LineError("no virtual service: give -t, -u, --sctp-service or -f")
    spelling = command.spelling("service")
    text = command.value("service") or ""
    if spelling in ("-f", "--fwmark-service"):
        family = Family.INET6 if command.has("ipv6") else Family.INET
        return ServiceKey.mark(_parse_fwmark(text), family)
    if command.has("ipv6"):
        raise _LineError(f"{command.spelling('ipv6')} is only for fwmark services (-f)")
    protocol = _PROTOCOL_BY_SWITCH[spelling]
    address, port = _parse_endpoint(text, protocol, "virtual service", resolver)
    return ServiceKey.virtual(protocol, address, port or 0)


def _parse_netmask(text: str, family: Family) -> int | None:
    if family is Family.INET6:
        prefix = _number(text, "IPv6 netmask", 1, 128)
        return None if prefix == HOST_PREFIX_V6 else prefix
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        raise _LineError(f"bad netmask {text!r} (a dotted IPv4 mask)") from None
    return None if mask == HOST_NETMASK_V4 else mask


def _parse_sched_flags(text: str, scheduler: str) -> int:
    flags = 0
    bits = {"fallback": SVC_F_SCHED1, "port": SVC_F_SCHED2}
    for name in text.split(","):
        generic = {"flag-1": SVC_F_SCHED1, "flag-2": SVC_F_SCHED2, "flag-3": SVC_F_SCHED3}
        prefix, _, kind = name.partition("-")
        if name in generic:
            flags |= generic[name]
        elif prefix in ("sh", "mh") and kind in bits:
            if scheduler != prefix:
                raise _LineError(f"scheduler flag {name!r} needs scheduler {prefix!r}, "
                                 f"not {scheduler!r}")
            flags |= bits[kind]
        else:
            raise _LineError(f"unknown scheduler flag {name!r} (known: flag-1, flag-2, flag-3,"
                             f" sh-fallback, sh-port, mh-fallback, mh-port)")
    return flags


def _service(command: _Command, key: ServiceKey) -> Service:
    scheduler = command.value("scheduler") or DEFAULT_SCHEDULER
    if scheduler not in SCHEDULERS:
        raise _LineError(f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})")
    persistence = None
    if command.has("persistent"):
        timeout_text = command.value("persistent")
        timeout = (DEFAULT_PERSISTENT_TIMEOUT if timeout_text is None else
                   _number(timeout_text, "persistence timeout", 1, MAX_TIMEOUT))
        netmask_text = command.value("netmask")
        persistence = Persistence(timeout, None if netmask_text is None else
                                  _parse_netmask(netmask_text, key.family))
    else:
        if command.has("netmask"):  # ipvsadm accepts it; without -p it means nothing
            _parse_netmask(command.value("netmask") or "", key.family)
        if not key.is_fwmark and key.port == 0:
            raise _LineError("port 0 is only allowed for a persistent service (-p)")
    pe_name = command.value("pe")
    if pe_name is not None and pe_name not in PERSISTENCE_ENGINES:
        raise _LineError(f"unknown persistence engine {pe_name!r} "
                         f"(known: {', '.join(PERSISTENCE_ENGINES)})")
    onepacket = command.has("ops")
    if onepacket and not key.is_fwmark and key.protocol is not Protocol.UDP:
        raise _LineError("-o (one-packet scheduling) is only for UDP and fwmark services")
    flags_text = command.value("sched-flags")
    sched_flags = 0 if flags_text is None else _parse_sched_flags(flags_text, scheduler)
    return Service(key, scheduler=scheduler, sched_flags=sched_flags, onepacket=onepacket,
                   persistence=persistence, pe_name=pe_name)


def _dest_key(command: _Command, service: ServiceKey, resolver: NameResolver,
              forward: Forward | None) -> DestKey:
    """The ``-r`` real server; ``forward`` is None on a ``-d`` line, where it plays no part."""
    if not command.has("real-server"):
        raise _LineError("no real server: give -r address[:port]")
    # ipvsadm resolves a fwmark service's port names as tcp
    protocol = Protocol.TCP if service.is_fwmark else service.protocol
    address, port = _parse_endpoint(command.value("real-server") or "", protocol,
                                     "real server", resolver)
    if port is None or (not service.is_fwmark and forward in (Forward.ROUTE, Forward.TUNNEL)):
        # as ipvsadm: no port means the service's; DR and tunnels keep the service's port
        port = service.port
    if (forward is not None and forward is not Forward.TUNNEL
            and Family.of(address) is not service.family):
        raise _LineError("a real server of another address family needs -i (tunneling)")
    return DestKey(address, port)


def _tunnel(command: _Command, forward: Forward) -> Tunnel | None:
    given = [g for g in _TUNNEL_GROUPS if g in command.options]
    if forward is not Forward.TUNNEL:
        if given:
            raise _LineError(f"{command.spelling(given[0])} needs -i (tunneling)")
        return None
    type_name = command.value("tun-type") or "ipip"
    if type_name not in _TUNNEL_BY_NAME:
        raise _LineError(f"unknown tunnel type {type_name!r} (known: ipip, gue, gre)")
    tunnel_type = _TUNNEL_BY_NAME[type_name]
    for group in _TUNNEL_FORBIDS[tunnel_type]:
        if command.has(group):
            raise _LineError(f"{command.spelling(group)} is not allowed with tunnel type "
                             f"{type_name}")
    port = 0
    if tunnel_type is TunnelType.GUE:
        port_text = command.value("tun-port")
        if port_text is None:
            raise _LineError("tunnel type gue needs --tun-port")
        port = _number(port_text, "tunnel port", 1, 65535)
    csums = [g for g in _CSUM_BY_GROUP if command.has(g)]
    if len(csums) > 1:
        raise _LineError(f"{command.spelling(csums[1])} conflicts with "
                         f"{command.spelling(csums[0])}")
    return Tunnel(tunnel_type, port, _CSUM_BY_GROUP[csums[0]] if csums else TUN_NOCSUM)


def _dest(command: _Command, service: ServiceKey, resolver: NameResolver) -> Dest:
    forward = (_FORWARD_BY_SWITCH[command.spelling("forward")] if command.has("forward")
               else Forward.ROUTE)
    key = _dest_key(command, service, resolver, forward)
    weight_text = command.value("weight")
    upper_text = command.value("u-threshold")
    lower_text = command.value("l-threshold")
    upper = 0 if upper_text is None else _number(upper_text, "upper threshold", 0, MAX_THRESHOLD)
    lower = 0 if lower_text is None else _number(lower_text, "lower threshold", 0, MAX_THRESHOLD)
    if lower > upper:  # the kernel refuses this with ERANGE
        raise _LineError(f"lower threshold {lower} is above the upper threshold {upper}")
    return Dest(
        key,
        weight=1 if weight_text is None else _number(weight_text, "weight", 0, MAX_WEIGHT),
        forward=forward,
        tunnel=_tunnel(command, forward),
        upper_threshold=upper,
        lower_threshold=lower,
    )


@dataclass(slots=True)
class _Entry:
    service: Service
    line_no: int
    dests: dict[DestKey, tuple[Dest, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _TableBuilder:
    resolver: NameResolver
    services: dict[ServiceKey, _Entry] = field(default_factory=dict)
    timeouts: Timeouts | None = None
    timeouts_line: int = 0
    # each -a line names its service again: read each spelling once
    keys: dict[tuple[tuple[str, str | None] | None, bool], ServiceKey] = field(
        default_factory=dict)

    def apply(self, command: _Command, line_no: int) -> None:
        if command.name == "set":
            self._set(command, line_no)
        elif command.name == "clear":
            if self.services:
                raise _LineError(f"-C (clear) would discard the {len(self.services)} "
                                 f"service(s) defined above; it is only allowed before them")
        else:
            ref = (command.options.get("service"), command.has("ipv6"))
            key = self.keys.get(ref)
            if key is None:
                key = self.keys[ref] = _service_key(command, self.resolver)
            if command.name.endswith("-service"):
                self._service_command(command, key, line_no)
            else:
                self._server_command(command, self._entry(key), line_no)

    def _set(self, command: _Command, line_no: int) -> None:
        if self.timeouts is not None:
            raise _LineError(f"a second --set line (the first is line {self.timeouts_line})")
        tcp, tcpfin, udp = (_number(a, "timeout", 0, MAX_TIMEOUT) for a in command.arguments)
        self.timeouts, self.timeouts_line = Timeouts(tcp, tcpfin, udp), line_no

    def _entry(self, key: ServiceKey) -> _Entry:
        entry = self.services.get(key)
        if entry is None:
            raise _LineError(f"service {key} is not defined: no -A line for it above")
        return entry

    def _service_command(self, command: _Command, key: ServiceKey, line_no: int) -> None:
        if command.name == "add-service":
            if key in self.services:
                raise _LineError(f"duplicate service {key} (first defined on line "
                                 f"{self.services[key].line_no})")
            self.services[key] = _Entry(_service(command, key), line_no)
        elif command.name == "edit-service":  # as ipvsadm -E: unnamed options get defaults
            self._entry(key).service = _service(command, key)
        else:
            self._entry(key)
            del self.services[key]

    def _server_command(self, command: _Command, entry: _Entry, line_no: int) -> None:
        key = entry.service.key
        if command.name == "delete-server":
            dest_key = _dest_key(command, key, self.resolver, None)
            if dest_key not in entry.dests:
                raise _LineError(f"real server {dest_key} of {key} is not defined above")
            del entry.dests[dest_key]
            return
        dest = _dest(command, key, self.resolver)
        known = entry.dests.get(dest.key)
        if command.name == "add-server":
            if known is not None:
                raise _LineError(f"duplicate real server {dest.key} of {key} (first defined on"
                                 f" line {known[1]})")
            entry.dests[dest.key] = (dest, line_no)
        else:  # as ipvsadm -e: unnamed options get defaults
            if known is None:
                raise _LineError(f"real server {dest.key} of {key} is not defined above")
            entry.dests[dest.key] = (dest, known[1])

    def table(self) -> Table:
        return Table(tuple(VirtualService(e.service, tuple(d for d, _ in e.dests.values()))
                           for e in self.services.values()), self.timeouts)


def parse(text: str, source: str = "<stdin>", *, resolver: NameResolver | None = None) -> Table:
    """Read a save file: what ``ipvsadm-save [-n]`` prints, plus ``--set`` and edit lines.

    Lines run in order as ipvsadm-restore runs them on a flushed table: ``-E``/``-e`` replace an
    entry defined above (options left out get ipvsadm's defaults), ``-D``/``-d`` remove one,
    ``-C`` is accepted only before the first rule. Blank lines and lines starting with ``#`` are
    skipped, and a leading ``ipvsadm`` word is ignored. Services and real servers keep the
    file's order. Host and port names are looked up with ``resolver`` (default: the system's).
    """
    builder = _TableBuilder(resolver or SystemResolver())
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens and tokens[0] == "ipvsadm":
            tokens = tokens[1:]
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            builder.apply(_scan(tokens), line_no)
        except _LineError as exc:
            raise SaveFormatError(source, line_no, line, str(exc)) from None
    return builder.table()


# ---------------------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new, whole.

    The new file keeps the mode of the one it replaces, or gets 0644.
    """
    target = Path(path)
    directory = target.parent
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
