"""Frozen value types for the IPVS table.

Identity is kept apart from attributes: a service is identified by its ``ServiceKey``, a real
server (destination) by its ``DestKey``. Counters and connection numbers are observations
(``compare=False``): two tables that differ only in traffic compare equal.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Family(enum.IntEnum):
    INET = 2
    INET6 = 10

    @classmethod
    def of(cls, address: Address) -> Family:
        return cls.INET if address.version == 4 else cls.INET6


class Protocol(enum.IntEnum):
    """The service's transport; ``FWMARK`` is a firewall-mark service (no address or port)."""

    FWMARK = 0
    TCP = 6
    UDP = 17
    SCTP = 132


class Forward(enum.IntEnum):
    """Packet-forwarding method; values are the kernel's IP_VS_CONN_F_* codes."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3


class TunnelType(enum.IntEnum):
    IPIP = 0
    GUE = 1
    GRE = 2


# Tunnel checksum flags (IP_VS_TUNNEL_ENCAP_FLAG_*).
TUN_NOCSUM = 0x0
TUN_CSUM = 0x1
TUN_REMCSUM = 0x2

# Service flag bits the kernel reports (IP_VS_SVC_F_*).
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
SCHED_FLAG_BITS = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

DEFAULT_SCHEDULER = "wlc"  # ipvsadm's DEF_SCHED, and the kernel's default
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "mh",
    "twos",
)

# Default persistence granularity: a single client address.
HOST_NETMASK_V4 = 0xFFFFFFFF
HOST_PREFIX_V6 = 128


def parse_address(text: str) -> Address:
    return ipaddress.ip_address(text.strip("[]"))


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """What the kernel identifies a virtual service by.

    For a fwmark service ``address`` is None and ``port`` is 0; otherwise ``fwmark`` is 0.
    """

    family: Family
    protocol: Protocol
    address: Address | None
    port: int
    fwmark: int = 0
    # Keys are hashed in every dict of the daemon; an address hashes through hex(int).
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.family, self.protocol, self.address, self.port,
                                                self.fwmark)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[ServiceKey], tuple[Any, ...]]:
        # The hash of an address differs between processes: a copy hashes anew.
        return ServiceKey, (self.family, self.protocol, self.address, self.port, self.fwmark)

    @classmethod
    def virtual(cls, protocol: Protocol, address: Address | str, port: int) -> ServiceKey:
        addr = parse_address(address) if isinstance(address, str) else address
        if protocol is Protocol.FWMARK:
            raise ValueError("use ServiceKey.mark() for fwmark services")
        return cls(Family.of(addr), protocol, addr, port, 0)

    @classmethod
    def mark(cls, fwmark: int, family: Family = Family.INET) -> ServiceKey:
        return cls(family, Protocol.FWMARK, None, 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.protocol is Protocol.FWMARK

    def __str__(self) -> str:
        if self.address is None:
            suffix = " ipv6" if self.family is Family.INET6 else ""
            return f"fwm:{self.fwmark}{suffix}"
        return f"{self.protocol.name.lower()}:{format_endpoint(self.address, self.port)}"


def format_endpoint(address: Address, port: int) -> str:
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class Persistence:
    """``-p timeout`` and ``-M netmask``: for IPv4 a 32-bit mask, for IPv6 a prefix length."""

    timeout: int = 300
    netmask: int | None = None  # None: one client address (the kernel default)


@dataclass(frozen=True, slots=True)
class ServiceStats:
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


ZERO_STATS = ServiceStats()


@dataclass(frozen=True, slots=True)
class Service:
    key: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    sched_flags: int = 0  # SVC_F_SCHED1..3 bits: sh/mh-fallback, sh/mh-port, flag-3
    onepacket: bool = False
    persistence: Persistence | None = None
    pe_name: str | None = None  # persistence engine, e.g. "sip"
    stats: ServiceStats = field(default=ZERO_STATS, compare=False, repr=False)

    @property
    def kernel_flags(self) -> int:
        flags = self.sched_flags & SCHED_FLAG_BITS
        if self.persistence is not None:
            flags |= SVC_F_PERSISTENT
        if self.onepacket:
            flags |= SVC_F_ONEPACKET
        return flags


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    address: Address
    port: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.address, self.port)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[DestKey], tuple[Any, ...]]:
        return DestKey, (self.address, self.port)

    def __str__(self) -> str:
        return format_endpoint(self.address, self.port)


@dataclass(frozen=True, slots=True)
class Tunnel:
    type: TunnelType = TunnelType.IPIP
    port: int = 0  # GUE only
    csum: int = TUN_NOCSUM  # TUN_NOCSUM, TUN_CSUM or TUN_REMCSUM


@dataclass(frozen=True, slots=True)
class DestStats:
    active: int = 0
    inactive: int = 0
    persistent: int = 0
    traffic: ServiceStats = ZERO_STATS


ZERO_DEST_STATS = DestStats()


@dataclass(frozen=True, slots=True)
class Dest:
    key: DestKey
    weight: int = 1
    forward: Forward = Forward.ROUTE
    tunnel: Tunnel | None = None  # only for Forward.TUNNEL
    upper_threshold: int = 0
    lower_threshold: int = 0
    stats: DestStats = field(default=ZERO_DEST_STATS, compare=False, repr=False)

    def with_weight(self, weight: int) -> Dest:
        if weight == self.weight:
            return self  # frozen: the same value (planning reuses the config's dests)
        return Dest(self.key, weight, self.forward, self.tunnel, self.upper_threshold,
                    self.lower_threshold, self.stats)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``ipvsadm --set tcp tcpfin udp`` (seconds); 0 in a request means unchanged."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


KERNEL_DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True, slots=True)
class VirtualService:
    """A service with its destinations, in the order the kernel lists them."""

    service: Service
    dests: tuple[Dest, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return self.service.key

    def dest_map(self) -> dict[DestKey, Dest]:
        return {d.key: d for d in self.dests}


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """A whole IPVS table: services in kernel dump order, and optionally its timeouts.

    Equality ignores the order of services and destinations and every counter.
    """

    services: tuple[VirtualService, ...] = ()
    timeouts: Timeouts | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return self.timeouts == other.timeouts and _canonical(self) == _canonical(other)

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[VirtualService]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def by_key(self) -> dict[ServiceKey, VirtualService]:
        return {vs.key: vs for vs in self.services}

    def only(self, keys: Iterable[ServiceKey]) -> Table:
        wanted = set(keys)
        return Table(tuple(vs for vs in self.services if vs.key in wanted), self.timeouts)

    @property
    def dest_count(self) -> int:
        return sum(len(vs.dests) for vs in self.services)


def _canonical(table: Table) -> Mapping[ServiceKey, tuple[Service, Mapping[DestKey, Dest]]]:
    return {vs.key: (vs.service, vs.dest_map()) for vs in table.services}


# --- Operations: what a plan asks the kernel to do -------------------------------------------
#
# Each operation describes itself: ``kind`` (what it acts on), ``verb``, ``target`` (which one),
# ``name`` (the metric label, ``add_dest``) and ``operation`` (the words a log or an error uses,
# "add destination"). Code that dispatches on operations matches the classes and ends in
# ``assert_never``, so a new operation is a type error wherever it is not handled.

OpKind = Literal["service", "destination", "timeouts", "sync daemon"]
OpVerb = Literal["add", "edit", "delete", "set", "start", "stop"]
_SHORT_KIND: dict[str, str] = {"service": "service", "destination": "dest", "timeouts": "timeouts",
                               "sync daemon": "sync_daemon"}


class _Describes:
    __slots__ = ()
    kind: ClassVar[OpKind]
    verb: ClassVar[OpVerb]

    if TYPE_CHECKING:

        @property
        def target(self) -> str: ...

    @property
    def name(self) -> str:
        return f"{self.verb}_{_SHORT_KIND[self.kind]}"

    @property
    def operation(self) -> str:
        return f"{self.verb} {self.kind}"

    def __str__(self) -> str:
        return f"{self.operation} {self.target}"


@dataclass(frozen=True, slots=True)
class AddService(_Describes):
    service: Service
    kind: ClassVar[OpKind] = "service"
    verb: ClassVar[OpVerb] = "add"

    @property
    def target(self) -> str:
        return str(self.service.key)


@dataclass(frozen=True, slots=True)
class EditService(_Describes):
    service: Service
    kind: ClassVar[OpKind] = "service"
    verb: ClassVar[OpVerb] = "edit"

    @property
    def target(self) -> str:
        return str(self.service.key)


@dataclass(frozen=True, slots=True)
class DeleteService(_Describes):
    key: ServiceKey
    kind: ClassVar[OpKind] = "service"
    verb: ClassVar[OpVerb] = "delete"

    @property
    def target(self) -> str:
        return str(self.key)


@dataclass(frozen=True, slots=True)
class AddDest(_Describes):
    service: ServiceKey
    dest: Dest
    kind: ClassVar[OpKind] = "destination"
    verb: ClassVar[OpVerb] = "add"

    @property
    def target(self) -> str:
        return f"{self.service} -> {self.dest.key}"


@dataclass(frozen=True, slots=True)
class EditDest(_Describes):
    service: ServiceKey
    dest: Dest
    kind: ClassVar[OpKind] = "destination"
    verb: ClassVar[OpVerb] = "edit"

    @property
    def target(self) -> str:
        return f"{self.service} -> {self.dest.key}"


@dataclass(frozen=True, slots=True)
class DeleteDest(_Describes):
    service: ServiceKey
    dest: DestKey
    kind: ClassVar[OpKind] = "destination"
    verb: ClassVar[OpVerb] = "delete"

    @property
    def target(self) -> str:
        return f"{self.service} -> {self.dest}"


@dataclass(frozen=True, slots=True)
class SetTimeouts(_Describes):
    timeouts: Timeouts
    kind: ClassVar[OpKind] = "timeouts"
    verb: ClassVar[OpVerb] = "set"

    @property
    def target(self) -> str:
        t = self.timeouts
        return f"tcp {t.tcp} tcpfin {t.tcpfin} udp {t.udp}"


Op = AddService | EditService | DeleteService | AddDest | EditDest | DeleteDest | SetTimeouts
OP_NAMES: tuple[str, ...] = tuple(
    f"{cls.verb}_{_SHORT_KIND[cls.kind]}"
    for cls in (AddService, EditService, DeleteService, AddDest, EditDest, DeleteDest, SetTimeouts)
)


# --- The kernel's connection-sync daemons (``ipvsadm --start-daemon``) ------------------------


class SyncState(enum.IntEnum):
    """Which thread set of the sync daemon: the kernel runs at most one of each per netns."""

    MASTER = 1  # IP_VS_STATE_MASTER: sends this director's connections
    BACKUP = 2  # IP_VS_STATE_BACKUP: receives the others'

    @property
    def label(self) -> str:
        return self.name.lower()


SYNC_DEFAULT_GROUP = ipaddress.IPv4Address("224.0.0.81")  # the kernel's IP_VS_SYNC_GROUP
SYNC_DEFAULT_PORT = 8848
SYNC_DEFAULT_TTL = 1


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """One sync thread set as the kernel runs it (``ipvsadm -L --daemon``); ``maxlen`` None
    leaves the message size to the kernel (a dump always reports a number)."""

    state: SyncState
    interface: str
    syncid: int = 0
    group: Address = SYNC_DEFAULT_GROUP
    port: int = SYNC_DEFAULT_PORT
    ttl: int = SYNC_DEFAULT_TTL
    maxlen: int | None = None

    def satisfied_by(self, running: SyncDaemon) -> bool:
        """Whether ``running`` is this daemon (a wanted ``maxlen`` None takes any size)."""
        return (self.state, self.interface, self.syncid, self.group, self.port, self.ttl) == (
            running.state, running.interface, running.syncid, running.group, running.port,
            running.ttl) and (self.maxlen is None or self.maxlen == running.maxlen)

    def __str__(self) -> str:
        size = f" maxlen {self.maxlen}" if self.maxlen is not None else ""
        return (f"{self.state.label} on {self.interface} syncid {self.syncid} "
                f"group {self.group} port {self.port} ttl {self.ttl}{size}")


@dataclass(frozen=True, slots=True)
class StartSyncDaemon(_Describes):
    """Like the table ops, but run by the sync-daemon owner, not a table plan (``Op``)."""

    daemon: SyncDaemon
    kind: ClassVar[OpKind] = "sync daemon"
    verb: ClassVar[OpVerb] = "start"

    @property
    def state(self) -> SyncState:
        return self.daemon.state

    @property
    def target(self) -> str:
        return str(self.daemon)


@dataclass(frozen=True, slots=True)
class StopSyncDaemon(_Describes):
    state: SyncState
    kind: ClassVar[OpKind] = "sync daemon"
    verb: ClassVar[OpVerb] = "stop"

    @property
    def target(self) -> str:
        return self.state.label


SyncOp = StartSyncDaemon | StopSyncDaemon
SYNC_OP_NAMES: tuple[str, ...] = ("start_sync_daemon", "stop_sync_daemon")
