"""What a real server needs for its VIPs, pure: pieces, what is missing, what changed."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lvsd.model import Address

Mode = Literal["dr", "tun"]
TUNNELS = {4: ("tunl0", "ipip"), 6: ("ip6tnl0", "ip6tnl")}
RECORD_FORMAT = 1
LOOSE_RP_FILTER = frozenset({"0", "2"})  # not strict; the effective value is max(all, dev)


def prefix_of(address: Address) -> int:
    return 32 if address.version == 4 else 128


def sysctl_path(name: str) -> tuple[str, ...]:
    """/proc/sys path parts of a sysctl(8) name (a slash in a part stands for a dot)."""
    return tuple(part.replace("/", ".") for part in name.split("."))


def conf(device: str, key: str) -> str:
    return f"net.ipv4.conf.{device.replace('.', '/')}.{key}"


@dataclass(frozen=True, slots=True)
class Sysctl:
    name: str  # as sysctl(8) spells it
    value: str  # what apply writes
    accepted: frozenset[str] = frozenset()  # values that need no change; empty: {value}

    def satisfied_by(self, current: str | None) -> bool:
        return current is not None and current in (self.accepted or {self.value})

    @property
    def fix(self) -> str:
        return f"sysctl -w {self.name}={self.value}"


@dataclass(frozen=True, slots=True)
class VipAddress:
    device: str
    address: Address

    @property
    def fix(self) -> str:
        return f"ip addr add {self.address}/{prefix_of(self.address)} dev {self.device}"


@dataclass(frozen=True, slots=True)
class Tunnel:
    device: str
    kind: str  # "ipip" or "ip6tnl"

    @property
    def fix(self) -> str:
        return f"ip link add {self.device} type {self.kind}"


@dataclass(frozen=True, slots=True)
class LinkUp:
    device: str

    @property
    def fix(self) -> str:
        return f"ip link set {self.device} up"


Piece = Sysctl | VipAddress | Tunnel | LinkUp


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    kind: str | None  # IFLA_INFO_KIND: "ipip", "veth", None for lo and plain devices
    up: bool


@dataclass(frozen=True, slots=True)
class HostState:
    """What a real server has now: its links, their addresses, the sysctls read."""

    links: Mapping[str, Link] = field(default_factory=dict)
    addresses: Mapping[str, frozenset[Address]] = field(default_factory=dict)
    sysctls: Mapping[str, str | None] = field(default_factory=dict)

    def interfaces(self) -> list[str]:
        """The interfaces carrying IPv4 traffic: those with an IPv4 address, but lo and the
        tunnel devices."""
        tunnels = {device for device, _ in TUNNELS.values()}
        return sorted(name for name, held in self.addresses.items()
                      if name != "lo" and name not in tunnels
                      and (self.links.get(name) is None
                           or self.links[name].kind not in ("ipip", "ip6tnl"))
                      and any(address.version == 4 for address in held))


def sysctls_wanted(vips: Sequence[Address], mode: Mode, host: HostState) -> list[Sysctl]:
    """ARP silence for the IPv4 VIPs (as the seeds set it: all, default, lo and each
    interface); with TUN, rp_filter loose where decapsulated packets arrive."""
    if not any(vip.version == 4 for vip in vips):
        return []  # IPv6 answers neighbour solicitations only for the receiving device's own
    wanted: list[Sysctl] = []
    devices = ["all", "default", "lo", *host.interfaces()]
    for device in devices:
        wanted.append(Sysctl(conf(device, "arp_ignore"), "1"))
        wanted.append(Sysctl(conf(device, "arp_announce"), "2"))
    if mode == "tun":
        wanted.append(Sysctl(conf("all", "rp_filter"), "2", LOOSE_RP_FILTER))
        wanted.append(Sysctl(conf(TUNNELS[4][0], "rp_filter"), "0", LOOSE_RP_FILTER))
    return wanted


def wanted(vips: Sequence[Address], mode: Mode, host: HostState) -> list[Piece]:
    """Every piece, in the order apply makes them (a tunnel before its sysctls)."""
    pieces: list[Piece] = []
    for version in sorted({vip.version for vip in vips}):
        if mode == "tun":
            device, kind = TUNNELS[version]
            pieces += [Tunnel(device, kind), LinkUp(device)]
    for vip in vips:
        device = TUNNELS[vip.version][0] if mode == "tun" else "lo"
        pieces.append(VipAddress(device, vip))
    return pieces + list(sysctls_wanted(vips, mode, host))


def is_missing(piece: Piece, host: HostState) -> bool:
    match piece:
        case Sysctl():
            return not piece.satisfied_by(host.sysctls.get(piece.name))
        case VipAddress():
            return piece.address not in host.addresses.get(piece.device, frozenset())
        case Tunnel():
            return piece.device not in host.links
        case LinkUp():
            link = host.links.get(piece.device)
            return link is None or not link.up


def missing(pieces: Sequence[Piece], host: HostState) -> list[Piece]:
    return [piece for piece in pieces if is_missing(piece, host)]


def describe(piece: Piece, host: HostState) -> str:
    """What is missing, as check prints it."""
    match piece:
        case Sysctl():
            current = host.sysctls.get(piece.name)
            now = "absent" if current is None else f"{current}"
            return f"{piece.name} is {now}, wants {piece.value}"
        case VipAddress():
            return f"{piece.address}/{prefix_of(piece.address)} is not on {piece.device}"
        case Tunnel():
            return f"no {piece.kind} tunnel device {piece.device}"
        case LinkUp():
            return f"{piece.device} is down"


# --- what apply changed -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One change apply made: the piece, and for a sysctl the value it replaced."""

    piece: Piece
    previous: str | None = None

    def as_json(self) -> dict[str, Any]:
        match self.piece:
            case Sysctl(name=name, value=value):
                return {"kind": "sysctl", "name": name, "value": value, "previous": self.previous}
            case VipAddress(device=device, address=address):
                return {"kind": "address", "device": device, "address": str(address)}
            case Tunnel(device=device, kind=kind):
                return {"kind": "tunnel", "device": device, "type": kind}
            case LinkUp(device=device):
                return {"kind": "up", "device": device}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        match data.get("kind"):
            case "sysctl":
                return cls(Sysctl(str(data["name"]), str(data["value"])),
                           None if data.get("previous") is None else str(data["previous"]))
            case "address":
                return cls(VipAddress(str(data["device"]),
                                      ipaddress.ip_address(str(data["address"]))))
            case "tunnel":
                return cls(Tunnel(str(data["device"]), str(data["type"])))
            case "up":
                return cls(LinkUp(str(data["device"])))
            case other:
                raise ValueError(f"unknown change kind {other!r}")


