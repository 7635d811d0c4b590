"""IPVS generic-netlink messages to and from ``lvsd.model`` values, with no I/O.

Every nest the kernel speaks (service, destination, stats, the top-level command attributes
that carry timeouts, the GET_INFO reply) is described once, as an attribute table: which
attribute, what it is called, how its payload is laid out. The encoders and decoders are
derived from those tables: the generic attribute walk, the packed destination request (one
``struct`` call per destination), and the destination layout learnt from one dump reply.

Nothing here trusts the kernel: a payload of the wrong size, an attribute running past its
nest, a missing attribute, or a number outside the model's enums raises ``DecodeError``;
a value the wire cannot carry raises ``EncodeError``. Unknown attributes are skipped.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any, assert_never

from lvsd import limits
from lvsd.ipvs.abi import (
    GENL_HDRLEN,
    IP_VS_CONN_F_FWD_MASK,
    IP_VS_IFNAME_MAXLEN,
    IP_VS_PENAME_MAXLEN,
    IP_VS_SCHEDNAME_MAXLEN,
    NLA_F_NESTED,
    NLA_TYPE_MASK,
    NLMSG_HDRLEN,
    Cmd,
    CmdAttr,
    DaemonAttr,
    DestAttr,
    InfoAttr,
    StatsAttr,
    SvcAttr,
)
from lvsd.model import (
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    SCHED_FLAG_BITS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SYNC_DEFAULT_GROUP,
    SYNC_DEFAULT_PORT,
    SYNC_DEFAULT_TTL,
    ZERO_DEST_STATS,
    ZERO_STATS,
    AddDest,
    Address,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    DestStats,
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
    StartSyncDaemon,
    StopSyncDaemon,
    SyncDaemon,
    SyncOp,
    SyncState,
    Timeouts,
    Tunnel,
    TunnelType,
)


class CodecError(ValueError):
    """A message that cannot be made or read."""


class EncodeError(CodecError):
    """A value the kernel's wire format cannot carry (beyond u32, a name too long, …)."""


class DecodeError(CodecError):
    """A reply lvsd cannot read: truncated, garbled, or naming what the model does not know."""


