"""Split-brain detection, pure parts: the probe frames (golden bytes), reading answers, which
VIPs are held, and when a conflict begins and clears."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from lvsd.api import status_document
from lvsd.metrics import SnapshotRenderer
from lvsd.snapshot import EMPTY_SNAPSHOT
from lvsd.splitbrain.book import ConflictBook, HeldVip, VipStatus, changes
from lvsd.splitbrain.guard import Link, LocalAddress, held_vips
from lvsd.splitbrain.packets import (
    ADVERTISEMENT_FILTER,
    Evidence,
    arp_probe,
    dad_solicitation,
    evidence_in,
    filter_program,
    probe_for,
)

OWN = bytes.fromhex("020000000011")
PEER = bytes.fromhex("020000000012")
VIP4 = ipaddress.IPv4Address("198.51.100.10")
VIP6 = ipaddress.IPv6Address("2001:db8::10")


# --- frames ------------------------------------------------------------------------------


def test_the_arp_probe_is_rfc_5227s_broadcast_request_from_0_0_0_0() -> None:
    assert arp_probe(OWN, VIP4).hex() == (
        "ffffffffffff" "020000000011" "0806"  # broadcast, from us, ARP
        "0001" "0800" "06" "04" "0001"  # Ethernet/IPv4, request
        "020000000011" "00000000"  # sender: our MAC, 0.0.0.0
        "000000000000" "c633640a"  # target: unknown MAC, the VIP
        + "00" * 18)  # padded to the 60-byte minimum frame


def test_the_ipv6_probe_is_a_dad_solicitation_to_the_solicited_node_group() -> None:
    frame = dad_solicitation(OWN, VIP6)
    assert frame.hex() == (
        "3333ff000010" "020000000011" "86dd"  # to 33:33:ff:00:00:10, IPv6
        "60000000" "0018" "3a" "ff"  # 24 bytes of ICMPv6, hop limit 255
        + "00" * 16  # from ::
        + "ff0200000000000000000001ff000010"  # to ff02::1:ff00:10
        + "87" "00" "4ccf" "00000000"  # neighbour solicitation, checksum
        + "20010db8000000000000000000000010")  # target: the VIP, no options


def test_the_solicitation_checksum_sums_to_all_ones_over_the_pseudo_header() -> None:
    frame = dad_solicitation(OWN, VIP6)
    source, destination, message = frame[22:38], frame[38:54], frame[54:]
    pseudo = source + destination + struct.pack("!I", len(message)) + b"\0\0\0\x3a"
    words = struct.unpack(f"!{(len(pseudo) + len(message)) // 2}H", pseudo + message)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def test_probe_for_picks_the_frame_by_family() -> None:
    assert probe_for(OWN, VIP4) == arp_probe(OWN, VIP4)
    assert probe_for(OWN, VIP6) == dad_solicitation(OWN, VIP6)


def arp(op: int, sender_mac: bytes, sender: str, target: str, source_mac: bytes | None = None
        ) -> bytes:
    return ((OWN if op == 2 else b"\xff" * 6) + (source_mac or sender_mac) + b"\x08\x06"
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sender_mac
            + ipaddress.IPv4Address(sender).packed + bytes(6)
            + ipaddress.IPv4Address(target).packed).ljust(60, b"\0")


def advertisement(target: ipaddress.IPv6Address, mac: bytes, option: bytes | None = None
                  ) -> bytes:
    options = b"" if option is None else b"\x02\x01" + option
    icmp = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target.packed + options
    ipv6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + target.packed \
        + ipaddress.IPv6Address("ff02::1").packed
    return b"\x33\x33\x00\x00\x00\x01" + mac + b"\x86\xdd" + ipv6 + icmp


def test_an_arp_reply_from_another_mac_is_evidence() -> None:
    assert evidence_in(arp(2, PEER, "198.51.100.10", "0.0.0.0"), OWN) == Evidence(VIP4, PEER)


def test_a_gratuitous_arp_from_another_mac_is_evidence() -> None:
    frame = arp(1, PEER, "198.51.100.10", "198.51.100.10")
    assert evidence_in(frame, OWN) == Evidence(VIP4, PEER)


@pytest.mark.parametrize("frame", [
    arp(2, OWN, "198.51.100.10", "0.0.0.0", source_mac=PEER),  # our MAC in the ARP body
    arp(1, PEER, "0.0.0.0", "198.51.100.10"),  # another host's probe: it holds nothing
    arp(1, OWN, "198.51.100.10", "192.0.2.1"),  # our own request, seen going out
    arp(3, PEER, "198.51.100.10", "0.0.0.0"),  # RARP
    arp(2, PEER, "198.51.100.10", "0.0.0.0")[:30],  # truncated
    b"",
    b"\xff" * 12 + b"\x08\x00" + bytes(46),  # IPv4
])
def test_frames_that_prove_nothing_are_ignored(frame: bytes) -> None:
    assert evidence_in(frame, OWN) is None


def test_a_neighbour_advertisement_for_the_vip_is_evidence_of_its_sender() -> None:
    assert evidence_in(advertisement(VIP6, PEER), OWN) == Evidence(VIP6, PEER)
    proxied = advertisement(VIP6, PEER, option=bytes.fromhex("020000000099"))
    assert evidence_in(proxied, OWN) == Evidence(VIP6, bytes.fromhex("020000000099"))


def test_our_own_advertisement_and_other_icmpv6_prove_nothing() -> None:
    assert evidence_in(advertisement(VIP6, OWN), OWN) is None
    assert evidence_in(advertisement(VIP6, PEER, option=OWN), OWN) is None
    solicitation = dad_solicitation(PEER, VIP6)
    assert evidence_in(solicitation, OWN) is None
    assert evidence_in(advertisement(VIP6, PEER)[:70], OWN) is None


def run_filter(program: tuple[tuple[int, int, int, int], ...], frame: bytes) -> int:
    """A classic BPF interpreter for the instructions the filter uses."""
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x28:
            accumulator = struct.unpack_from("!H", frame, k)[0] if k + 2 <= len(frame) else -1
        elif code == 0x30:
            accumulator = frame[k] if k < len(frame) else -1
        elif code == 0x15:
            pc += jt if accumulator == k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(code)
        if accumulator == -1:
            return 0  # the kernel drops a packet read past its end
        pc += 1


def test_the_ipv6_socket_filter_passes_advertisements_only() -> None:
    assert run_filter(ADVERTISEMENT_FILTER, advertisement(VIP6, PEER)) == 0xFFFF
    assert run_filter(ADVERTISEMENT_FILTER, dad_solicitation(PEER, VIP6)) == 0
    assert run_filter(ADVERTISEMENT_FILTER, arp(2, PEER, "198.51.100.10", "0.0.0.0")) == 0
    assert run_filter(ADVERTISEMENT_FILTER, b"\x00" * 12 + b"\x86\xdd") == 0
    assert len(filter_program(ADVERTISEMENT_FILTER)) == 8 * len(ADVERTISEMENT_FILTER)


# --- held VIPs ---------------------------------------------------------------------------


def test_only_vips_on_up_arp_interfaces_are_held_and_not_tentative_ones() -> None:
    links = [Link(1, "lo", bytes(6), arp=False), Link(2, "eth0", OWN, arp=True),
             Link(3, "dummy0", PEER, arp=False)]
    addresses = [LocalAddress(1, VIP4, True), LocalAddress(3, VIP4, True),
                 LocalAddress(2, ipaddress.IPv4Address("192.0.2.11"), True),
                 LocalAddress(2, VIP6, False)]
    vips = frozenset({VIP4, VIP6})
    assert held_vips(links, addresses, vips) == []
    addresses.append(LocalAddress(2, VIP4, True))
    assert held_vips(links, addresses, vips) == [HeldVip(VIP4, "eth0", 2, OWN)]


# --- conflicts ---------------------------------------------------------------------------


def book_holding(*vips: HeldVip) -> ConflictBook:
    book = ConflictBook(clear_after=3.0)
    book.hold(vips)
    return book


HELD = HeldVip(VIP4, "eth0", 2, OWN)


def test_evidence_makes_a_conflict_that_clears_once_it_stops() -> None:
    book = book_holding(HELD)
    assert book.statuses(100.0) == (VipStatus(VIP4, "eth0", False),)
    book.saw(Evidence(VIP4, PEER), 100.5)
    (status,) = book.statuses(101.0)
    assert status.conflict and status.other_macs == ("02:00:00:00:00:12",)
    assert status.since == 100.5
    book.saw(Evidence(VIP4, PEER), 102.0)
    assert book.statuses(104.9)[0].conflict
    assert book.statuses(105.0)[0] == VipStatus(VIP4, "eth0", False)


def test_our_own_mac_and_vips_we_do_not_hold_are_no_conflict() -> None:
    book = book_holding(HELD)
    book.saw(Evidence(VIP4, OWN), 1.0)
    book.saw(Evidence(ipaddress.IPv4Address("198.51.100.99"), PEER), 1.0)
    assert not book.statuses(1.5)[0].conflict


def test_a_vip_given_up_clears_its_conflict_and_a_moved_one_starts_afresh() -> None:
    book = book_holding(HELD)
    book.saw(Evidence(VIP4, PEER), 1.0)
    before = book.statuses(1.5)
    book.hold([])
    assert book.statuses(1.6) == ()
    (cleared,) = changes(before, ())
    assert not cleared.conflict and cleared.status.address == VIP4
    book.hold([HELD])
    book.saw(Evidence(VIP4, PEER), 2.0)
    book.hold([HeldVip(VIP4, "eth1", 3, PEER)])
    assert not book.statuses(2.1)[0].conflict


def test_probes_and_errors_are_counted() -> None:
    book = book_holding(HELD)
    book.probed(VIP4)
    book.probed(VIP4, "packet socket on eth0: Operation not permitted")
    (status,) = book.statuses(1.0)
    assert status.probes == 1 and status.error is not None
    book.probed(VIP4)
    assert book.statuses(1.0)[0].error is None


def test_changes_report_conflicts_that_began_and_cleared() -> None:
    calm = (VipStatus(VIP4, "eth0", False),)
    hot = (VipStatus(VIP4, "eth0", True, ("02:00:00:00:00:12",), 5.0),)
    assert [c.conflict for c in changes(calm, hot)] == [True]
    assert changes(hot, hot) == []
    assert [c.conflict for c in changes(hot, calm)] == [False]


# --- reported --------------------------------------------------------------------------


def test_status_and_metrics_show_each_held_vip_and_its_conflict() -> None:
    import dataclasses

    snapshot = dataclasses.replace(EMPTY_SNAPSHOT, vips=(
        VipStatus(VIP4, "eth0", True, ("02:00:00:00:00:12",), 5.0, 7),
        VipStatus(VIP6, "eth0", False, probes=3)))
    vips = status_document(snapshot, 10.0)["vips"]
    assert vips[0] == {"address": "198.51.100.10", "interface": "eth0", "conflict": True,
                       "other_holders": ["02:00:00:00:00:12"], "conflict_since": 5.0,
                       "probes": 7, "probe_error": None}
    body = SnapshotRenderer().render(snapshot).decode()
    assert 'lvsd_vip_conflict{vip="198.51.100.10",interface="eth0"} 1' in body
    assert 'lvsd_vip_conflict{vip="2001:db8::10",interface="eth0"} 0' in body
    assert "lvsd_vip_conflict" not in SnapshotRenderer().render(EMPTY_SNAPSHOT).decode()


async def test_the_guard_reports_from_its_thread_and_stops_promptly() -> None:
    """Over this host's own interfaces, where no TEST-NET VIP is held: nothing is probed."""
    import asyncio
    import time

    from lvsd.splitbrain.guard import VipGuard

    reports: list[tuple[VipStatus, ...]] = []
    guard = VipGuard()
    guard.configure(frozenset({ipaddress.ip_address("198.51.100.250")}), 0.2)
    guard.start(lambda statuses, _changes: reports.append(statuses))
    try:
        deadline = time.monotonic() + 20
        while not reports and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        started = time.monotonic()
        await guard.stop()
    assert reports and reports[0] == () and guard.statuses == ()
    assert time.monotonic() - started < 2.5
