"""A restore file read into a table, and the minimal-diff plan that restores it.

``parse`` reads a file as ipvsadm-restore would run it after its flush, but all or nothing:
any problem raises ``SaveFormatError`` naming the file, the line, what is wrong and the line
itself, and no table is returned. It accepts only what both ipvsadm 1.31 and the kernel
accept, with the meaning ipvsadm gives it (``lvsd.limits`` holds the kernel's bounds): where
ipvsadm's reading depends on the order of the options, or quietly drops a value, the line is
refused with the reason rather than read another way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsd import limits
from lvsd.errors import SaveFormatError
from lvsd.ipvsadm.names import (
    CSUM_OF_SLOT,
    DEFAULT_PERSISTENT_TIMEOUT,
    FORWARD_BY_OPTION,
    PERSISTENCE_ENGINES,
    PROTOCOL_BY_SERVICE_OPTION,
    PROTOCOL_NAMES,
    SCHED_FLAGS,
    TUNNEL_BY_NAME,
    TUNNEL_NAMES,
    TUNNEL_SLOTS,
    Command,
    Slot,
)
from lvsd.ipvsadm.resolve import NameResolver, SystemResolver
from lvsd.ipvsadm.scan import (
    LineError,
    Scanned,
    decode,
    integer,
    is_integer,
    scan,
    shown,
    split_lines,
    words,
)
from lvsd.model import (
    DEFAULT_SCHEDULER,
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    SCHEDULERS,
    TUN_NOCSUM,
    Address,
    Dest,
    DestKey,
    Family,
    Forward,
    Op,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
)
from lvsd.reconcile import plan


def _checked(value: int, check: Callable[[int], str | None]) -> int:
    error = check(value)
    if error is not None:
        raise LineError(error)
    return value


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


def _looks_numeric(text: str) -> bool:
    return all(c in "0123456789." for c in text) or text.lower().startswith("0x")


def _parse_host(text: str, resolver: NameResolver) -> Address:
    address = _ip_literal(text)
    if address is not None:
        return address
    if not text or ":" in text:
        raise LineError(f"bad address {text!r}")
    if _looks_numeric(text):
        # inet_aton would read 10.1 as 10.0.0.1 and 010.0.0.1 as 8.0.0.1: ask for the plain form
        raise LineError(f"bad address {text!r}: write an IPv4 address as four decimal numbers")
    resolved = resolver.host_address(text)
    if resolved is None:
        raise LineError(f"bad address {text!r}: not an IP address and no such host name")
    return resolved


def _parse_port(text: str, protocol: Protocol, resolver: NameResolver) -> int:
    if is_integer(text):
        return _checked(integer(text, "port"), limits.port_error)
    port = resolver.service_port(text, protocol) if text else None
    if port is None:
        raise LineError(f"bad port {text!r}: not a number from 0 to {limits.PORT_MAX} and no "
                        f"such {PROTOCOL_NAMES.get(protocol, 'tcp')} service name")
    return port


def _parse_endpoint(text: str, protocol: Protocol, what: str,
                    resolver: NameResolver) -> tuple[Address, int | None]:
    """ipvsadm's ``parse_service``: ``addr``, ``addr:port``, ``[addr6]:port`` or a bare IPv6
    address; ports and IPv4 hosts may be names."""
    if text.isdigit():
        raise LineError(f"bad {what} {text!r}: a port without an address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise LineError(f"bad {what} {text!r}: write [IPv6-address]:port")
        address = _ip_literal(host)
        if address is None or address.version != 6:
            # ipvsadm would look the text up as an IPv4 host and drop the port
            raise LineError(f"bad {what} {text!r}: only an IPv6 address goes in brackets")
        return address, _parse_port(rest[1:], protocol, resolver)
    if text.count(":") > 1:  # a bare IPv6 address, without a port
        address = _ip_literal(text)
        if address is None:
            raise LineError(f"bad {what} {text!r}: write [IPv6-address]:port")
        return address, None
    host, colon, port = text.rpartition(":")
    if not colon:
        return _parse_host(text, resolver), None
    return _parse_host(host, resolver), _parse_port(port, protocol, resolver)


def _parse_fwmark(text: str) -> int:
    value = integer(text, "fwmark")
    if value < 0 and value >= -(2**31):
        raise LineError(f"fwmark {value} is negative: ipvsadm-save prints marks above "
                        f"{2**31 - 1} that way, and neither restore reads it back; write "
                        f"{value & 0xFFFFFFFF}")
    return _checked(value, limits.fwmark_error)


def _service_key(command: Scanned, resolver: NameResolver) -> ServiceKey:
    if not command.has(Slot.SERVICE):
        raise LineError("no virtual service: give -t, -u, --sctp-service or -f")
    spelling = command.spelling_of(Slot.SERVICE)
    text = command.value(Slot.SERVICE) or ""
    protocol = PROTOCOL_BY_SERVICE_OPTION[spelling]
    if protocol is Protocol.FWMARK:
        if command.has(Slot.IPV6) and command.position(Slot.IPV6) < command.position(
                Slot.SERVICE):
            raise LineError(f"{command.spelling_of(Slot.IPV6)} before {spelling}: ipvsadm "
                            f"refuses it (write {spelling} first)")
        family = Family.INET6 if command.has(Slot.IPV6) else Family.INET
        return ServiceKey.mark(_parse_fwmark(text), family)
    if command.has(Slot.IPV6):
        raise LineError(f"{command.spelling_of(Slot.IPV6)} is only for fwmark services (-f)")
    address, port = _parse_endpoint(text, protocol, "virtual service", resolver)
    error = limits.virtual_address_error(address)
    if error is not None:
        raise LineError(f"bad virtual service {text!r}: {error}")
    return ServiceKey.virtual(protocol, address, port or 0)


def _family_position(command: Scanned, key: ServiceKey) -> int:
    """Where on the line ipvsadm learns the service is IPv6."""
    return command.position(Slot.IPV6 if key.is_fwmark else Slot.SERVICE)


def _parse_netmask(command: Scanned, key: ServiceKey) -> int | None:
    text = command.value(Slot.NETMASK) or ""
    if key.family is Family.INET6:
        if command.position(Slot.NETMASK) < _family_position(command, key):
            raise LineError(f"{command.spelling_of(Slot.NETMASK)} comes before ipvsadm knows the"
                            f" service is IPv6: it would read and then lose it; write it after")
        prefix = _checked(integer(text, "IPv6 netmask"), limits.ipv6_prefix_error)
        return None if prefix == HOST_PREFIX_V6 else prefix
    address = _ip_literal(text) if "." in text else None
    if address is None or address.version != 4:
        raise LineError(f"bad netmask {text!r} (a dotted IPv4 mask such as 255.255.255.0)")
    mask = int(address)
    return None if mask == HOST_NETMASK_V4 else mask


def _parse_sched_flags(text: str, scheduler: str) -> int:
    flags = 0
    names = [name for name in text.split(",") if name]  # as strtok: empty items vanish
    if not names:
        raise LineError(f"no scheduler flag in {text!r}")
    for name in names:
        known = SCHED_FLAGS.get(name)
        if known is None:
            raise LineError(f"unknown scheduler flag {name!r} (known: {', '.join(SCHED_FLAGS)})")
        needs, bit = known
        if needs is not None and scheduler != needs:
            raise LineError(f"scheduler flag {name!r} needs scheduler {needs!r}, "
                            f"not {scheduler!r}")
        flags |= bit
    return flags


def _service(command: Scanned, key: ServiceKey) -> Service:
    scheduler = command.value(Slot.SCHEDULER) or DEFAULT_SCHEDULER
    if scheduler not in SCHEDULERS:
        raise LineError(f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})")
    persistence = None
    netmask = _parse_netmask(command, key) if command.has(Slot.NETMASK) else None
    if command.has(Slot.PERSISTENT):
        timeout_text = command.value(Slot.PERSISTENT)
        timeout = (DEFAULT_PERSISTENT_TIMEOUT if timeout_text is None else _checked(
            integer(timeout_text, "persistence timeout"), limits.persistence_timeout_error))
        persistence = Persistence(timeout, netmask)
    elif not key.is_fwmark:
        _raise_if(limits.zero_port_error(key.port, False, key.protocol))
    pe_name = command.value(Slot.PE)
    if pe_name is not None and pe_name not in PERSISTENCE_ENGINES:
        raise LineError(f"unknown persistence engine {pe_name!r} "
                        f"(known: {', '.join(PERSISTENCE_ENGINES)})")
    onepacket = command.has(Slot.ONEPACKET)
    if onepacket:
        _raise_if(limits.onepacket_error(key.protocol))
    flags_text = command.value(Slot.SCHED_FLAGS)
    sched_flags = 0 if flags_text is None else _parse_sched_flags(flags_text, scheduler)
    return Service(key, scheduler=scheduler, sched_flags=sched_flags, onepacket=onepacket,
                   persistence=persistence, pe_name=pe_name)


def _raise_if(error: str | None) -> None:
    if error is not None:
        raise LineError(error)


def _port_text(endpoint: str) -> str | None:
    """The port part of an ``-r`` value as ipvsadm splits it, or None if it has none."""
    if endpoint.startswith("["):
        return endpoint.partition("]")[2].removeprefix(":") or None
    host, colon, port = endpoint.rpartition(":")
    return port if colon and ":" not in host else None


def _check_server_before_service(text: str, service: ServiceKey,
                                 keeps_service_port: bool) -> None:
    """ipvsadm reads ``-r`` against the service as far as it knows it then: no protocol to look
    a port name up with, and port 0 to copy when the server names none."""
    port = _port_text(text)
    if port is None and not keeps_service_port and not service.is_fwmark:
        raise LineError(f"-r {text} without a port comes before the service: ipvsadm "
                        f"would give it port 0, not the service's; write the service first")
    if port is not None and not is_integer(port):
        raise LineError(f"-r {text} names its port before the service is known: ipvsadm "
                        f"cannot look it up; write the service first")


def _dest_key(command: Scanned, service: ServiceKey, resolver: NameResolver,
              forward: Forward | None) -> DestKey:
    """The ``-r`` real server; ``forward`` is None on a ``-d`` line, where it plays no part."""
    if not command.has(Slot.SERVER):
        raise LineError("no real server: give -r address[:port]")
    # ipvsadm resolves a fwmark service's port names as tcp
    protocol = Protocol.TCP if service.is_fwmark else service.protocol
    text = command.value(Slot.SERVER) or ""
    keeps_service_port = not service.is_fwmark and forward in (Forward.ROUTE, Forward.TUNNEL)
    if command.position(Slot.SERVER) < command.position(Slot.SERVICE):
        _check_server_before_service(text, service, keeps_service_port)
    address, port = _parse_endpoint(text, protocol, "real server", resolver)
    if port is None or keeps_service_port:
        port = service.port  # as ipvsadm: DR and tunnels keep the service's port
    if forward is not None:
        error = limits.real_server_address_error(address)
        if error is not None:
            raise LineError(f"bad real server {text!r}: {error}")
        if forward is not Forward.TUNNEL and Family.of(address) is not service.family:
            raise LineError("a real server of another address family needs -i (tunneling)")
    return DestKey(address, port)


def _tunnel(command: Scanned, forward: Forward) -> Tunnel | None:
    given = [slot for slot in TUNNEL_SLOTS if command.has(slot)]
    if forward is not Forward.TUNNEL:
        if given:
            raise LineError(f"{command.spelling_of(given[0])} needs -i (tunneling)")
        return None
    type_name = command.value(Slot.TUN_TYPE) or TUNNEL_NAMES[TunnelType.IPIP]
    tunnel_type = TUNNEL_BY_NAME.get(type_name)
    if tunnel_type is None:
        raise LineError(f"unknown tunnel type {type_name!r} (known: "
                        f"{', '.join(TUNNEL_BY_NAME)})")
    port = 0
    port_text = command.value(Slot.TUN_PORT)
    if port_text is not None:
        port = integer(port_text, "tunnel port")
    elif tunnel_type is TunnelType.GUE:
        raise LineError("tunnel type gue needs --tun-port")
    csums = [slot for slot in CSUM_OF_SLOT if command.has(slot)]
    if len(csums) > 1:
        raise LineError(f"{command.spelling_of(csums[1])} conflicts with "
                        f"{command.spelling_of(csums[0])}")
    csum = CSUM_OF_SLOT[csums[0]] if csums else TUN_NOCSUM
    if tunnel_type is TunnelType.IPIP and csums:
        raise LineError(f"{command.spelling_of(csums[0])} is not allowed with tunnel type ipip")
    _raise_if(limits.tunnel_error(tunnel_type, port, csum))
    return Tunnel(tunnel_type, port, csum)


def _dest(command: Scanned, service: ServiceKey, resolver: NameResolver) -> Dest:
    forward = (FORWARD_BY_OPTION[command.spelling_of(Slot.FORWARD)]
               if command.has(Slot.FORWARD) else Forward.ROUTE)
    key = _dest_key(command, service, resolver, forward)
    weight_text = command.value(Slot.WEIGHT)
    upper_text = command.value(Slot.UPPER)
    lower_text = command.value(Slot.LOWER)
    upper = 0 if upper_text is None else integer(upper_text, "upper threshold")
    lower = 0 if lower_text is None else integer(lower_text, "lower threshold")
    _raise_if(limits.thresholds_error(upper, lower))
    return Dest(
        key,
        weight=1 if weight_text is None else _checked(integer(weight_text, "weight"),
                                                      limits.weight_error),
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
    keys: dict[tuple[str, str | None, bool, bool], ServiceKey] = field(default_factory=dict)

    def apply(self, command: Scanned, line_no: int) -> None:
        match command.command:
            case Command.SET:
                self._set(command, line_no)
            case Command.CLEAR:
                if self.services:
                    raise LineError(f"-C (clear) would discard the {len(self.services)} "
                                    f"service(s) defined above; it is only allowed before them")
            case Command.ADD_SERVICE | Command.EDIT_SERVICE | Command.DELETE_SERVICE:
                self._service_command(command, self._key(command), line_no)
            case Command.ADD_SERVER | Command.EDIT_SERVER | Command.DELETE_SERVER:
                self._server_command(command, self._entry(self._key(command)), line_no)

    def _key(self, command: Scanned) -> ServiceKey:
        if not command.has(Slot.SERVICE):
            return _service_key(command, self.resolver)  # raises
        given = command.options[Slot.SERVICE]
        ipv6 = command.options.get(Slot.IPV6)
        ref = (given.spelling, given.value, ipv6 is not None,
               ipv6 is not None and ipv6.position < given.position)
        key = self.keys.get(ref)
        if key is None:
            key = self.keys[ref] = _service_key(command, self.resolver)
        return key

    def _set(self, command: Scanned, line_no: int) -> None:
        if self.timeouts is not None:
            raise LineError(f"a second --set line (the first is line {self.timeouts_line})")
        seconds = []
        for text, what in zip(command.arguments, ("tcp timeout", "tcpfin timeout",
                                                  "udp timeout"), strict=True):
            value = integer(text, what)
            _raise_if(limits.connection_timeout_error(value, what))
            seconds.append(value)
        self.timeouts, self.timeouts_line = Timeouts(*seconds), line_no

    def _entry(self, key: ServiceKey) -> _Entry:
        entry = self.services.get(key)
        if entry is None:
            raise LineError(f"service {key} is not defined: no -A line for it above")
        return entry

    def _service_command(self, command: Scanned, key: ServiceKey, line_no: int) -> None:
        if command.command is Command.ADD_SERVICE:
            if key in self.services:
                raise LineError(f"duplicate service {key} (first defined on line "
                                f"{self.services[key].line_no})")
            self.services[key] = _Entry(_service(command, key), line_no)
        elif command.command is Command.EDIT_SERVICE:  # as ipvsadm -E: unnamed options reset
            self._entry(key).service = _service(command, key)
        else:
            self._entry(key)
            del self.services[key]

    def _server_command(self, command: Scanned, entry: _Entry, line_no: int) -> None:
        key = entry.service.key
        if command.command is Command.DELETE_SERVER:
            dest_key = _dest_key(command, key, self.resolver, None)
            if dest_key not in entry.dests:
                raise LineError(f"real server {dest_key} of {key} is not defined above")
            del entry.dests[dest_key]
            return
        dest = _dest(command, key, self.resolver)
        known = entry.dests.get(dest.key)
        if command.command is Command.ADD_SERVER:
            if known is not None:
                raise LineError(f"duplicate real server {dest.key} of {key} (first defined on"
                                f" line {known[1]})")
            entry.dests[dest.key] = (dest, line_no)
        else:  # as ipvsadm -e: unnamed options reset
            if known is None:
                raise LineError(f"real server {dest.key} of {key} is not defined above")
            entry.dests[dest.key] = (dest, known[1])

    def table(self) -> Table:
        return Table(tuple(VirtualService(e.service, tuple(d for d, _ in e.dests.values()))
                           for e in self.services.values()), self.timeouts)


def parse(data: str | bytes, source: str = "<stdin>", *,
          resolver: NameResolver | None = None) -> Table:
    """Read a save file: what ``ipvsadm-save [-n]`` prints, plus ``--set`` and edit lines.

    Lines run in order as ipvsadm-restore runs them on a flushed table: ``-E``/``-e`` replace an
    entry defined above (options left out get ipvsadm's defaults), ``-D``/``-d`` remove one,
    ``-C`` is accepted only before the first rule. Empty lines and lines starting with ``#``
    are skipped, and ``ipvsadm`` words are ignored. Services and real servers keep the file's
    order. Host and port names are looked up with ``resolver`` (default: the system's).
    ``data`` may be bytes: text that is not UTF-8 is an error on its line.
    """
    builder = _TableBuilder(resolver or SystemResolver())
    for index, line in enumerate(split_lines(decode(data))):
        try:
            line_words = words(line)
            if line_words:
                builder.apply(scan(line_words), index + 1)
        except LineError as exc:
            raise SaveFormatError(source, index + 1, shown(line), str(exc)) from None
    return builder.table()


def restore_plan(wanted: Table, actual: Table, *, noflush: bool = False) -> list[Op]:
    """The fewest operations that turn ``actual`` into ``wanted``, as ipvsadm-restore's flush
    and rules would leave it, but editing in place what is there: unchanged entries keep their
    counters and connections. ``noflush`` only adds and edits."""
    owned = () if noflush else [vs.key for vs in actual.services]
    ops = plan(wanted, actual, owned)
    return [op for op in ops if op.verb != "delete"] if noflush else ops