# --- payload kinds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How one attribute's payload is laid out.

    ``fmt`` is its native-order ``struct`` format when its size is fixed ("" for strings and
    nests); ``swap`` marks a big-endian 16-bit value, packed natively and byte-swapped, so that
    a whole nest can be one native ``struct``.
    """

    name: str
    fmt: str = ""
    maximum: int = 0  # the largest integer the payload holds; 0: not an integer
    swap: bool = False
    max_length: int = 0  # strings: the kernel's buffer, NUL included

    @property
    def size(self) -> int:
        return struct.calcsize("=" + self.fmt) if self.fmt else 0


U8 = Kind("u8", "B", 0xFF)
U16 = Kind("u16", "H", 0xFFFF)
U32 = Kind("u32", "I", 0xFFFFFFFF)
U64 = Kind("u64", "Q", (1 << 64) - 1)
BE16 = Kind("be16", "H", 0xFFFF, swap=True)
RAW4 = Kind("4 bytes", "4s")  # the service netmask: its meaning depends on the family
INET_ADDR = Kind("address", "16s")  # union nf_inet_addr: IPv4 in the first four bytes
SVC_FLAGS = Kind("flags", "II")  # struct ip_vs_flags: flags, mask
SCHED_NAME = Kind("scheduler name", max_length=IP_VS_SCHEDNAME_MAXLEN)
PE_NAME = Kind("persistence engine name", max_length=IP_VS_PENAME_MAXLEN)
IFNAME = Kind("interface name", max_length=IP_VS_IFNAME_MAXLEN)
IN_ADDR = Kind("IPv4 address", "4s")
IN6_ADDR = Kind("IPv6 address", "16s")
NEST = Kind("nest")


@dataclass(frozen=True, slots=True)
class Attr:
    id: int
    name: str
    kind: Kind
    nest: Nest | None = None


@dataclass(frozen=True, slots=True)
class Nest:
    """One attribute table: ``attrs`` in attribute-number order."""

    name: str
    attrs: tuple[Attr, ...]

    def attr(self, attr_id: int) -> Attr:
        for attr in self.attrs:
            if attr.id == attr_id:
                return attr
        raise KeyError(attr_id)


STATS = Nest("stats", tuple(Attr(a, a.name.lower(), U64)
                            for a in StatsAttr if a is not StatsAttr.PAD))
STATS_COUNT = len(STATS.attrs)

SERVICE = Nest("service", (
    Attr(SvcAttr.AF, "af", U16),
    Attr(SvcAttr.PROTOCOL, "protocol", U16),
    Attr(SvcAttr.ADDR, "address", INET_ADDR),
    Attr(SvcAttr.PORT, "port", BE16),
    Attr(SvcAttr.FWMARK, "fwmark", U32),
    Attr(SvcAttr.SCHED_NAME, "scheduler", SCHED_NAME),
    Attr(SvcAttr.FLAGS, "flags", SVC_FLAGS),
    Attr(SvcAttr.TIMEOUT, "persistence timeout", U32),
    Attr(SvcAttr.NETMASK, "netmask", RAW4),
    Attr(SvcAttr.PE_NAME, "persistence engine", PE_NAME),
    Attr(SvcAttr.STATS64, "stats", NEST, STATS),
))

DEST = Nest("destination", (
    Attr(DestAttr.ADDR, "address", INET_ADDR),
    Attr(DestAttr.PORT, "port", BE16),
    Attr(DestAttr.FWD_METHOD, "forwarding method", U32),
    Attr(DestAttr.WEIGHT, "weight", U32),
    Attr(DestAttr.U_THRESH, "upper threshold", U32),
    Attr(DestAttr.L_THRESH, "lower threshold", U32),
    Attr(DestAttr.ACTIVE_CONNS, "active connections", U32),
    Attr(DestAttr.INACT_CONNS, "inactive connections", U32),
    Attr(DestAttr.PERSIST_CONNS, "persistent connections", U32),
    Attr(DestAttr.ADDR_FAMILY, "address family", U16),
    Attr(DestAttr.STATS64, "stats", NEST, STATS),
    Attr(DestAttr.TUN_TYPE, "tunnel type", U8),
    Attr(DestAttr.TUN_PORT, "tunnel port", BE16),
    Attr(DestAttr.TUN_FLAGS, "tunnel flags", U16),
))

DAEMON = Nest("sync daemon", (
    Attr(DaemonAttr.STATE, "state", U32),
    Attr(DaemonAttr.MCAST_IFN, "interface", IFNAME),
    Attr(DaemonAttr.SYNC_ID, "syncid", U32),
    Attr(DaemonAttr.SYNC_MAXLEN, "maxlen", U16),
    Attr(DaemonAttr.MCAST_GROUP, "group", IN_ADDR),
    Attr(DaemonAttr.MCAST_GROUP6, "IPv6 group", IN6_ADDR),
    Attr(DaemonAttr.MCAST_PORT, "port", U16),
    Attr(DaemonAttr.MCAST_TTL, "ttl", U8),
))

# The top level of IPVS requests and replies; timeouts are its own attributes.
COMMAND = Nest("command", (
    Attr(CmdAttr.SERVICE, "service", NEST, SERVICE),
    Attr(CmdAttr.DEST, "destination", NEST, DEST),
    Attr(CmdAttr.DAEMON, "sync daemon", NEST, DAEMON),
    Attr(CmdAttr.TIMEOUT_TCP, "tcp timeout", U32),
    Attr(CmdAttr.TIMEOUT_TCP_FIN, "tcpfin timeout", U32),
    Attr(CmdAttr.TIMEOUT_UDP, "udp timeout", U32),
))

# The top level of a GET_INFO reply (its numbers overlap COMMAND's).
INFO = Nest("info", (
    Attr(InfoAttr.VERSION, "version", U32),
    Attr(InfoAttr.CONN_TAB_SIZE, "connection table size", U32),
))

# What a request carries, in order; the rest of each table only comes back in replies.
SERVICE_KEY_ATTRS = (SvcAttr.AF, SvcAttr.PROTOCOL, SvcAttr.ADDR, SvcAttr.PORT)
FWMARK_KEY_ATTRS = (SvcAttr.AF, SvcAttr.FWMARK)
SERVICE_STATE_ATTRS = (SvcAttr.SCHED_NAME, SvcAttr.FLAGS, SvcAttr.TIMEOUT, SvcAttr.NETMASK)
DEST_KEY_ATTRS = (DestAttr.ADDR, DestAttr.PORT, DestAttr.ADDR_FAMILY)
DEST_REQUEST_ATTRS = (
    DestAttr.ADDR, DestAttr.PORT, DestAttr.FWD_METHOD, DestAttr.WEIGHT, DestAttr.U_THRESH,
    DestAttr.L_THRESH, DestAttr.ADDR_FAMILY, DestAttr.TUN_TYPE, DestAttr.TUN_PORT,
    DestAttr.TUN_FLAGS,
)
TIMEOUT_ATTRS = (CmdAttr.TIMEOUT_TCP, CmdAttr.TIMEOUT_TCP_FIN, CmdAttr.TIMEOUT_UDP)

_NLA = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_U32 = struct.Struct("=I")

_FORWARDS = {int(f): f for f in Forward}
_TUNNEL_TYPES = {int(t): t for t in TunnelType}
_PROTOCOLS = {int(p): p for p in Protocol if p is not Protocol.FWMARK}
_FAMILIES = {int(f): f for f in Family}
_ZERO_COUNTERS = (0,) * STATS_COUNT


# --- encoding ---------------------------------------------------------------------------------


def _check_int(attr: Attr, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= attr.kind.maximum:
        raise EncodeError(f"{attr.name} {value!r} is outside 0..{attr.kind.maximum}")
    return value


def encode_payload(attr: Attr, value: Any) -> bytes:
    """The payload of ``attr`` holding ``value``: an int, bytes, a str, or (flags, mask)."""
    kind = attr.kind
    if kind.max_length:
        raw = str(value).encode()
        if b"\0" in raw or len(raw) >= kind.max_length:
            raise EncodeError(f"{attr.name} {value!r} is longer than {kind.max_length - 1} "
                              "bytes or holds a NUL")
        return raw + b"\0"
    if kind is SVC_FLAGS:
        flags, mask = value
        return struct.pack("=II", _check_int(Attr(0, attr.name, U32), flags),
                           _check_int(Attr(0, attr.name, U32), mask))
    if kind.maximum:
        number = _check_int(attr, value)
        return struct.pack("!" + kind.fmt if kind.swap else "=" + kind.fmt, number)
    if kind.fmt:
        raw = bytes(value)
        if len(raw) != kind.size:
            raise EncodeError(f"{attr.name} must be {kind.size} bytes, not {len(raw)}")
        return raw
    raise EncodeError(f"{attr.name}: a nest is encoded with encode_nest")


def encode_attr(attr_id: int, payload: bytes, *, nested: bool = False) -> bytes:
    size = 4 + len(payload)
    return (_NLA.pack(size, attr_id | (NLA_F_NESTED if nested else 0)) + payload
            + bytes(-size % 4))


def encode_nest(nest: Nest, values: Mapping[int, Any]) -> bytes:
    """The attributes of ``nest`` given in ``values`` (attribute id -> value), in table order;
    a nested attribute's value is the already encoded body."""
    parts = []
    for attr in nest.attrs:
        if attr.id not in values:
            continue
        value = values[attr.id]
        if attr.nest is not None:
            parts.append(encode_attr(attr.id, value, nested=True))
        else:
            parts.append(encode_attr(attr.id, encode_payload(attr, value)))
    return b"".join(parts)


