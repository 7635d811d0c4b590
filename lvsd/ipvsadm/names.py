"""ipvsadm's vocabulary, each table defined once: the words lvsd reads and writes for IPVS.

ipvsadm 1.31's own spellings (option letters, forwarding switches, tunnel and checksum names,
scheduler flags, listing labels) and lvsd's config words for the same things live here, so the
save format, the listing, the restore parser, the config, the metrics and the API cannot drift
apart. Pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from lvsd.model import (
    SCHED_FLAG_BITS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_CSUM,
    TUN_NOCSUM,
    TUN_REMCSUM,
    Forward,
    OpKind,
    OpVerb,
    Protocol,
    TunnelType,
)

DEFAULT_PERSISTENT_TIMEOUT = 360  # a bare -p: libipvs's IPVS_SVC_PERSISTENT_TIMEOUT (6*60)
PersistenceEngine = Literal["sip"]
PERSISTENCE_ENGINES: tuple[PersistenceEngine, ...] = ("sip",)

# --- protocols -------------------------------------------------------------------------------

ProtocolName = Literal["tcp", "udp", "sctp"]
PROTOCOL_NAMES: dict[Protocol, ProtocolName] = {
    Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}
"""lvsd's config words, which are also the services database's protocol names."""
PROTOCOL_BY_NAME: dict[str, Protocol] = {name: p for p, name in PROTOCOL_NAMES.items()}
PROTOCOL_LABELS: dict[Protocol, str] = {
    Protocol.TCP: "TCP", Protocol.UDP: "UDP", Protocol.SCTP: "SCTP", Protocol.FWMARK: "FWM"}
"""``ipvsadm -L``'s Prot column, and node_exporter's ``proto`` label."""

SERVICE_OPTIONS: dict[Protocol, str] = {
    Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service",
    Protocol.FWMARK: "-f"}
"""The option ipvsadm-save writes for a service of each protocol."""
PROTOCOL_BY_SERVICE_OPTION: dict[str, Protocol] = {
    "-t": Protocol.TCP, "--tcp-service": Protocol.TCP,
    "-u": Protocol.UDP, "--udp-service": Protocol.UDP,
    "--sctp-service": Protocol.SCTP,
    "-f": Protocol.FWMARK, "--fwmark-service": Protocol.FWMARK,
}

# --- forwarding ------------------------------------------------------------------------------

ForwardName = Literal["route", "masq", "tunnel"]
"""The forwarding methods a config may name (LOCAL is the kernel's own choice)."""
FORWARD_NAMES: dict[Forward, str] = {
    Forward.ROUTE: "route", Forward.MASQ: "masq", Forward.TUNNEL: "tunnel",
    Forward.LOCAL: "local"}
"""lvsd's words, in config, API and status page."""
FORWARD_BY_CONFIG_NAME: dict[str, Forward] = {
    "route": Forward.ROUTE, "masq": Forward.MASQ, "tunnel": Forward.TUNNEL}
FORWARD_OPTIONS: dict[Forward, str] = {
    Forward.MASQ: "-m", Forward.TUNNEL: "-i", Forward.ROUTE: "-g",
    Forward.LOCAL: "-g"}  # ipvsadm has no switch for LOCAL and prints -g
FORWARD_BY_OPTION: dict[str, Forward] = {
    "-g": Forward.ROUTE, "--gatewaying": Forward.ROUTE,
    "-m": Forward.MASQ, "--masquerading": Forward.MASQ,
    "-i": Forward.TUNNEL, "--ipip": Forward.TUNNEL,
}
FORWARD_LABELS: dict[Forward, str] = {
    Forward.MASQ: "Masq", Forward.LOCAL: "Local", Forward.TUNNEL: "Tunnel",
    Forward.ROUTE: "Route"}
"""``ipvsadm -L``'s Forward column."""

# --- tunnels ---------------------------------------------------------------------------------

TunnelName = Literal["ipip", "gue", "gre"]
TUNNEL_NAMES: dict[TunnelType, TunnelName] = {
    TunnelType.IPIP: "ipip", TunnelType.GUE: "gue", TunnelType.GRE: "gre"}
TUNNEL_BY_NAME: dict[str, TunnelType] = {name: t for t, name in TUNNEL_NAMES.items()}

CsumName = Literal["nocsum", "csum", "remcsum"]
TUNNEL_CSUM_NAMES: dict[int, CsumName] = {
    TUN_NOCSUM: "nocsum", TUN_CSUM: "csum", TUN_REMCSUM: "remcsum"}
"""Config words; ipvsadm's options are ``--tun-`` + the word."""
TUNNEL_CSUM_BY_NAME: dict[str, int] = {name: flag for flag, name in TUNNEL_CSUM_NAMES.items()}
TUNNEL_CSUM_SHORT: dict[int, str] = {TUN_NOCSUM: "-c", TUN_CSUM: "+c", TUN_REMCSUM: "r+c"}
"""``ipvsadm -L --tun-info``'s spelling."""


def tunnel_csum_option(csum: int) -> str:
    return f"--tun-{TUNNEL_CSUM_NAMES[csum]}"


# --- scheduler flags -------------------------------------------------------------------------

SCHED_FLAGS: dict[str, tuple[str | None, int]] = {
    "sh-fallback": ("sh", SVC_F_SCHED1),
    "sh-port": ("sh", SVC_F_SCHED2),
    "mh-fallback": ("mh", SVC_F_SCHED1),
    "mh-port": ("mh", SVC_F_SCHED2),
    "flag-1": (None, SVC_F_SCHED1),
    "flag-2": (None, SVC_F_SCHED2),
    "flag-3": (None, SVC_F_SCHED3),
}
"""``-b`` names: the scheduler a name needs (None: any), and its bit."""
_NAMED_SCHED_FLAGS = ("fallback", "port")


def sched_flag_names(scheduler: str, flags: int, *, complete: bool = True) -> list[str]:
    """The ``-b`` names of ``flags`` as ipvsadm prints them: ``sh``/``mh`` name their first two
    bits and, unless ``complete``, drop the third (ipvsadm-save prints nothing for it)."""
    if scheduler in ("sh", "mh"):
        names = [f"{scheduler}-{word}" for word, bit in
                 zip(_NAMED_SCHED_FLAGS, (SVC_F_SCHED1, SVC_F_SCHED2), strict=True)
                 if flags & bit]
        if complete and flags & SVC_F_SCHED3:
            names.append("flag-3")
        return names
    return generic_sched_flag_names(flags)


def generic_sched_flag_names(flags: int) -> list[str]:
    """The scheduler-independent ``-b`` names of ``flags``: ``flag-1`` … ``flag-3``."""
    return [f"flag-{n}" for n, bit in enumerate((SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3),
                                                start=1) if flags & bit]


def has_sched_flags(flags: int) -> bool:
    return bool(flags & SCHED_FLAG_BITS)


# --- commands and options, as ipvsadm's popt table spells them ------------------------------


class Command(enum.Enum):
    """The ipvsadm commands a restore file may hold (ipvsadm's ``cmdnames``)."""

    ADD_SERVICE = "add-service"
    EDIT_SERVICE = "edit-service"
    DELETE_SERVICE = "delete-service"
    ADD_SERVER = "add-server"
    EDIT_SERVER = "edit-server"
    DELETE_SERVER = "delete-server"
    CLEAR = "clear"
    SET = "set"


COMMANDS: dict[str, Command] = {
    "-A": Command.ADD_SERVICE, "--add-service": Command.ADD_SERVICE,
    "-E": Command.EDIT_SERVICE, "--edit-service": Command.EDIT_SERVICE,
    "-D": Command.DELETE_SERVICE, "--delete-service": Command.DELETE_SERVICE,
    "-a": Command.ADD_SERVER, "--add-server": Command.ADD_SERVER,
    "-e": Command.EDIT_SERVER, "--edit-server": Command.EDIT_SERVER,
    "-d": Command.DELETE_SERVER, "--delete-server": Command.DELETE_SERVER,
    "-C": Command.CLEAR, "--clear": Command.CLEAR,
    "--set": Command.SET,
}
OTHER_COMMANDS = frozenset((
    "-L", "-l", "--list", "-Z", "--zero", "-R", "--restore", "-S", "--save", "-h", "--help",
    "-v", "--version", "--start-daemon", "--stop-daemon"))
"""ipvsadm commands that change no rule: not for a restore file."""

COMMAND_OF_OP: dict[tuple[OpKind, OpVerb], str] = {
    ("service", "add"): "-A", ("service", "edit"): "-E", ("service", "delete"): "-D",
    ("destination", "add"): "-a", ("destination", "edit"): "-e",
    ("destination", "delete"): "-d", ("timeouts", "set"): "--set",
    ("sync daemon", "start"): "--start-daemon", ("sync daemon", "stop"): "--stop-daemon",
}
"""The ipvsadm command doing what a plan operation does (by ``op.kind`` and ``op.verb``)."""

Arity = Literal["none", "required", "optional"]


class Slot(enum.Enum):
    """ipvsadm's option slots (its ``optnames``): a second option in one slot is an error."""

    SERVICE = "service-address"
    SCHEDULER = "scheduler"
    PERSISTENT = "persistent"
    NETMASK = "netmask"
    SERVER = "real-server"
    FORWARD = "forwarding-method"
    WEIGHT = "weight"
    UPPER = "u-threshold"
    LOWER = "l-threshold"
    IPV6 = "ipv6"
    ONEPACKET = "ops"
    PE = "pe"
    SCHED_FLAGS = "sched-flags"
    TUN_TYPE = "tun-type"
    TUN_PORT = "tun-port"
    TUN_NOCSUM = "tun-nocsum"
    TUN_CSUM = "tun-csum"
    TUN_REMCSUM = "tun-remcsum"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    slot: Slot
    arity: Arity


_OPTION_TABLE: tuple[tuple[tuple[str, ...], Slot, Arity], ...] = (
    (tuple(PROTOCOL_BY_SERVICE_OPTION), Slot.SERVICE, "required"),
    (("-s", "--scheduler"), Slot.SCHEDULER, "required"),
    (("-p", "--persistent"), Slot.PERSISTENT, "optional"),
    (("-M", "--netmask"), Slot.NETMASK, "required"),
    (("-r", "--real-server"), Slot.SERVER, "required"),
    (tuple(FORWARD_BY_OPTION), Slot.FORWARD, "none"),
    (("-w", "--weight"), Slot.WEIGHT, "required"),
    (("-x", "--u-threshold"), Slot.UPPER, "required"),
    (("-y", "--l-threshold"), Slot.LOWER, "required"),
    (("-6", "--ipv6"), Slot.IPV6, "none"),
    (("-o", "--ops"), Slot.ONEPACKET, "none"),
    (("--pe",), Slot.PE, "required"),
    (("-b", "--sched-flags"), Slot.SCHED_FLAGS, "required"),
    (("--tun-type",), Slot.TUN_TYPE, "required"),
    (("--tun-port",), Slot.TUN_PORT, "required"),
    (("--tun-nocsum",), Slot.TUN_NOCSUM, "none"),
    (("--tun-csum",), Slot.TUN_CSUM, "none"),
    (("--tun-remcsum",), Slot.TUN_REMCSUM, "none"),
)
OPTIONS: dict[str, OptionSpec] = {
    spelling: OptionSpec(slot, arity)
    for spellings, slot, arity in _OPTION_TABLE for spelling in spellings}
OTHER_OPTIONS = frozenset((
    "-n", "--numeric", "-c", "--connection", "--timeout", "--daemon", "--stats", "--rate",
    "--thresholds", "--persistent-conn", "--nosort", "--sort", "-X", "--exact", "--tun-info",
    "--mcast-interface", "--syncid", "--mcast-group", "--mcast-port", "--mcast-ttl",
    "--sync-maxlen"))
"""ipvsadm options of listing and the sync daemon: never part of a rule."""

TUNNEL_SLOTS = (Slot.TUN_TYPE, Slot.TUN_PORT, Slot.TUN_NOCSUM, Slot.TUN_CSUM, Slot.TUN_REMCSUM)
CSUM_OF_SLOT: dict[Slot, int] = {
    Slot.TUN_NOCSUM: TUN_NOCSUM, Slot.TUN_CSUM: TUN_CSUM, Slot.TUN_REMCSUM: TUN_REMCSUM}

_SERVICE_SLOTS = frozenset((Slot.SERVICE, Slot.SCHEDULER, Slot.PERSISTENT, Slot.NETMASK,
                            Slot.ONEPACKET, Slot.PE, Slot.SCHED_FLAGS, Slot.IPV6))
_SERVER_SLOTS = frozenset((Slot.SERVICE, Slot.SERVER, Slot.FORWARD, Slot.WEIGHT, Slot.UPPER,
                           Slot.LOWER, Slot.IPV6, *TUNNEL_SLOTS))
ALLOWED_SLOTS: dict[Command, frozenset[Slot]] = {
    Command.ADD_SERVICE: _SERVICE_SLOTS, Command.EDIT_SERVICE: _SERVICE_SLOTS,
    Command.DELETE_SERVICE: frozenset((Slot.SERVICE, Slot.IPV6)),
    Command.ADD_SERVER: _SERVER_SLOTS, Command.EDIT_SERVER: _SERVER_SLOTS,
    Command.DELETE_SERVER: frozenset((Slot.SERVICE, Slot.SERVER, Slot.IPV6)),
    Command.CLEAR: frozenset(), Command.SET: frozenset(),
}
"""ipvsadm's ``commands_v_options``, for the commands a restore file may hold."""
