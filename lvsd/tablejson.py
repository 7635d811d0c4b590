"""The IPVS table as JSON objects: one shape for ``/status`` and ``lvsd show --json``.

A leaf module (model types only), so the CLI can print a table without loading the API.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lvsd.ipvsadm.names import (
    FORWARD_NAMES,
    PROTOCOL_LABELS,
    TUNNEL_NAMES,
    generic_sched_flag_names,
)
from lvsd.model import (
    HOST_NETMASK_V4,
    Dest,
    Family,
    Forward,
    ServiceKey,
    ServiceStats,
    Table,
    VirtualService,
)


def key_json(key: ServiceKey) -> dict[str, Any]:
    return {
        "key": str(key),
        "protocol": PROTOCOL_LABELS[key.protocol],
        "family": "ipv6" if key.family is Family.INET6 else "ipv4",
        "address": None if key.address is None else str(key.address),
        "port": key.port,
        "fwmark": key.fwmark,
    }


def stats_json(stats: ServiceStats) -> dict[str, int]:
    return {
        "connections": stats.conns,
        "in_packets": stats.inpkts,
        "out_packets": stats.outpkts,
        "in_bytes": stats.inbytes,
        "out_bytes": stats.outbytes,
        "cps": stats.cps,
        "in_pps": stats.inpps,
        "out_pps": stats.outpps,
        "in_bytes_per_second": stats.inbps,
        "out_bytes_per_second": stats.outbps,
    }


def _netmask(vs: VirtualService) -> str | int | None:
    persistence = vs.service.persistence
    if persistence is None or persistence.netmask is None:
        return None
    if vs.key.family is Family.INET6:
        return persistence.netmask
    if persistence.netmask == HOST_NETMASK_V4:
        return None
    return str(ipaddress.IPv4Address(persistence.netmask))


def _dest_full_json(dest: Dest) -> dict[str, Any]:
    tunnel = dest.tunnel if dest.forward is Forward.TUNNEL else None
    return {
        "server": str(dest.key),
        "address": str(dest.key.address),
        "port": dest.key.port,
        "weight": dest.weight,
        "forward": FORWARD_NAMES[dest.forward],
        "upper_threshold": dest.upper_threshold,
        "lower_threshold": dest.lower_threshold,
        "tunnel": None if tunnel is None else {
            "type": TUNNEL_NAMES[tunnel.type], "port": tunnel.port, "csum": tunnel.csum},
        "active": dest.stats.active,
        "inactive": dest.stats.inactive,
        "persistent": dest.stats.persistent,
        "stats": stats_json(dest.stats.traffic),
    }


def table_json(table: Table) -> dict[str, Any]:
    """Every service with every attribute ipvsadm shows, its counters and its servers."""
    services = []
    for vs in table.services:
        service = vs.service
        services.append({
            **key_json(vs.key),
            "scheduler": service.scheduler,
            "sched_flags": generic_sched_flag_names(service.sched_flags),
            "ops": service.onepacket,
            "persistence": None if service.persistence is None else service.persistence.timeout,
            "persistence_netmask": _netmask(vs),
            "pe": service.pe_name,
            "stats": stats_json(service.stats),
            "servers": [_dest_full_json(d) for d in vs.dests],
        })
    timeouts = table.timeouts
    return {
        "services": services,
        "timeouts": None if timeouts is None else {
            "tcp": timeouts.tcp, "tcpfin": timeouts.tcpfin, "udp": timeouts.udp},
    }