class Packer:
    """One nest holding fixed-size attributes, packed by one ``struct`` call.

    Derived from the table: the same bytes as ``encode_nest`` for the same values (a unit test
    holds them to it), at a fraction of its cost on the hot path of programming a large table.
    """

    def __init__(self, outer: int, nest: Nest, attr_ids: Sequence[int]) -> None:
        attrs = [nest.attr(i) for i in attr_ids]
        fmt = ["=I"]
        self._headers: list[int] = []
        size = 4
        for attr in attrs:
            if not attr.kind.maximum and attr.kind.fmt not in ("16s", "4s"):
                raise ValueError(f"{attr.name}: a packer holds fixed-size values only")
            pad = -attr.kind.size % 4
            fmt.append("I" + attr.kind.fmt + (f"{pad}x" if pad else ""))
            self._headers.append(_header(4 + attr.kind.size, attr.id))
            size += 4 + attr.kind.size + pad
        self._struct = struct.Struct("".join(fmt))
        self._top = _header(size, outer | NLA_F_NESTED)
        self._attrs = tuple(attrs)
        self._swapped = tuple(i for i, attr in enumerate(attrs) if attr.kind.swap)
        self._limits = tuple((i, attr) for i, attr in enumerate(attrs) if attr.kind.maximum)

    def pack(self, values: Sequence[Any]) -> bytes:
        """The nest holding ``values``, one per attribute in the packer's order."""
        for i, attr in self._limits:
            value = values[i]
            if type(value) is not int or not 0 <= value <= attr.kind.maximum:
                _check_int(attr, value)
        if self._swapped:
            values = list(values)
            for i in self._swapped:
                values[i] = socket.htons(values[i])
        try:
            return self._struct.pack(self._top, *chain.from_iterable(
                zip(self._headers, values, strict=True)))
        except (struct.error, ValueError) as exc:
            raise EncodeError(f"{self._attrs[0].name}…: {exc}") from exc


def _header(size: int, attr_id: int) -> int:
    """A ``struct nlattr`` (length, type) as one native u32."""
    return int.from_bytes(_NLA.pack(size, attr_id), sys.byteorder)


def packed_address(address: Address) -> bytes:
    """``union nf_inet_addr``: 16 bytes, an IPv4 address in the first four."""
    return address.packed.ljust(16, b"\0")


def _family_of(address: Address) -> Family:
    return Family.INET if address.version == 4 else Family.INET6


def _key_values(key: ServiceKey) -> dict[int, Any]:
    if key.family not in _FAMILIES.values():
        raise EncodeError(f"address family {key.family!r} is neither IPv4 nor IPv6")
    if key.address is None:
        if key.fwmark == 0:
            raise EncodeError("a fwmark service needs a mark other than 0")
        return {SvcAttr.AF: int(key.family), SvcAttr.FWMARK: key.fwmark}
    if _family_of(key.address) is not key.family:
        raise EncodeError(f"address {key.address} is not of family {key.family.name}")
    if key.protocol not in _PROTOCOLS.values():
        raise EncodeError(f"protocol {key.protocol!r} is none of tcp, udp, sctp")
    return {SvcAttr.AF: int(key.family), SvcAttr.PROTOCOL: int(key.protocol),
            SvcAttr.ADDR: packed_address(key.address), SvcAttr.PORT: key.port}


@lru_cache(maxsize=8192)
def service_key_nest(key: ServiceKey) -> bytes:
    """The SERVICE nest naming ``key``: what a destination request and a dest dump carry."""
    return encode_attr(CmdAttr.SERVICE, encode_nest(SERVICE, _key_values(key)), nested=True)


