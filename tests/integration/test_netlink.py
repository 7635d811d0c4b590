"""NetlinkIpvs against the real kernel: every feature round-trips, and agrees with ipvsadm."""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import time
from collections.abc import Sequence
from ipaddress import ip_address
from typing import TYPE_CHECKING

import pytest

from lvsd.errors import IpvsError, IpvsUnavailable
from lvsd.ipvs import codec
from lvsd.ipvs.abi import Cmd
from lvsd.ipvs.channel import Channel, open_socket
from lvsd.ipvs.netlink import WINDOW, NetlinkIpvs
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
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
)

if TYPE_CHECKING:
    from conftest import Namespace


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey.virtual(Protocol.TCP, address, port)


def udp(address: str, port: int) -> ServiceKey:
    return ServiceKey.virtual(Protocol.UDP, address, port)


def sctp(address: str, port: int) -> ServiceKey:
    return ServiceKey.virtual(Protocol.SCTP, address, port)


def dest(address: str, port: int, **attributes: object) -> Dest:
    return Dest(DestKey(ip_address(address), port), **attributes)  # type: ignore[arg-type]


# Every feature once, as ipvsadm-restore input (thresholds and timeouts included) ...
FEATURES_RESTORE = """\
-A -t 192.0.2.1:80 -s rr -p 300 -M 255.255.255.0
-a -t 192.0.2.1:80 -r 198.51.100.11:80 -m -w 3 -x 100 -y 10
-a -t 192.0.2.1:80 -r 198.51.100.12:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-a -t 192.0.2.1:80 -r 198.51.100.13:80 -i -w 0 --tun-type ipip
-a -t 192.0.2.1:80 -r 198.51.100.14:80 -g -w 1
-a -t 192.0.2.1:80 -r 198.51.100.15:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
-A -u [2001:db8::1]:53 -s mh -p 60 -M 64 -b mh-fallback,mh-port
-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -g -w 1
-a -u [2001:db8::1]:53 -r [2001:db8::12]:53 -m -w 2
-a -u [2001:db8::1]:53 -r [2001:db8::13]:53 -i -w 1 --tun-type gre --tun-csum
-a -u [2001:db8::1]:53 -r [2001:db8::14]:53 -i -w 1 --tun-type gre --tun-nocsum
-A --sctp-service 192.0.2.2:3868 -s sh -b sh-fallback,sh-port
-a --sctp-service 192.0.2.2:3868 -r 198.51.100.21:3868 -g -w 1
-A --sctp-service [2001:db8::2]:3868 -s rr
-a --sctp-service [2001:db8::2]:3868 -r [2001:db8::21]:3868 -m -w 1
-A -u 192.0.2.3:5060 -s rr -p 60 --pe sip
-a -u 192.0.2.3:5060 -r 198.51.100.31:5060 -g -w 1
-A -u 192.0.2.4:514 -s wlc -o
-a -u 192.0.2.4:514 -r 198.51.100.41:514 -m -w 1
-A -f 7 -s wlc -p 120
-a -f 7 -r 198.51.100.51:0 -g -w 1
-a -f 7 -r 198.51.100.52:0 -i -w 1 --tun-type gue --tun-port 5555 --tun-nocsum
-A -f 8 -6 -s rr
-a -f 8 -6 -r [2001:db8::81]:0 -g -w 1
-A -t [2001:db8::3]:443 -s wrr -b flag-3
-a -t [2001:db8::3]:443 -r [2001:db8::31]:443 -g -w 1 -x 50
"""
TIMEOUTS = Timeouts(30, 5, 60)

