"""A table as ``ipvsadm-save -n`` prints it (``ipvsadm-save`` with names), and plan operations
as ipvsadm command lines.

Facts taken from ipvsadm 1.31 and checked against it in the VM:

- ``LOCAL`` forwarding (kernel code 1) is printed as ``-g``: ipvsadm has no switch for it.
- A tunnel destination always gets ``--tun-type``; gue/gre always get a checksum option.
- fwmarks are printed with ``%d``: mark 4294967295 appears as ``-f -1``.
- A bare ``-p`` means 360 s (the manual page says 300; the code says ``6*60``).

ipvsadm-save drops thresholds and timeouts. Unless ``compat`` is asked for, ``format_table``
adds them (``-x``/``-y`` and a ``--set`` line), which ipvsadm-restore reads back. It also
prints large fwmarks unsigned and an ``sh``/``mh`` ``flag-3`` bit, the two cases where
ipvsadm-save prints something ipvsadm-restore cannot read.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import assert_never

from lvsd.ipvsadm.names import (
    COMMAND_OF_OP,
    FORWARD_OPTIONS,
    SERVICE_OPTIONS,
    TUNNEL_NAMES,
    has_sched_flags,
    sched_flag_names,
    tunnel_csum_option,
)
from lvsd.ipvsadm.order import dests_in_ipvsadm_order, int32, services_in_ipvsadm_order
from lvsd.ipvsadm.resolve import NameResolver, SystemResolver
from lvsd.model import (
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    KERNEL_DEFAULT_TIMEOUTS,
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
    SetTimeouts,
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
)
from lvsd.pacing import Steps, finish

_NAME_BUFFER = 59  # ipvsadm formats "host:port" into a 60-byte buffer


def format_address(address: Address) -> str:
    """Text as the C library's ``inet_ntop`` writes it: ``::1.2.3.4`` where Python has
    ``::102:304``."""
    if address.version == 6:
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def endpoint(address: Address, port: int, protocol: Protocol,
             resolver: NameResolver | None) -> str:
    """``host:port`` or ``[host]:port`` as ipvsadm prints it; numeric without a resolver."""
    host = (resolver.host_name(address) if resolver else None) or format_address(address)
    service = (resolver.service_name(port, protocol) if resolver else None) or str(port)
    text = f"{host}:{service}" if address.version == 4 else f"[{host}]:{service}"
    return text[:_NAME_BUFFER]


def netmask_text(key: ServiceKey, persistence: Persistence) -> str | None:
    """The ``-M`` value, or None where ipvsadm prints none (one client address)."""
    mask = persistence.netmask
    if key.family is Family.INET6:
        return None if mask is None or mask == HOST_PREFIX_V6 else str(mask)
    if mask is None or mask == HOST_NETMASK_V4:
        return None
    return str(ipaddress.IPv4Address(mask))


@dataclass(frozen=True, slots=True)
class _Style:
    resolver: NameResolver | None  # None: numeric, as with -n
    compat: bool  # print exactly what ipvsadm-save prints, lossy cases included


_NUMERIC = _Style(None, compat=False)


def _service_ref(key: ServiceKey, style: _Style) -> str:
    if key.address is None:
        mark = int32(key.fwmark) if style.compat else key.fwmark
        option = SERVICE_OPTIONS[Protocol.FWMARK]
        return f"{option} {mark} -6" if key.family is Family.INET6 else f"{option} {mark}"
    return f"{SERVICE_OPTIONS[key.protocol]} " + endpoint(key.address, key.port, key.protocol,
                                                         style.resolver)


def _service_options(service: Service, style: _Style) -> str:
    parts = [f"-s {service.scheduler}"]
    if service.persistence is not None:
        parts.append(f"-p {service.persistence.timeout}")
        mask = netmask_text(service.key, service.persistence)
        if mask is not None:
            parts.append(f"-M {mask}")
    if service.pe_name:
        parts.append(f"--pe {service.pe_name}")
    if service.onepacket:
        parts.append("-o")
    if has_sched_flags(service.sched_flags):
        names = sched_flag_names(service.scheduler, service.sched_flags,
                                 complete=not style.compat)
        parts.append("-b " + ",".join(names))
    return " ".join(parts)


def _dest_options(dest: Dest, style: _Style) -> str:
    parts = [FORWARD_OPTIONS[dest.forward], f"-w {dest.weight}"]
    if dest.forward is Forward.TUNNEL:
        tunnel = dest.tunnel or Tunnel()
        parts.append(f"--tun-type {TUNNEL_NAMES[tunnel.type]}")
        if tunnel.type is TunnelType.GUE:
            parts.append(f"--tun-port {tunnel.port}")
        if tunnel.type is not TunnelType.IPIP:
            parts.append(tunnel_csum_option(tunnel.csum))
    if not style.compat:
        if dest.upper_threshold:
            parts.append(f"-x {dest.upper_threshold}")
        if dest.lower_threshold:
            parts.append(f"-y {dest.lower_threshold}")
    return " ".join(parts)


def _dest_ref(service: ServiceKey, dest: DestKey, style: _Style) -> str:
    # A fwmark service has no protocol (libipvs reads 0), so its ports are never named.
    return "-r " + endpoint(dest.address, dest.port, service.protocol, style.resolver)


def _timeouts_args(timeouts: Timeouts) -> str:
    return f"{timeouts.tcp} {timeouts.tcpfin} {timeouts.udp}"


def format_table(table: Table, *, resolve: bool = False, compat: bool = False,
                 sort: bool = True, resolver: NameResolver | None = None) -> str:
    """The table as ``ipvsadm-save -n`` prints it (``ipvsadm-save`` with ``resolve``).

    ``sort`` applies ipvsadm's own ordering, which is what makes the output byte-identical for a
    table in kernel dump order; ``sort=False`` keeps the table's order. Unless ``compat``, the
    thresholds and non-default timeouts that ipvsadm-save drops are added.
    """
    return finish(format_table_steps(table, resolve=resolve, compat=compat, sort=sort,
                                     resolver=resolver))


def format_table_steps(table: Table, *, resolve: bool = False, compat: bool = False,
                       sort: bool = True, resolver: NameResolver | None = None) -> Steps[str]:
    """``format_table``, a step per service (``lvsd.pacing``)."""
    style = _Style((resolver or SystemResolver()) if resolve else None, compat)
    services = services_in_ipvsadm_order(table.services) if sort else table.services
    lines: list[str] = []
    if not compat and table.timeouts is not None and table.timeouts != KERNEL_DEFAULT_TIMEOUTS:
        lines.append(f"--set {_timeouts_args(table.timeouts)}")
    for vs in services:
        yield None
        ref = _service_ref(vs.key, style)
        lines.append(f"-A {ref} {_service_options(vs.service, style)}")
        lines.extend(f"-a {ref} {_dest_ref(vs.key, d.key, style)} {_dest_options(d, style)}"
                     for d in (dests_in_ipvsadm_order(vs.dests) if sort else vs.dests))
    return "".join(line + "\n" for line in lines)


def format_op(op: Op) -> str:
    """An ipvsadm command line (without ``ipvsadm``) doing what ``op`` does."""
    style = _NUMERIC
    command = COMMAND_OF_OP[op.kind, op.verb]
    match op:
        case AddService(service) | EditService(service):
            return f"{command} {_service_ref(service.key, style)} " \
                   f"{_service_options(service, style)}"
        case DeleteService(key):
            return f"{command} {_service_ref(key, style)}"
        case AddDest(key, dest) | EditDest(key, dest):
            return f"{command} {_service_ref(key, style)} {_dest_ref(key, dest.key, style)} " \
                   f"{_dest_options(dest, style)}"
        case DeleteDest(key, dest_key):
            return f"{command} {_service_ref(key, style)} {_dest_ref(key, dest_key, style)}"
        case SetTimeouts(timeouts):
            return f"{command} {_timeouts_args(timeouts)}"
        case _:
            assert_never(op)