def _netmask(service: Service) -> bytes:
    # The kernel reads this field as a big-endian IPv4 mask for IPv4 services, but compares it
    # as a native integer prefix length (1..128) for IPv6 ones.
    netmask = service.persistence.netmask if service.persistence else None
    attr = SERVICE.attr(SvcAttr.NETMASK)
    if service.key.family is Family.INET6:
        prefix = HOST_PREFIX_V6 if netmask is None else netmask
        if not isinstance(prefix, int) or not 1 <= prefix <= 128:
            raise EncodeError(f"{attr.name} {prefix!r} is not an IPv6 prefix length (1..128)")
        return _U32.pack(prefix)
    mask = HOST_NETMASK_V4 if netmask is None else netmask
    return _BE32.pack(_check_int(Attr(attr.id, attr.name, U32), mask))


def service_nest(service: Service) -> bytes:
    """The whole state of a service: a SET request resets whatever it leaves out."""
    values = _key_values(service.key)
    values[SvcAttr.SCHED_NAME] = service.scheduler
    values[SvcAttr.FLAGS] = (service.kernel_flags, 0xFFFFFFFF)
    values[SvcAttr.TIMEOUT] = service.persistence.timeout if service.persistence else 0
    values[SvcAttr.NETMASK] = _netmask(service)
    if service.pe_name:
        values[SvcAttr.PE_NAME] = service.pe_name
    return encode_attr(CmdAttr.SERVICE, encode_nest(SERVICE, values), nested=True)


_DEST_PACKER = Packer(CmdAttr.DEST, DEST, DEST_REQUEST_ATTRS)


def dest_values(dest: Dest) -> tuple[Any, ...]:
    """A destination request's values, in ``DEST_REQUEST_ATTRS`` order."""
    address = dest.key.address
    tunnel = dest.tunnel if dest.forward is Forward.TUNNEL and dest.tunnel else None
    return (
        packed_address(address), dest.key.port, int(dest.forward), dest.weight,
        dest.upper_threshold, dest.lower_threshold, int(_family_of(address)),
        int(tunnel.type) if tunnel else 0, tunnel.port if tunnel else 0,
        tunnel.csum if tunnel else 0,
    )


def dest_nest(dest: Dest) -> bytes:
    return _DEST_PACKER.pack(dest_values(dest))


def dest_key_nest(dest: DestKey) -> bytes:
    values: dict[int, Any] = {DestAttr.ADDR: packed_address(dest.address),
                              DestAttr.PORT: dest.port,
                              DestAttr.ADDR_FAMILY: int(_family_of(dest.address))}
    return encode_attr(CmdAttr.DEST, encode_nest(DEST, values), nested=True)


def timeouts_attrs(timeouts: Timeouts) -> bytes:
    return encode_nest(COMMAND, dict(zip(TIMEOUT_ATTRS,
                                         (timeouts.tcp, timeouts.tcpfin, timeouts.udp),
                                         strict=True)))


def _key_refusal(key: ServiceKey) -> str | None:
    if key.address is None:
        return limits.fwmark_error(key.fwmark)
    if _family_of(key.address) is not key.family:
        return f"address {key.address} is not of family {key.family.name}"
    return limits.port_error(key.port)


def _service_refusal(service: Service) -> str | None:
    persistence = service.persistence
    prefix = None
    if persistence is not None and persistence.netmask is not None \
            and service.key.family is Family.INET6:
        prefix = limits.ipv6_prefix_error(persistence.netmask)
    return (_key_refusal(service.key)
            or limits.name_error(service.scheduler, "scheduler")
            or (limits.name_error(service.pe_name, "persistence engine")
                if service.pe_name else None)
            or (limits.persistence_timeout_error(persistence.timeout)
                if persistence is not None else None)
            or prefix)


def _threshold_refusal(value: int, what: str) -> str | None:
    # Only the range: a lower threshold above the upper one is the kernel's to refuse (ERANGE).
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= limits.THRESHOLD_MAX:
        return f"{what} {value!r} is out of range 0..{limits.THRESHOLD_MAX}"
    return None


def _dest_refusal(dest: Dest) -> str | None:
    return (limits.port_error(dest.key.port)
            or limits.weight_error(dest.weight)
            or _threshold_refusal(dest.upper_threshold, "upper threshold")
            or _threshold_refusal(dest.lower_threshold, "lower threshold"))


def refusal(op: Op) -> str | None:
    """Why ``op`` cannot go to the kernel as it is, by ``lvsd.limits`` (None: it can)."""
    match op:
        case AddService(service) | EditService(service):
            return _service_refusal(service)
        case DeleteService(key):
            return _key_refusal(key)
        case AddDest(key, dest) | EditDest(key, dest):
            return _key_refusal(key) or _dest_refusal(dest)
        case DeleteDest(key, dest_key):
            return _key_refusal(key) or limits.port_error(dest_key.port)
        case SetTimeouts(timeouts):
            return (limits.connection_timeout_error(timeouts.tcp, "tcp timeout")
                    or limits.connection_timeout_error(timeouts.tcpfin, "tcpfin timeout")
                    or limits.connection_timeout_error(timeouts.udp, "udp timeout"))
        case _:
            assert_never(op)