# ... and the same table as lvsd's model.
FEATURES = (
    VirtualService(
        Service(tcp("192.0.2.1", 80), "rr", persistence=Persistence(300, 0xFFFFFF00)),
        (
            dest("198.51.100.11", 80, weight=3, forward=Forward.MASQ,
                 upper_threshold=100, lower_threshold=10),
            dest("198.51.100.12", 80, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.GUE, 6080, TUN_CSUM)),
            dest("198.51.100.13", 80, weight=0, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.IPIP, 0, TUN_NOCSUM)),
            dest("198.51.100.14", 80, forward=Forward.ROUTE),
            dest("198.51.100.15", 80, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.GUE, 6081, TUN_REMCSUM)),
        ),
    ),
    VirtualService(
        Service(udp("2001:db8::1", 53), "mh", sched_flags=SVC_F_SCHED1 | SVC_F_SCHED2,
                persistence=Persistence(60, 64)),
        (
            dest("2001:db8::11", 53),
            dest("2001:db8::12", 53, weight=2, forward=Forward.MASQ),
            dest("2001:db8::13", 53, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.GRE, 0, TUN_CSUM)),
            dest("2001:db8::14", 53, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.GRE, 0, TUN_NOCSUM)),
        ),
    ),
    VirtualService(
        Service(sctp("192.0.2.2", 3868), "sh", sched_flags=SVC_F_SCHED1 | SVC_F_SCHED2),
        (dest("198.51.100.21", 3868),),
    ),
    VirtualService(
        Service(sctp("2001:db8::2", 3868), "rr"),
        (dest("2001:db8::21", 3868, forward=Forward.MASQ),),
    ),
    VirtualService(
        Service(udp("192.0.2.3", 5060), "rr", persistence=Persistence(60), pe_name="sip"),
        (dest("198.51.100.31", 5060),),
    ),
    VirtualService(
        Service(udp("192.0.2.4", 514), "wlc", onepacket=True),
        (dest("198.51.100.41", 514, forward=Forward.MASQ),),
    ),
    VirtualService(
        Service(ServiceKey.mark(7), "wlc", persistence=Persistence(120)),
        (
            dest("198.51.100.51", 0),
            dest("198.51.100.52", 0, forward=Forward.TUNNEL,
                 tunnel=Tunnel(TunnelType.GUE, 5555, TUN_NOCSUM)),
        ),
    ),
    VirtualService(
        Service(ServiceKey.mark(8, Family.INET6), "rr"),
        (dest("2001:db8::81", 0),),
    ),
    VirtualService(
        Service(tcp("2001:db8::3", 443), "wrr", sched_flags=SVC_F_SCHED3),
        (dest("2001:db8::31", 443, upper_threshold=50),),
    ),
)


def scheduler_services(schedulers: Sequence[str]) -> tuple[VirtualService, ...]:
    return tuple(VirtualService(Service(tcp("192.0.2.5", 2000 + i), name))
                 for i, name in enumerate(schedulers))


def scheduler_restore(schedulers: Sequence[str]) -> str:
    return "".join(f"-A -t 192.0.2.5:{2000 + i} -s {name}\n" for i, name in enumerate(schedulers))


def build_ops(services: Sequence[VirtualService]) -> list[Op]:
    ops: list[Op] = [SetTimeouts(TIMEOUTS)]
    for vs in services:
        ops.append(AddService(vs.service))
        ops.extend(AddDest(vs.key, d) for d in vs.dests)
    return ops


def save_lines(ns: Namespace) -> set[str]:
    return set(ns.run("ipvsadm-save", "-n").stdout.splitlines())


async def test_every_feature_applied_dumps_back_equal_and_agrees_with_ipvsadm(
    ipvs: NetlinkIpvs, netns: Namespace, kernel_schedulers: Sequence[str]
) -> None:
    assert len(kernel_schedulers) >= 13, kernel_schedulers
    services = FEATURES + scheduler_services(kernel_schedulers)

    assert await ipvs.apply(build_ops(services)) == []

    assert await ipvs.dump() == Table(services, TIMEOUTS)
    assert await ipvs.timeouts() == TIMEOUTS
    # ipvsadm reads the kernel on its own; its save format leaves thresholds out.
    expected = FEATURES_RESTORE + scheduler_restore(kernel_schedulers)
    assert save_lines(netns) == set(re.sub(r" -[xy] \d+", "", expected).splitlines())
    thresholds = netns.run("ipvsadm", "-Ln", "--thresholds").stdout
    assert re.search(r"198\.51\.100\.11:80\s+100\s+10\s", thresholds), thresholds
    assert re.search(r"\[2001:db8::31\]:443\s+50\s+0\s", thresholds), thresholds
    timeouts = netns.run("ipvsadm", "-L", "--timeout").stdout
    assert "Timeout (tcp tcpfin udp): 30 5 60" in timeouts


async def test_a_table_built_by_ipvsadm_dumps_to_the_same_model(
    ipvs: NetlinkIpvs, netns: Namespace, kernel_schedulers: Sequence[str]
) -> None:
    restore = FEATURES_RESTORE + scheduler_restore(kernel_schedulers) + "--set 30 5 60\n"
    result = netns.run("sh", "-c", f"ipvsadm-restore <<'EOF'\n{restore}EOF")
    assert result.returncode == 0, result.stderr

    table = await ipvs.dump()

    assert table == Table(FEATURES + scheduler_services(kernel_schedulers), TIMEOUTS)


