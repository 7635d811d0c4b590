"""The IPVS table as JSON objects: one shape for ``/status`` and ``lvsd show --json``.

A leaf module (model types only), so the CLI can print a table without loading the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
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
    Protocol,
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


_PROTOCOL_BY_LABEL = {label: protocol for protocol, label in PROTOCOL_LABELS.items()}


def key_from_json(document: Mapping[str, Any]) -> ServiceKey:
    """The service key ``key_json`` wrote; KeyError or ValueError when it is not one."""
    family = Family.INET6 if document["family"] == "ipv6" else Family.INET
    protocol = _PROTOCOL_BY_LABEL[document["protocol"]]
    if protocol is Protocol.FWMARK:
        return ServiceKey.mark(int(document["fwmark"]), family)
    return ServiceKey.virtual(protocol, str(document["address"]), int(document["port"]))


_STATS_NAMES = (
    ("conns", "connections"), ("inpkts", "in_packets"), ("outpkts", "out_packets"),
    ("inbytes", "in_bytes"), ("outbytes", "out_bytes"), ("cps", "cps"), ("inpps", "in_pps"),
    ("outpps", "out_pps"), ("inbps", "in_bytes_per_second"),
    ("outbps", "out_bytes_per_second"),
)


def stats_json(stats: ServiceStats) -> dict[str, int]:
    return {name: getattr(stats, field) for field, name in _STATS_NAMES}


def stats_from_json(document: Mapping[str, Any]) -> ServiceStats:
    """The counters ``stats_json`` wrote (a missing one is 0)."""
    return ServiceStats(**{field: int(document.get(name, 0)) for field, name in _STATS_NAMES})


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