def request(op: Op) -> tuple[Cmd, bytes]:
    """The IPVS command and attributes that perform ``op``; raises ``EncodeError`` for what
    ``lvsd.limits`` refuses or the wire cannot carry."""
    why = refusal(op)
    if why is not None:
        raise EncodeError(why)
    try:
        match op:
            case AddService(service):
                return Cmd.NEW_SERVICE, service_nest(service)
            case EditService(service):
                return Cmd.SET_SERVICE, service_nest(service)
            case DeleteService(key):
                return Cmd.DEL_SERVICE, service_key_nest(key)
            case AddDest(key, dest):
                return Cmd.NEW_DEST, service_key_nest(key) + dest_nest(dest)
            case EditDest(key, dest):
                return Cmd.SET_DEST, service_key_nest(key) + dest_nest(dest)
            case DeleteDest(key, dest_key):
                return Cmd.DEL_DEST, service_key_nest(key) + dest_key_nest(dest_key)
            case SetTimeouts(timeouts):
                return Cmd.SET_CONFIG, timeouts_attrs(timeouts)
            case _:
                assert_never(op)
    except EncodeError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc


SYNCID_MAX = 255  # the sync messages carry a u8
SYNC_STATES = {int(s): s for s in SyncState}


def sync_refusal(op: SyncOp) -> str | None:
    """Why ``op`` cannot go to the kernel as it is (None: it can)."""
    match op:
        case StartSyncDaemon(daemon):
            if not daemon.interface or len(daemon.interface.encode()) >= IP_VS_IFNAME_MAXLEN:
                return (f"interface {daemon.interface!r} is not 1..{IP_VS_IFNAME_MAXLEN - 1} "
                        "bytes")
            if not 0 <= daemon.syncid <= SYNCID_MAX:
                return f"syncid {daemon.syncid} is outside 0..{SYNCID_MAX}"
            if not daemon.group.is_multicast:
                return f"group {daemon.group} is not a multicast address"
            if not 1 <= daemon.port <= 0xFFFF or not 1 <= daemon.ttl <= 255:
                return f"port {daemon.port} or ttl {daemon.ttl} out of range"
            if daemon.maxlen is not None and not 1 <= daemon.maxlen <= 0xFFFF:
                return f"maxlen {daemon.maxlen} is outside 1..65535"
            return None
        case StopSyncDaemon():
            return None
        case _:
            assert_never(op)


def sync_request(op: SyncOp) -> tuple[Cmd, bytes]:
    """The IPVS command and attributes that start or stop a sync daemon; raises
    ``EncodeError`` for what the wire cannot carry."""
    why = sync_refusal(op)
    if why is not None:
        raise EncodeError(why)
    match op:
        case StartSyncDaemon(daemon):
            values: dict[int, Any] = {
                DaemonAttr.STATE: int(daemon.state), DaemonAttr.MCAST_IFN: daemon.interface,
                DaemonAttr.SYNC_ID: daemon.syncid, DaemonAttr.MCAST_PORT: daemon.port,
                DaemonAttr.MCAST_TTL: daemon.ttl,
            }
            if daemon.group.version == 4:
                values[DaemonAttr.MCAST_GROUP] = daemon.group.packed
            else:
                values[DaemonAttr.MCAST_GROUP6] = daemon.group.packed
            if daemon.maxlen is not None:
                values[DaemonAttr.SYNC_MAXLEN] = daemon.maxlen
            return Cmd.NEW_DAEMON, encode_attr(CmdAttr.DAEMON, encode_nest(DAEMON, values),
                                               nested=True)
        case StopSyncDaemon(state):
            return Cmd.DEL_DAEMON, encode_attr(
                CmdAttr.DAEMON, encode_nest(DAEMON, {DaemonAttr.STATE: int(state)}), nested=True)
        case _:
            assert_never(op)


# --- decoding ---------------------------------------------------------------------------------

Span = tuple[int, int]  # [start, end) of a payload within a datagram


def walk(data: bytes, start: int, end: int, where: str) -> dict[int, Span]:
    """Attribute id -> payload span of every attribute in ``data[start:end]``."""
    found: dict[int, Span] = {}
    offset = start
    while offset < end:
        if offset + 4 > end:
            raise DecodeError(f"{where}: {end - offset} stray bytes after the last attribute")
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4 or offset + size > end:
            raise DecodeError(f"{where}: attribute {kind & NLA_TYPE_MASK} of length {size} "
                              f"runs past its {end - start}-byte container")
        found[kind & NLA_TYPE_MASK] = (offset + 4, offset + size)
        offset += (size + 3) & ~3
    return found


def describe_offset(request: bytes, offset: int) -> str:
    """The attribute of an IPVS request at byte ``offset`` (where an extended ack points),
    e.g. "destination weight"; "" when the offset is in no attribute."""
    names: list[str] = []
    nest: Nest | None = COMMAND
    start, end = NLMSG_HDRLEN + GENL_HDRLEN, len(request)
    while nest is not None:
        try:
            spans = walk(request, start, end, nest.name)
        except DecodeError:
            break
        inner: Nest | None = None
        for attr_id, (a, b) in spans.items():
            if a - 4 <= offset < b:
                attr = next((x for x in nest.attrs if x.id == attr_id), None)
                names.append(attr.name if attr else f"attribute {attr_id}")
                if attr is not None and attr.nest is not None and offset >= a:
                    inner, start, end = attr.nest, a, b
                break
        nest = inner
    return " ".join(names)