async def test_timeouts_of_zero_are_left_unchanged(ipvs: NetlinkIpvs) -> None:
    assert await ipvs.apply([SetTimeouts(Timeouts(100, 20, 40))]) == []
    assert await ipvs.apply([SetTimeouts(Timeouts(0, 7, 0))]) == []
    assert await ipvs.timeouts() == Timeouts(100, 7, 40)


async def test_info_reports_the_kernel_version_and_connection_table_size(
    ipvs: NetlinkIpvs, netns: Namespace
) -> None:
    info = await ipvs.info()

    header = netns.run("ipvsadm", "-Ln").stdout.splitlines()[0]
    assert header == f"IP Virtual Server version {info.version} (size={info.conn_table_size})"


async def test_deletes_remove_exactly_their_object(ipvs: NetlinkIpvs) -> None:
    web, dns = FEATURES[0], FEATURES[1]
    assert await ipvs.apply(build_ops([web, dns])) == []

    errors = await ipvs.apply([DeleteDest(web.key, web.dests[1].key), DeleteService(dns.key)])

    assert errors == []
    table = await ipvs.dump()
    assert table == Table((VirtualService(web.service, web.dests[:1] + web.dests[2:]),),
                          TIMEOUTS)


async def test_failed_operations_are_typed_name_their_object_and_do_not_stop_the_rest(
    ipvs: NetlinkIpvs,
) -> None:
    web = Service(tcp("192.0.2.1", 80), "rr")
    later = Service(tcp("192.0.2.1", 443), "wrr")
    missing = tcp("192.0.2.9", 80)
    server = dest("198.51.100.11", 80)
    absent = dest("198.51.100.99", 80)
    ops: list[Op] = [
        AddService(web),
        AddService(web),
        AddDest(web.key, server),
        AddDest(web.key, server),
        EditDest(web.key, absent),
        DeleteDest(web.key, absent.key),
        AddDest(missing, server),
        EditService(Service(missing, "rr")),
        DeleteService(missing),
        AddService(Service(tcp("192.0.2.1", 81), "nosuch")),
        AddService(Service(tcp("192.0.2.1", 70000), "rr")),
        AddService(later),
    ]

    errors = await ipvs.apply(ops)

    assert [(e.operation, e.target, e.errno) for e in errors] == [
        ("add service", "tcp:192.0.2.1:80", errno.EEXIST),
        ("add destination", "tcp:192.0.2.1:80 -> 198.51.100.11:80", errno.EEXIST),
        ("edit destination", "tcp:192.0.2.1:80 -> 198.51.100.99:80", errno.ENOENT),
        ("delete destination", "tcp:192.0.2.1:80 -> 198.51.100.99:80", errno.ENOENT),
        ("add destination", "tcp:192.0.2.9:80 -> 198.51.100.11:80", errno.ESRCH),
        ("edit service", "tcp:192.0.2.9:80", errno.ESRCH),
        ("delete service", "tcp:192.0.2.9:80", errno.ESRCH),
        ("add service", "tcp:192.0.2.1:81", errno.ENOENT),
        ("add service", "tcp:192.0.2.1:70000", errno.EINVAL),
    ]
    assert "scheduler 'nosuch' not found" in str(errors[7])
    assert "already exists" in str(errors[0])
    assert "no such virtual service" in str(errors[4])
    table = await ipvs.dump()
    assert table == Table((VirtualService(web, (server,)), VirtualService(later)), table.timeouts)


async def test_a_batch_larger_than_one_window_reports_each_failure_against_its_op(
    ipvs: NetlinkIpvs,
) -> None:
    key = tcp("192.0.2.1", 80)
    dests = [dest(f"198.51.{100 + i // 250}.{1 + i % 250}", 80) for i in range(2 * WINDOW)]
    ops: list[Op] = [AddService(Service(key, "wrr")), *(AddDest(key, d) for d in dests)]
    # The duplicates land last in the first window and in the middle of the second.
    ops.insert(WINDOW - 1, AddDest(key, dests[0]))
    ops.insert(WINDOW + 100, AddDest(key, dests[5]))

    errors = await ipvs.apply(ops)

    assert [(e.target, e.errno) for e in errors] == [
        (f"{key} -> {dests[0].key}", errno.EEXIST),
        (f"{key} -> {dests[5].key}", errno.EEXIST),
    ]
    table = await ipvs.dump()
    assert table.dest_count == len(dests)
    assert table == Table((VirtualService(Service(key, "wrr"), tuple(dests)),), table.timeouts)


