"""``lvsd import ipvsadm-save``: a save file (``ipvsadm-save -n``) as an lvsd config.

The table is read with the same parser ``lvsd restore`` uses, so anything it refuses is
refused here with the same message. A save file has no health checks: every service gets a
comment saying so, and its servers stay in rotation until the operator adds one.
"""

from __future__ import annotations

import ipaddress

from lvsd.ipvsadm.names import (
    FORWARD_BY_CONFIG_NAME,
    FORWARD_NAMES,
    PROTOCOL_NAMES,
    TUNNEL_CSUM_NAMES,
    TUNNEL_NAMES,
    sched_flag_names,
)
from lvsd.migrate.document import Document, Scalar, ServerOut, ServiceOut, Value
from lvsd.model import (
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    Dest,
    Family,
    Forward,
    Table,
    TunnelType,
    VirtualService,
)

_CONFIGURABLE_FORWARDS = frozenset(FORWARD_BY_CONFIG_NAME.values())


def _service(vs: VirtualService) -> ServiceOut:
    service, key = vs.service, vs.key
    fields: dict[str, Value] = {"name": str(key)}
    if key.is_fwmark:
        fields["fwmark"] = key.fwmark
        if key.family is Family.INET6:
            fields["family"] = "ipv6"
    else:
        fields.update(protocol=PROTOCOL_NAMES[key.protocol], address=str(key.address),
                      port=key.port)
    fields["scheduler"] = service.scheduler
    flags: list[Scalar] = [*sched_flag_names(service.scheduler, service.sched_flags)]
    if flags:
        fields["sched_flags"] = flags
    if service.onepacket:
        fields["ops"] = True
    if service.persistence is not None:
        fields["persistence"] = service.persistence.timeout
        mask = service.persistence.netmask
        if key.family is Family.INET6 and mask is not None and mask != HOST_PREFIX_V6:
            fields["persistence_netmask"] = mask
        elif key.family is Family.INET and mask is not None and mask != HOST_NETMASK_V4:
            fields["persistence_netmask"] = str(ipaddress.IPv4Address(mask))
    if service.pe_name is not None:
        fields["pe"] = service.pe_name
    forwards = [d.forward for d in vs.dests if d.forward in _CONFIGURABLE_FORWARDS]
    common = max(set(forwards), key=forwards.count) if forwards else Forward.ROUTE
    fields["forward"] = FORWARD_NAMES[common]
    out = ServiceOut(fields, comments=[
        f"{key}: no health check in a save file: add [services.check] (lvsd.toml(5))"])
    for dest in vs.dests:
        server = _server(vs, dest, common)
        if server is None:
            out.comments.append(f"{dest.key}: local forwarding (-L) has no lvsd equivalent: "
                                "not imported")
        else:
            out.servers.append(server)
    return out


def _server(vs: VirtualService, dest: Dest, common: Forward) -> ServerOut | None:
    if dest.forward not in _CONFIGURABLE_FORWARDS:
        return None
    fields: dict[str, Value] = {"address": str(dest.key.address)}
    if vs.key.is_fwmark:
        if dest.key.port:
            fields["port"] = dest.key.port
    elif dest.key.port != vs.key.port:
        # only masq moves the port: ipvsadm gives a routed or tunnelled server the service's
        fields["port"] = dest.key.port
    fields["weight"] = dest.weight
    if dest.forward is not common:
        fields["forward"] = FORWARD_NAMES[dest.forward]
    if dest.upper_threshold:
        fields["upper_threshold"] = dest.upper_threshold
    if dest.lower_threshold:
        fields["lower_threshold"] = dest.lower_threshold
    if dest.forward is Forward.TUNNEL and dest.tunnel is not None:
        if dest.tunnel.type is not TunnelType.IPIP:
            fields["tunnel_type"] = TUNNEL_NAMES[dest.tunnel.type]
        if dest.tunnel.port:
            fields["tunnel_port"] = dest.tunnel.port
        if dest.tunnel.csum:
            fields["tunnel_csum"] = TUNNEL_CSUM_NAMES[dest.tunnel.csum]
    return ServerOut(fields)


def import_table(table: Table, source: str) -> Document:
    document = Document([f"Imported by `lvsd import ipvsadm-save` from {source}."])
    if table.timeouts is not None:
        timeouts = {"tcp": table.timeouts.tcp, "tcpfin": table.timeouts.tcpfin,
                    "udp": table.timeouts.udp}
        # --set 0 leaves a timeout unchanged: lvsd's [timeouts] then names only the others
        document.timeouts = {name: value for name, value in timeouts.items() if value} or None
    document.services = [_service(vs) for vs in table.services]
    return document