def decode_nest(nest: Nest, data: bytes, start: int, end: int) -> dict[int, Any]:
    """Attribute id -> value for every attribute of ``nest`` in the span; unknown ids skipped,
    nested ones left as their span."""
    values: dict[int, Any] = {}
    spans = walk(data, start, end, nest.name)
    for attr in nest.attrs:
        span = spans.get(attr.id)
        if span is None:
            continue
        a, b = span
        kind = attr.kind
        if attr.nest is not None:
            values[attr.id] = span
        elif kind.max_length:
            values[attr.id] = _string(data, a, b, nest, attr)
        else:
            if b - a != kind.size:
                raise DecodeError(f"{nest.name} {attr.name}: {b - a} bytes where a {kind.name} "
                                  f"has {kind.size}")
            if kind.swap:
                values[attr.id] = int.from_bytes(data[a:b], "big")
            elif kind.maximum:
                values[attr.id] = struct.unpack_from("=" + kind.fmt, data, a)[0]
            elif kind is SVC_FLAGS:
                values[attr.id] = struct.unpack_from("=II", data, a)
            else:
                values[attr.id] = data[a:b]
    return values


def _string(data: bytes, a: int, b: int, nest: Nest, attr: Attr) -> str:
    raw = data[a:b].split(b"\0", 1)[0]
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{nest.name} {attr.name} is not ASCII: {raw!r}") from exc


def _required(values: Mapping[int, Any], nest: Nest, attr_id: int) -> Any:
    if attr_id not in values:
        raise DecodeError(f"{nest.name} without its {nest.attr(attr_id).name}")
    return values[attr_id]


def _lookup(table: Mapping[int, Any], value: int, what: str) -> Any:
    found = table.get(value)
    if found is None:
        raise DecodeError(f"unknown {what} {value}")
    return found


_v4_addresses: dict[bytes, Address] = {}
_v6_addresses: dict[bytes, Address] = {}


def address_of(family: int, raw: bytes) -> Address:
    """The address in a ``union nf_inet_addr``; interned, since a table repeats them."""
    cache = _v4_addresses if family == Family.INET else _v6_addresses
    address = cache.get(raw)
    if address is None:
        if family == Family.INET:
            address = ipaddress.IPv4Address(raw[:4])
        elif family == Family.INET6:
            address = ipaddress.IPv6Address(raw)
        else:
            raise DecodeError(f"unknown address family {family}")
        if len(cache) > 65536:
            cache.clear()
        cache[raw] = address
    return address


def counters(data: bytes, span: Span | None) -> tuple[int, ...]:
    """The ten counters of a STATS64 nest, in ``STATS`` order (absent ones 0)."""
    if span is None:
        return _ZERO_COUNTERS
    values = decode_nest(STATS, data, *span)
    return tuple(values.get(attr.id, 0) for attr in STATS.attrs)


def stats(data: bytes, span: Span | None) -> ServiceStats:
    found = counters(data, span)
    return ZERO_STATS if found == _ZERO_COUNTERS else ServiceStats(*found)


def command_attrs(data: bytes, start: int, end: int) -> dict[int, Any]:
    return decode_nest(COMMAND, data, start, end)


def decode_service(data: bytes, start: int, end: int) -> Service:
    """The service in one GET_SERVICE reply's attributes."""
    top = command_attrs(data, start, end)
    a = decode_nest(SERVICE, data, *_required(top, COMMAND, CmdAttr.SERVICE))
    family = _lookup(_FAMILIES, _required(a, SERVICE, SvcAttr.AF), "address family")
    fwmark = a.get(SvcAttr.FWMARK, 0)
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        key = ServiceKey(
            family,
            _lookup(_PROTOCOLS, _required(a, SERVICE, SvcAttr.PROTOCOL), "protocol"),
            address_of(family, _required(a, SERVICE, SvcAttr.ADDR)),
            a.get(SvcAttr.PORT, 0),
        )
    flags = a.get(SvcAttr.FLAGS, (0, 0))[0]
    persistence = None
    if flags & SVC_F_PERSISTENT:
        raw_mask = a.get(SvcAttr.NETMASK)
        netmask: int | None = None
        if raw_mask is not None and family is Family.INET6:
            netmask = _U32.unpack(raw_mask)[0]
            netmask = None if netmask == HOST_PREFIX_V6 else netmask
        elif raw_mask is not None:
            netmask = _BE32.unpack(raw_mask)[0]
            netmask = None if netmask == HOST_NETMASK_V4 else netmask
        persistence = Persistence(a.get(SvcAttr.TIMEOUT, 0), netmask)
    return Service(
        key,
        scheduler=a.get(SvcAttr.SCHED_NAME, ""),
        sched_flags=flags & SCHED_FLAG_BITS,
        onepacket=bool(flags & SVC_F_ONEPACKET),
        persistence=persistence,
        pe_name=a.get(SvcAttr.PE_NAME) or None,
        stats=stats(data, a.get(SvcAttr.STATS64)),
    )


