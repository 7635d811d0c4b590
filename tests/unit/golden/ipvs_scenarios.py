"""The conversations with the kernel that ``ipvs-6.1.json`` holds, shared by the capture
program (``capture.py``, run in the VM) and the golden-byte tests (``test_codec.py``).

Each scenario runs on a fresh ``NetlinkIpvs`` (so its sequence numbers start at 1 and its
first exchange resolves the IPVS family) against one namespace whose table the scenarios
build up in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Literal

from lvsd.ipvs.abi import Cmd, CmdAttr
from lvsd.ipvs.codec import encode_attr
from lvsd.model import (
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_CSUM,
    TUN_NOCSUM,
    TUN_REMCSUM,
    AddDest,
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
    StartSyncDaemon,
    StopSyncDaemon,
    SyncDaemon,
    SyncOp,
    SyncState,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
)

GOLDEN = Path(__file__).with_name("ipvs-6.1.json")


def dest(address: str, port: int, weight: int = 1, forward: Forward = Forward.ROUTE,
         tunnel: Tunnel | None = None, upper: int = 0, lower: int = 0) -> Dest:
    return Dest(DestKey(ip_address(address), port), weight, forward, tunnel, upper, lower)


WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)
DNS6 = ServiceKey.virtual(Protocol.UDP, "2001:db8::1", 53)
SCTP4 = ServiceKey.virtual(Protocol.SCTP, "192.0.2.2", 3868)
SCTP6 = ServiceKey.virtual(Protocol.SCTP, "2001:db8::2", 3868)
SIP = ServiceKey.virtual(Protocol.UDP, "192.0.2.3", 5060)
MARK4 = ServiceKey.mark(7)
MARK6 = ServiceKey.mark(8, Family.INET6)
TLS6 = ServiceKey.virtual(Protocol.TCP, "2001:db8::3", 443)
# Traffic is sent to this one (from a dummy link's network) so the dump carries counters.
COUNTED = ServiceKey.virtual(Protocol.UDP, "192.0.2.100", 9)
COUNTED_DATAGRAMS = 4

SERVICES = (
    VirtualService(
        Service(WEB, "rr", persistence=Persistence(300, 0xFFFFFF00)),
        (dest("198.51.100.11", 80, 3, Forward.MASQ, upper=100, lower=10),
         dest("198.51.100.12", 80, 1, Forward.TUNNEL, Tunnel(TunnelType.GUE, 6080, TUN_CSUM)),
         dest("198.51.100.13", 80, 0, Forward.TUNNEL, Tunnel(TunnelType.IPIP, 0, TUN_NOCSUM)),
         dest("198.51.100.15", 80, 1, Forward.TUNNEL,
              Tunnel(TunnelType.GUE, 6081, TUN_REMCSUM))),
    ),
    VirtualService(
        Service(DNS6, "mh", sched_flags=SVC_F_SCHED1 | SVC_F_SCHED2,
                persistence=Persistence(60, 64)),
        (dest("2001:db8::11", 53),
         dest("2001:db8::12", 53, 2, Forward.MASQ),
         dest("2001:db8::13", 53, 1, Forward.TUNNEL, Tunnel(TunnelType.GRE, 0, TUN_CSUM))),
    ),
    VirtualService(Service(SCTP4, "sh", sched_flags=SVC_F_SCHED1 | SVC_F_SCHED2),
                   (dest("198.51.100.21", 3868),)),
    VirtualService(Service(SCTP6, "rr"), (dest("2001:db8::21", 3868, 1, Forward.MASQ),)),
    VirtualService(Service(SIP, "rr", persistence=Persistence(60), pe_name="sip"),
                   (dest("198.51.100.31", 5060),)),
    VirtualService(Service(MARK4, "wlc", onepacket=True, persistence=Persistence(120)),
                   (dest("198.51.100.51", 0),)),
    VirtualService(Service(MARK6, "rr"), (dest("2001:db8::81", 0),)),
    VirtualService(Service(TLS6, "wrr", sched_flags=SVC_F_SCHED3),
                   (dest("2001:db8::31", 443, upper=50),)),
    VirtualService(Service(COUNTED, "rr"),
                   (dest("198.51.100.2", 9, 1, Forward.MASQ),
                    dest("198.51.100.3", 9, 1, Forward.MASQ))),
)
TIMEOUTS = Timeouts(30, 5, 60)

EDITED_WEB = Service(WEB, "wrr", persistence=Persistence(600))
EDITED_DNS6 = Service(DNS6, "mh", sched_flags=SVC_F_SCHED2)
EDITED_DEST4 = dest("198.51.100.11", 80, 7, Forward.ROUTE)
EDITED_DEST6 = dest("2001:db8::12", 53, 0, Forward.MASQ, upper=9, lower=3)

NEW_DEST = dest("198.51.100.40", 80)

# Five requests in one window; the third fails (the service exists already).
WINDOW_OPS: tuple[Op, ...] = (
    AddDest(WEB, dest("198.51.100.41", 80)),
    AddDest(WEB, dest("198.51.100.42", 80)),
    AddService(Service(WEB, "rr")),
    AddDest(WEB, dest("198.51.100.43", 80)),
    DeleteDest(WEB, DestKey(ip_address("198.51.100.41"), 80)),
)

REFUSED_OPS: tuple[Op, ...] = (
    AddService(Service(WEB, "rr")),  # EEXIST
    AddService(Service(ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 81), "nosuch")),  # ENOENT
    EditService(Service(ServiceKey.virtual(Protocol.TCP, "192.0.2.9", 80), "rr")),  # ESRCH
    DeleteDest(WEB, DestKey(ip_address("198.51.100.99"), 80)),  # ENOENT
    AddDest(WEB, dest("198.51.100.98", 80, upper=5, lower=10)),  # ERANGE
    AddDest(ServiceKey.virtual(Protocol.TCP, "192.0.2.9", 80), NEW_DEST),  # ESRCH
)

# A SET_CONFIG whose tcp timeout is two bytes: the kernel's policy check refuses it with an
# extended acknowledgement pointing at the attribute.
MALFORMED_TIMEOUT = (Cmd.SET_CONFIG, encode_attr(CmdAttr.TIMEOUT_TCP, b"\x05\x00"))

# The sync daemons run on the dummy link "dump with counters" makes (it has an IPv4 address,
# which the master's socket needs).
SYNC_MASTER = SyncDaemon(SyncState.MASTER, "d0", 7, IPv4Address("239.1.2.3"), 8850, 2, 1400)
SYNC_BACKUP = SyncDaemon(SyncState.BACKUP, "d0", 7)
SYNC_REFUSED: tuple[SyncOp, ...] = (
    StartSyncDaemon(SYNC_MASTER),  # EEXIST
    StopSyncDaemon(SyncState.BACKUP),
    StopSyncDaemon(SyncState.BACKUP),  # ESRCH
    StartSyncDaemon(SyncDaemon(SyncState.BACKUP, "nosuch0", 7)),  # ENODEV
)

Call = Literal["apply", "dump", "timeouts", "info", "raw", "sync", "daemons"]


@dataclass(frozen=True)
class Scenario:
    name: str
    call: Call
    ops: tuple[Op, ...] = ()
    sync_ops: tuple[SyncOp, ...] = ()


def _adds() -> tuple[Op, ...]:
    return tuple(AddService(vs.service) for vs in SERVICES)


def _dest_adds() -> tuple[Op, ...]:
    return tuple(AddDest(vs.key, d) for vs in SERVICES for d in vs.dests)


SCENARIOS = (
    Scenario("add services", "apply", _adds()),
    Scenario("add destinations", "apply", _dest_adds()),
    Scenario("set timeouts", "apply", (SetTimeouts(TIMEOUTS),)),
    Scenario("get timeouts", "timeouts"),
    Scenario("info", "info"),
    Scenario("dump with counters", "dump"),
    Scenario("start sync daemons", "sync",
             sync_ops=(StartSyncDaemon(SYNC_MASTER), StartSyncDaemon(SYNC_BACKUP))),
    Scenario("get sync daemons", "daemons"),
    Scenario("sync daemon refusals", "sync", sync_ops=SYNC_REFUSED),
    Scenario("stop sync daemons", "sync", sync_ops=(StopSyncDaemon(SyncState.MASTER),)),
    Scenario("get sync daemons after stop", "daemons"),
    Scenario("edit", "apply", (EditService(EDITED_WEB), EditService(EDITED_DNS6),
                               EditDest(WEB, EDITED_DEST4), EditDest(DNS6, EDITED_DEST6))),
    Scenario("window whose third request fails", "apply", WINDOW_OPS),
    Scenario("refusals", "apply", REFUSED_OPS),
    Scenario("malformed request", "raw"),
    Scenario("delete", "apply", (
        DeleteDest(WEB, DestKey(ip_address("198.51.100.42"), 80)),
        DeleteDest(DNS6, DestKey(ip_address("2001:db8::13"), 53)),
        DeleteService(SCTP4), DeleteService(SCTP6), DeleteService(MARK4),
        DeleteService(MARK6), DeleteService(SIP), DeleteService(TLS6),
        DeleteService(COUNTED))),
    Scenario("dump after edits and deletes", "dump"),
)