async def test_edits_change_objects_in_place_keeping_connections_and_counters(
    ipvs: NetlinkIpvs, netns: Namespace
) -> None:
    netns.ip_batch(["link add d0 type dummy", "link set d0 up",
                    "addr add 198.51.100.1/24 dev d0", "addr add 192.0.2.100/32 dev lo"])
    key = udp("192.0.2.100", 9)
    first, second = dest("198.51.100.2", 9), dest("198.51.100.3", 9)
    assert await ipvs.apply([AddService(Service(key, "rr")), AddDest(key, first),
                             AddDest(key, second)]) == []
    # Four datagrams from four sockets: four IPVS connections, two per destination.
    for _ in range(4):
        with netns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", ("192.0.2.100", 9))
    before = await _dump_when_counted(ipvs, key, 4)

    edited = Service(key, "wrr", persistence=Persistence(600))
    errors = await ipvs.apply([EditDest(key, first.with_weight(5)), EditService(edited)])

    assert errors == []
    after = (await ipvs.dump()).by_key().get(key)
    assert after is not None and after.service == edited
    assert after.dest_map()[first.key].weight == 5
    assert after.service.stats.conns == before.service.stats.conns == 4
    for d in before.dests:
        kept = after.dest_map()[d.key].stats
        assert kept.active + kept.inactive == d.stats.active + d.stats.inactive == 2
        assert kept.traffic.conns == d.stats.traffic.conns == 2
    entries = netns.run("ipvsadm", "-Lnc").stdout.splitlines()
    assert sum(line.startswith("UDP ") for line in entries) == 4, entries


async def _dump_when_counted(ipvs: NetlinkIpvs, key: ServiceKey, conns: int) -> VirtualService:
    # The kernel folds per-CPU counters into the reported totals on a 2 s timer.
    deadline = time.monotonic() + 10
    while True:
        vs = (await ipvs.dump()).by_key().get(key)
        assert vs is not None
        if vs.service.stats.conns >= conns and all(d.stats.traffic.conns for d in vs.dests):
            return vs
        assert time.monotonic() < deadline, vs.service.stats
        await asyncio.sleep(0.5)


async def test_a_missing_namespace_makes_ipvs_unavailable(netns: Namespace) -> None:
    backend = NetlinkIpvs(f"{netns}-absent")
    with pytest.raises(IpvsUnavailable, match="absent"):
        await backend.dump()
    await backend.close()


async def test_the_learnt_destination_layout_decodes_as_the_attribute_walk_does(
    ipvs: NetlinkIpvs, netns: Namespace
) -> None:
    # dump() decodes destinations with one unpack per message once it has learnt the kernel's
    # layout; the attribute-by-attribute decoder is the reference it must agree with.
    assert await ipvs.apply(build_ops(FEATURES)) == []
    channel = await Channel.open(open_socket(netns))
    compared = 0
    try:
        for vs in FEATURES:
            replies = await channel.dump(Cmd.GET_DEST, codec.service_key_nest(vs.key))
            layout = codec.DestLayout(*replies[0])
            fast = layout.decode_all(replies, vs.key.family)
            for reply, dest in zip(replies, fast, strict=True):
                walked = codec.decode_dest(*reply, vs.key.family)
                assert layout.fits(*reply)
                assert dest == walked and dest.stats == walked.stats
                compared += 1
    finally:
        channel.close()
    assert compared == sum(len(vs.dests) for vs in FEATURES)


async def test_a_dump_after_the_socket_was_closed_under_the_backend_works(
    netns: Namespace,
) -> None:
    opened: list[socket.socket] = []

    def open_and_keep() -> socket.socket:
        opened.append(open_socket(netns))
        return opened[-1]

    async with NetlinkIpvs(netns, socket_factory=open_and_keep) as ipvs:
        assert await ipvs.apply(build_ops(FEATURES[:2])) == []
        opened[0].close()

        with pytest.raises(IpvsError) as broken:
            await ipvs.dump()
        assert broken.value.operation == "dump" and broken.value.errno == errno.EBADF

        assert await ipvs.dump() == Table(FEATURES[:2], TIMEOUTS)
        assert len(opened) == 2