@dataclass(frozen=True, slots=True)
class Record:
    """What every apply on this host changed, oldest first; remove undoes it newest first.
    ``files`` are the --persist files written, with their previous content (None: absent)."""

    mode: Mode
    vips: tuple[Address, ...] = ()
    changes: tuple[Change, ...] = ()
    files: Mapping[str, str | None] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({
            "format": RECORD_FORMAT, "mode": self.mode, "vips": [str(v) for v in self.vips],
            "changes": [change.as_json() for change in self.changes],
            "files": dict(self.files),
        }, indent=2) + "\n"

    @classmethod
    def loads(cls, text: str) -> Record:
        """Raises ValueError for anything but a record this version wrote."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not an lvsd realserver record (format {RECORD_FORMAT})")
        mode = data.get("mode")
        if mode not in ("dr", "tun"):
            raise ValueError(f"unknown mode {mode!r}")
        try:
            files = {str(path): None if content is None else str(content)
                     for path, content in dict(data.get("files", {})).items()}
            return cls(mode, tuple(ipaddress.ip_address(str(v)) for v in data["vips"]),
                       tuple(Change.from_json(c) for c in data["changes"]), files)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed record: {exc!r}") from exc

    def merged(self, vips: Sequence[Address], changes: Sequence[Change],
               files: Mapping[str, str | None]) -> Record:
        """This record after another apply: new VIPs and changes appended; for a file already
        written, the oldest previous content is kept."""
        known = list(self.vips) + [vip for vip in vips if vip not in self.vips]
        return Record(self.mode, tuple(known), self.changes + tuple(changes),
                      {**files, **self.files})

    def without(self, vips: Sequence[Address]) -> tuple[list[Change], Record | None]:
        """(changes to undo, the record left) when removing ``vips``: their addresses; and,
        once no VIP is left, every change and file (None: nothing left to record)."""
        left = tuple(vip for vip in self.vips if vip not in vips)
        if not left:
            return list(reversed(self.changes)), None
        undo = [c for c in self.changes
                if isinstance(c.piece, VipAddress) and c.piece.address in vips]
        kept = tuple(c for c in self.changes if c not in undo)
        return list(reversed(undo)), Record(self.mode, left, kept, self.files)


def done(change: Change) -> str:
    """What apply did, as it prints it."""
    match change.piece:
        case Sysctl(name=name, value=value):
            was = "absent" if change.previous is None else change.previous
            return f"set {name}={value} (was {was})"
        case VipAddress(device=device, address=address):
            return f"added {address}/{prefix_of(address)} to {device}"
        case Tunnel(device=device, kind=kind):
            return f"created the {kind} tunnel {device}"
        case LinkUp(device=device):
            return f"set {device} up"


def undone(change: Change) -> str:
    """What remove did, as it prints it."""
    match change.piece:
        case Sysctl(name=name):
            return f"set {name}={change.previous} again"
        case VipAddress(device=device, address=address):
            return f"deleted {address}/{prefix_of(address)} from {device}"
        case Tunnel(device=device):
            return f"deleted {device}"
        case LinkUp(device=device):
            return f"set {device} down"


def persisted_values(pieces: Sequence[Piece], host: HostState) -> dict[str, str]:
    """The sysctls --persist writes: each wanted one at its current value where that is
    accepted (a loose rp_filter stays as it is), else at the value apply sets."""
    values = {}
    for piece in pieces:
        if isinstance(piece, Sysctl):
            current = host.sysctls.get(piece.name)
            values[piece.name] = current if piece.satisfied_by(current) and current is not None \
                else piece.value
    return values
