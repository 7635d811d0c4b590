"""The frames split-brain detection sends and reads (pure: bytes in, bytes out).

IPv4: an RFC 5227 ARP probe: a broadcast ARP request for the VIP with sender address 0.0.0.0,
so no neighbour's cache learns anything from it. A host that holds the VIP answers it (Linux
does unless its ``arp_ignore`` says otherwise, as on DR real servers with the VIP on ``lo``).
IPv6: a duplicate address detection neighbour solicitation for the VIP from ``::`` to its
solicited-node group, which a holder answers with a neighbour advertisement to all nodes.

Any ARP packet whose sender address is the VIP, and any neighbour advertisement for the VIP,
from a link-layer address not our own is evidence that another host holds the VIP.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from lvsd.model import Address

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ETHERNET_MIN_FRAME = 60  # without the FCS: short frames are padded
ARP_REQUEST, ARP_REPLY = 1, 2
ICMPV6 = 58
NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 135, 136
TARGET_LINK_LAYER_ADDRESS = 2
UNSPECIFIED = ipaddress.IPv6Address("::")


@dataclass(frozen=True, slots=True)
class Evidence:
    """A frame saying that ``mac`` holds ``address``."""

    address: Address
    mac: bytes


def format_mac(mac: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in mac)


def arp_probe(own_mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    ethernet = BROADCAST + own_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, ARP_REQUEST) + own_mac + bytes(4) \
        + bytes(6) + vip.packed
    return (ethernet + arp).ljust(ETHERNET_MIN_FRAME, b"\0")


def solicited_node(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + address.packed[13:])


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    return b"\x33\x33" + group.packed[12:]


def icmpv6_checksum(source: ipaddress.IPv6Address, destination: ipaddress.IPv6Address,
                    message: bytes) -> int:
    pseudo = source.packed + destination.packed + struct.pack("!I3xB", len(message), ICMPV6)
    data = pseudo + message + (b"\0" if len(message) % 2 else b"")
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dad_solicitation(own_mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """No source link-layer address option: RFC 4861 forbids it from ``::``."""
    group = solicited_node(vip)
    body = struct.pack("!BBH4x", NEIGHBOUR_SOLICITATION, 0, 0) + vip.packed
    checksum = icmpv6_checksum(UNSPECIFIED, group, body)
    message = body[:2] + struct.pack("!H", checksum) + body[4:]
    ipv6 = struct.pack("!IHBB", 6 << 28, len(message), ICMPV6, 255) + UNSPECIFIED.packed \
        + group.packed
    return multicast_mac(group) + own_mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + message


def probe_for(own_mac: bytes, vip: Address) -> bytes:
    if isinstance(vip, ipaddress.IPv4Address):
        return arp_probe(own_mac, vip)
    return dad_solicitation(own_mac, vip)


def evidence_in(frame: bytes, own_mac: bytes) -> Evidence | None:
    """What ``frame`` (Ethernet, as an AF_PACKET socket reads it) says about who holds an
    address, if it comes from another host: None for anything else, malformed or not."""
    if len(frame) < 14 or frame[6:12] == own_mac:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETH_P_ARP:
        return _arp_evidence(frame[14:], own_mac)
    if ethertype == ETH_P_IPV6:
        return _advertisement_evidence(frame, own_mac)
    return None


def _arp_evidence(arp: bytes, own_mac: bytes) -> Evidence | None:
    if len(arp) < 28:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", arp)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    sender_mac, sender = arp[8:14], ipaddress.IPv4Address(arp[14:18])
    if sender_mac == own_mac or sender == ipaddress.IPv4Address(0):
        return None  # our own frame, or another host's probe (it holds nothing yet)
    return Evidence(sender, sender_mac)


def _advertisement_evidence(frame: bytes, own_mac: bytes) -> Evidence | None:
    if len(frame) < 14 + 40 + 24 or frame[14] >> 4 != 6 or frame[20] != ICMPV6:
        return None
    icmp = frame[54:]
    if icmp[0] != NEIGHBOUR_ADVERTISEMENT or icmp[1] != 0:
        return None
    target = ipaddress.IPv6Address(icmp[8:24])
    mac = frame[6:12]
    options = icmp[24:]
    while len(options) >= 8 and options[1]:
        length = options[1] * 8
        if options[0] == TARGET_LINK_LAYER_ADDRESS and length >= 8:
            mac = options[2:8]
        options = options[length:]
    if mac == own_mac:
        return None
    return Evidence(target, mac)


# Classic BPF for the IPv6 socket, which would otherwise see every IPv6 frame: accept only
# ICMPv6 (no extension headers) neighbour advertisements. (code, jt, jf, k) per instruction.
ADVERTISEMENT_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x28, 0, 0, 12),  # ldh [12]            ethertype
    (0x15, 0, 5, ETH_P_IPV6),  # jeq IPv6, else drop
    (0x30, 0, 0, 20),  # ldb [20]            next header
    (0x15, 0, 3, ICMPV6),  # jeq ICMPv6, else drop
    (0x30, 0, 0, 54),  # ldb [54]            ICMPv6 type
    (0x15, 0, 1, NEIGHBOUR_ADVERTISEMENT),  # jeq NA, else drop
    (0x06, 0, 0, 0xFFFF),  # ret: accept
    (0x06, 0, 0, 0),  # ret: drop
)


def filter_program(instructions: tuple[tuple[int, int, int, int], ...]) -> bytes:
    """``struct sock_filter[]`` as the kernel reads it (native byte order)."""
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in instructions)