def make_dest(
    family: int, raw_address: bytes, port: int, fwd: int, weight: int, upper: int, lower: int,
    tun_type: int, tun_port: int, tun_flags: int, active: int, inactive: int, persistent: int,
    traffic: tuple[int, ...],
) -> Dest:
    """The model of one destination from its fields, in ``DEST_FIELDS`` order."""
    forward = _FORWARDS.get(fwd & IP_VS_CONN_F_FWD_MASK)
    if forward is None:
        raise DecodeError(f"unknown forwarding method {fwd & IP_VS_CONN_F_FWD_MASK}")
    if traffic == _ZERO_COUNTERS:
        # Idle destinations share one object: fewer allocations, which emulation makes dear.
        dest_stats = ZERO_DEST_STATS if active == inactive == persistent == 0 else DestStats(
            active, inactive, persistent, ZERO_STATS)
    else:
        dest_stats = DestStats(active, inactive, persistent, ServiceStats(*traffic))
    keys = _v4_dest_keys if family == Family.INET else _v6_dest_keys
    key = keys.get((raw_address, port))
    if key is None:
        key = DestKey(address_of(family, raw_address), port)
        if len(keys) > 65536:
            keys.clear()
        keys[raw_address, port] = key
    tunnel = None
    if forward is Forward.TUNNEL:
        tunnel = Tunnel(_lookup(_TUNNEL_TYPES, tun_type, "tunnel type"), tun_port, tun_flags)
    return Dest(key, weight, forward, tunnel, upper, lower, dest_stats)


# Destination keys by the kernel's raw address and port: identities, the same every dump, so
# each is made once (a frozen dataclass costs dearly under emulation).
_v4_dest_keys: dict[tuple[bytes, int], DestKey] = {}
_v6_dest_keys: dict[tuple[bytes, int], DestKey] = {}


# The destination attributes ``make_dest`` takes, in its order (the counters follow).
DEST_FIELDS = (
    DestAttr.ADDR_FAMILY, DestAttr.ADDR, DestAttr.PORT, DestAttr.FWD_METHOD, DestAttr.WEIGHT,
    DestAttr.U_THRESH, DestAttr.L_THRESH, DestAttr.TUN_TYPE, DestAttr.TUN_PORT,
    DestAttr.TUN_FLAGS, DestAttr.ACTIVE_CONNS, DestAttr.INACT_CONNS, DestAttr.PERSIST_CONNS,
)
_DEST_REQUIRED = (DestAttr.ADDR, DestAttr.FWD_METHOD)
# DestLayout.decode swaps these two by hand, on a little-endian host: the table must agree.
_BIG_ENDIAN_FIELDS = (DestAttr.PORT, DestAttr.TUN_PORT)
if tuple(a for a in DEST_FIELDS if DEST.attr(a).kind.swap) != _BIG_ENDIAN_FIELDS \
        or sys.byteorder != "little":
    raise ImportError("lvsd.ipvs.codec: DestLayout.decode assumes a little-endian host and "
                      "big-endian port fields")


def decode_dest(data: bytes, start: int, end: int, family: Family) -> Dest:
    """The destination in one GET_DEST reply's attributes (the service's family unless the
    destination names its own)."""
    top = command_attrs(data, start, end)
    a = decode_nest(DEST, data, *_required(top, COMMAND, CmdAttr.DEST))
    for attr_id in _DEST_REQUIRED:
        _required(a, DEST, attr_id)
    (_, raw_address, port, fwd, weight, upper, lower, tun_type, tun_port, tun_flags, active,
     inactive, persistent) = (a.get(attr_id, 0) for attr_id in DEST_FIELDS)
    return make_dest(a.get(DestAttr.ADDR_FAMILY, int(family)), raw_address, port, fwd, weight,
                     upper, lower, tun_type, tun_port, tun_flags, active, inactive, persistent,
                     counters(data, a.get(DestAttr.STATS64)))


def decode_timeouts(data: bytes, start: int, end: int) -> Timeouts:
    a = command_attrs(data, start, end)
    return Timeouts(*(a.get(attr_id, 0) for attr_id in TIMEOUT_ATTRS))


def decode_daemon(data: bytes, start: int, end: int) -> SyncDaemon:
    """The sync daemon in one GET_DAEMON reply's attributes."""
    top = command_attrs(data, start, end)
    a = decode_nest(DAEMON, data, *_required(top, COMMAND, CmdAttr.DAEMON))
    state = _lookup(SYNC_STATES, _required(a, DAEMON, DaemonAttr.STATE), "sync daemon state")
    if DaemonAttr.MCAST_GROUP6 in a:
        group: Address = ipaddress.IPv6Address(a[DaemonAttr.MCAST_GROUP6])
    elif DaemonAttr.MCAST_GROUP in a:
        group = ipaddress.IPv4Address(a[DaemonAttr.MCAST_GROUP])
    else:
        group = SYNC_DEFAULT_GROUP  # a kernel before 4.3 names no group: the default one
    return SyncDaemon(
        state, _required(a, DAEMON, DaemonAttr.MCAST_IFN), _required(a, DAEMON,
                                                                      DaemonAttr.SYNC_ID),
        group, a.get(DaemonAttr.MCAST_PORT, SYNC_DEFAULT_PORT),
        a.get(DaemonAttr.MCAST_TTL, SYNC_DEFAULT_TTL), a.get(DaemonAttr.SYNC_MAXLEN))


