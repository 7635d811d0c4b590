"""What ``ipvsadm -L`` prints: ``-Ln`` and its ``--stats``, ``--rate``, ``--thresholds``,
``--persistent-conn``, ``--tun-info`` and ``--exact`` views, column for column."""

from __future__ import annotations

from typing import Literal

from lvsd.ipvsadm.names import (
    FORWARD_LABELS,
    PROTOCOL_LABELS,
    TUNNEL_CSUM_SHORT,
    TUNNEL_NAMES,
    has_sched_flags,
    sched_flag_names,
)
from lvsd.ipvsadm.order import int32, ipvsadm_order
from lvsd.ipvsadm.resolve import NameResolver, SystemResolver
from lvsd.ipvsadm.save import endpoint, netmask_text
from lvsd.model import (
    Dest,
    DestKey,
    Family,
    Forward,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    Table,
    Tunnel,
    TunnelType,
)


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
    name = TUNNEL_NAMES[tunnel.type]
    if tunnel.type is TunnelType.GUE:
        text = f"{name}:{tunnel.port}:{TUNNEL_CSUM_SHORT[tunnel.csum]}"
    elif tunnel.type is TunnelType.GRE:
        text = f"{name}:{TUNNEL_CSUM_SHORT[tunnel.csum]}"
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


def listing_title(view: ListingView) -> str:
    """The two title lines of a view, newlines included."""
    return _TITLES[view]


def service_listing_name(key: ServiceKey, resolver: NameResolver | None = None) -> str:
    """The Prot and LocalAddress:Port columns of a service's line."""
    if key.address is None:
        suffix = " IPv6" if key.family is Family.INET6 else ""
        return f"{PROTOCOL_LABELS[Protocol.FWMARK]}  {int32(key.fwmark)}{suffix}"
    where = endpoint(key.address, key.port, key.protocol, resolver)
    name = f"{PROTOCOL_LABELS[key.protocol]:<4} {where}"
    return name if key.family is Family.INET6 else name[:33]


def _traffic(stats: ServiceStats, rate: bool, exact: bool) -> str:
    values = ((stats.cps, stats.inpps, stats.outpps, stats.inbps, stats.outbps) if rate else
              (stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes))
    return "".join(_large_number(v, exact) for v in values)


def service_listing_line(service: Service, view: ListingView, exact: bool,
                         resolver: NameResolver | None = None) -> str:
    name = service_listing_name(service.key, resolver)
    if view in ("stats", "rate"):
        return f"{name:<33}" + _traffic(service.stats, view == "rate", exact)
    text = f"{name} {service.scheduler}"
    if has_sched_flags(service.sched_flags):
        names = sched_flag_names(service.scheduler, service.sched_flags, complete=False)
        text += " (" + ",".join(names) + ")"
    if service.persistence is not None:
        text += f" persistent {service.persistence.timeout}"
        mask = netmask_text(service.key, service.persistence)
        if mask is not None:
            text += f" mask {mask}"
        if service.pe_name:
            text += f" pe {service.pe_name}"
    if service.onepacket:
        text += " ops"
    return text


def dest_listing_name(service: ServiceKey, dest: DestKey,
                      resolver: NameResolver | None = None) -> str:
    """The RemoteAddress:Port column of a real server's line."""
    name = endpoint(dest.address, dest.port, service.protocol, resolver)
    return name[:28] if dest.address.version == 4 else name


def dest_listing_line(service: ServiceKey, dest: Dest, view: ListingView, exact: bool,
                      resolver: NameResolver | None = None) -> str:
    name = dest_listing_name(service, dest.key, resolver)
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
    forward = FORWARD_LABELS[dest.forward]
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
    out.append(listing_title(view))
    for vs in (ipvsadm_order(table) if sort else table).services:
        out.append(service_listing_line(vs.service, view, exact, names) + "\n")
        out.extend(dest_listing_line(vs.key, d, view, exact, names) + "\n" for d in vs.dests)
    return "".join(out)