def decode_info(data: bytes, start: int, end: int) -> tuple[str, int]:
    """(version "1.2.1", connection table size) from a GET_INFO reply's attributes."""
    a = decode_nest(INFO, data, start, end)
    version = _required(a, INFO, InfoAttr.VERSION)
    return (f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}",
            _required(a, INFO, InfoAttr.CONN_TAB_SIZE))


class DestLayout:
    """The byte layout of the kernel's destination replies, learnt from one of them.

    The kernel writes every destination with the same attributes in the same order, so one
    ``unpack_from`` decodes a whole message. Every header of every later message is checked
    against the learnt ones; a message that differs is decoded by ``decode_dest``.
    Raises ``DecodeError`` when the sample cannot serve as a layout.
    """

    def __init__(self, data: bytes, start: int, end: int) -> None:
        fmt = ["="]
        headers: list[int] = []  # value indices of every attribute header (length and type)
        fields: dict[int, int] = {}  # attribute id -> value index
        count = 0

        def add(piece: str, values: int) -> int:
            nonlocal count
            fmt.append(piece)
            count += values
            return count - values

        top = walk(data, start, end, COMMAND.name)
        if list(top) != [CmdAttr.DEST] or top[CmdAttr.DEST][1] != end:
            raise DecodeError("not a lone destination")
        headers.append(add("I", 1))
        nest_start, nest_end = top[CmdAttr.DEST]
        offset = nest_start
        stats64 = -1
        wanted = {attr.id: attr for attr in DEST.attrs if attr.id in DEST_FIELDS}
        while offset < nest_end:
            size, kind = _NLA.unpack_from(data, offset)
            kind &= NLA_TYPE_MASK
            padded = (size + 3) & ~3
            headers.append(add("I", 1))
            attr = wanted.get(kind)
            if attr is not None and 4 + attr.kind.size == size:
                pad = padded - size
                fields[kind] = add(attr.kind.fmt + (f"{pad}x" if pad else ""), 1)
            elif kind == DestAttr.STATS64 and size == 4 + STATS_COUNT * 12:
                stats64 = count
                for _ in range(STATS_COUNT):
                    headers.append(add("I", 1))
                    add("Q", 1)
            elif attr is not None:
                raise DecodeError(f"destination {attr.name} of unexpected size {size}")
            elif padded > 4:
                add(f"{padded - 4}x", 0)
            offset += padded
        if len(fields) != len(DEST_FIELDS) or stats64 < 0:
            raise DecodeError("destination without every attribute or 64-bit counters")
        self.struct = struct.Struct("".join(fmt))
        if self.struct.size != end - start:
            raise DecodeError("destination layout does not add up")
        self.headers = itemgetter(*headers)
        self.expected = self.headers(self.struct.unpack_from(data, start))
        self.fields: Callable[[tuple[Any, ...]], tuple[Any, ...]] = itemgetter(
            *(fields[attr_id] for attr_id in DEST_FIELDS))
        self.counters: Callable[[tuple[Any, ...]], tuple[int, ...]] = itemgetter(
            *range(stats64 + 1, stats64 + 2 * STATS_COUNT, 2))

    def fits(self, data: bytes, start: int, end: int) -> bool:
        """Whether one message is laid out as learnt (so ``decode_all`` unpacks it at once)."""
        return (end - start == self.struct.size
                and self.headers(self.struct.unpack_from(data, start)) == self.expected)

    def decode_all(self, replies: Sequence[tuple[bytes, int, int]], family: Family
                   ) -> tuple[Dest, ...]:
        """The destinations of a dest dump: one unpack per message laid out as learnt, the
        attribute walk (``decode_dest``) for any other."""
        # Every Python operation costs ~50 times more under emulation: this loop is kept flat.
        size, unpack = self.struct.size, self.struct.unpack_from
        headers, expected, fields, counters = (self.headers, self.expected, self.fields,
                                               self.counters)
        dests = []
        for data, start, end in replies:
            if end - start == size:
                v = unpack(data, start)
                if headers(v) == expected:
                    (family_of, raw, port, fwd, weight, upper, lower, tun_type, tun_port,
                     tun_flags, active, inactive, persistent) = fields(v)
                    # The two big-endian fields (``_BIG_ENDIAN_FIELDS``), swapped from native.
                    dests.append(make_dest(
                        family_of, raw, ((port & 0xFF) << 8) | (port >> 8), fwd, weight, upper,
                        lower, tun_type, ((tun_port & 0xFF) << 8) | (tun_port >> 8), tun_flags,
                        active, inactive, persistent, counters(v)))
                    continue
            dests.append(decode_dest(data, start, end, family))
        return tuple(dests)


def decode_dests(replies: Sequence[tuple[bytes, int, int]], family: Family,
                 layout: DestLayout | None) -> tuple[Dest, ...]:
    """Every destination of a dest dump, through ``layout`` where it fits."""
    if layout is None:
        return tuple(decode_dest(*reply, family) for reply in replies)
    return layout.decode_all(replies, family)
