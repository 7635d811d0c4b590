"""What the kernel and ipvsadm 1.31 accept, defined once for config, save format and netlink.

Each check is a pure function that returns what is wrong (a message without a place) or None,
so the config loader, the ipvsadm-save parser and the netlink encoder refuse the same values
with the same words. Where ipvsadm and the kernel differ, the stricter bound wins: a table lvsd
programs must also round-trip through ``ipvsadm-save`` and ``ipvsadm-restore``.

Sources: ipvsadm 1.31 ``ipvsadm.c`` (``string_to_number`` ranges, ``parse_fwmark``,
``process_options``, the tunnel option table) and the kernel's ``net/netfilter/ipvs/ip_vs_ctl.c``
(``ip_vs_add_dest``/``ip_vs_edit_dest``, ``ip_vs_set_timeout``, the service timeout kept as
``seconds * HZ`` in 32 bits, ``inet_addr_type``/``ipv6_addr_type`` checks on destinations).
"""

from __future__ import annotations

import ipaddress

from lvsd.ipvsadm.names import TUNNEL_CSUM_NAMES, TUNNEL_NAMES
from lvsd.model import TUN_NOCSUM, TUN_REMCSUM, Address, Protocol, TunnelType

PORT_MAX = 65535
WEIGHT_MAX = 65535  # ipvsadm -w; the kernel takes any non-negative int
THRESHOLD_MAX = 2**31 - 1  # ipvsadm -x/-y (INT_MAX); newer kernels refuse more with EINVAL
FWMARK_MIN = 1
FWMARK_MAX = 2**32 - 1
# The kernel keeps timeouts in jiffies. HZ is at most 1000 on the kernels lvsd targets.
KERNEL_HZ_MAX = 1000
# -p: ipvsadm allows 1..31 days; the kernel stores seconds * HZ in an unsigned 32-bit field,
# which holds up to 4294967 s at HZ 1000, so ipvsadm's bound is the binding one.
PERSISTENCE_MIN = 1
PERSISTENCE_MAX = 86400 * 31
# --set tcp tcpfin udp: ipvsadm allows 0..31 days, the kernel 0..INT_MAX / HZ (EINVAL above);
# at HZ 1000 that is 2147483 s (24.8 days), below ipvsadm's bound.
TIMEOUT_MAX = (2**31 - 1) // KERNEL_HZ_MAX
IPV6_PREFIX_MIN = 1
IPV6_PREFIX_MAX = 128
# IP_VS_SCHEDNAME_MAXLEN and IP_VS_PENAME_MAXLEN are 16 bytes including the NUL.
NAME_MAX_LENGTH = 15
TUNNEL_PORT_MIN = 1

# lvsd numbers the fwmark services of its DR-path probes from dr_check_mark_base upwards,
# never beyond this many: a configured fwmark service may not fall in that range.
PROBE_MARK_SPAN = 65536

_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_ZERO_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def _integer_error(value: object, low: int, high: int, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{what} must be an integer, got {value!r}"
    if not low <= value <= high:
        return f"{what} {value} is out of range {low}..{high}"
    return None


def port_error(value: int) -> str | None:
    return _integer_error(value, 0, PORT_MAX, "port")


def weight_error(value: int) -> str | None:
    return _integer_error(value, 0, WEIGHT_MAX, "weight")


def thresholds_error(upper: int, lower: int) -> str | None:
    """The kernel refuses lower > upper with ERANGE, and an upper of 0 means "no limit": so a
    lower threshold needs an upper one."""
    for value, what in ((upper, "upper threshold"), (lower, "lower threshold")):
        error = _integer_error(value, 0, THRESHOLD_MAX, what)
        if error is not None:
            return error
    if lower > upper:
        if upper == 0:
            return (f"lower threshold {lower} needs an upper threshold "
                    f"(the kernel refuses a lower threshold above the upper one)")
        return f"lower threshold {lower} is above the upper threshold {upper}"
    return None


def fwmark_error(value: int) -> str | None:
    return _integer_error(value, FWMARK_MIN, FWMARK_MAX, "fwmark")


def persistence_timeout_error(value: int) -> str | None:
    error = _integer_error(value, PERSISTENCE_MIN, PERSISTENCE_MAX, "persistence timeout")
    if error is not None and isinstance(value, int) and value > PERSISTENCE_MAX:
        return (f"persistence timeout {value} s is above {PERSISTENCE_MAX} s (31 days, "
                f"ipvsadm's limit; the kernel would also wrap large values, kept in jiffies)")
    return error


def connection_timeout_error(value: int, what: str = "timeout") -> str | None:
    """One of ``--set tcp tcpfin udp``; 0 means "leave unchanged" to both ipvsadm and the kernel."""
    error = _integer_error(value, 0, TIMEOUT_MAX, what)
    if error is not None and isinstance(value, int) and value > TIMEOUT_MAX:
        return (f"{what} {value} s is above {TIMEOUT_MAX} s, the largest the kernel accepts "
                f"(INT_MAX jiffies at HZ {KERNEL_HZ_MAX})")
    return error


def ipv6_prefix_error(value: int) -> str | None:
    return _integer_error(value, IPV6_PREFIX_MIN, IPV6_PREFIX_MAX, "IPv6 persistence prefix")


def name_error(name: str, what: str) -> str | None:
    """A scheduler or persistence-engine name as the kernel takes it (a short NUL-free string)."""
    if not name:
        return f"{what} name is empty"
    if "\x00" in name or not name.isascii():
        return f"{what} name {name!r} has a NUL or a non-ASCII character"
    if len(name) > NAME_MAX_LENGTH:
        return f"{what} name {name!r} is longer than the kernel's {NAME_MAX_LENGTH} characters"
    return None


def onepacket_error(protocol: Protocol) -> str | None:
    """ipvsadm refuses -o on a TCP or SCTP service ("One-Packet Scheduling is only for UDP")."""
    if protocol in (Protocol.UDP, Protocol.FWMARK):
        return None
    return ("one-packet scheduling (ops, -o) is only for UDP and fwmark services, "
            f"not {protocol.name}")


def zero_port_error(port: int, persistent: bool, protocol: Protocol) -> str | None:
    """ipvsadm refuses a port-0 (all ports) service without -p."""
    if port == 0 and not persistent and protocol is not Protocol.FWMARK:
        return "port 0 (all ports) needs persistence: ipvsadm refuses a non-persistent one"
    return None


def tunnel_error(tunnel_type: TunnelType, port: int, csum: int) -> str | None:
    """ipvsadm's tunnel option table: ipip takes no port and no checksum option, gue needs a
    port, gre takes no port and no remote checksum (the kernel refuses that too)."""
    name = TUNNEL_NAMES.get(tunnel_type)
    if name is None:
        return f"unknown tunnel type {tunnel_type!r}"
    if csum not in TUNNEL_CSUM_NAMES:
        return f"unknown tunnel checksum flags {csum!r}"
    if tunnel_type is TunnelType.GUE:
        return _integer_error(port, TUNNEL_PORT_MIN, PORT_MAX, "a gue tunnel port")
    if port != 0:
        return f"a {name} tunnel has no port (only gue has one)"
    if tunnel_type is TunnelType.IPIP and csum != TUN_NOCSUM:
        return (f"an ipip tunnel has no checksum option ({TUNNEL_CSUM_NAMES[csum]} is for gue "
                "or gre)")
    if tunnel_type is TunnelType.GRE and csum == TUN_REMCSUM:
        return "a gre tunnel cannot use remcsum (only gue can)"
    return None


def _common_address_error(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return (f"{address} has a scope (%{address.scope_id}): the kernel's key keeps "
                f"no interface, write the address without it")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return (f"{address} is an IPv4-mapped IPv6 address, which IPVS never matches: write "
                f"{address.ipv4_mapped}")
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address == _LIMITED_BROADCAST:
        return f"{address} is the broadcast address"
    if address.is_unspecified:
        return f"{address} is the unspecified address (any)"
    return None


def virtual_address_error(address: Address) -> str | None:
    """A VIP the kernel can match packets against and report back under the same key."""
    return _common_address_error(address)


def real_server_address_error(address: Address) -> str | None:
    """The kernel takes a destination only if it is unicast (IPv4: not 0.0.0.0/8, IPv6: not
    link-local unless local); lvsd refuses link-local in both families, as it cannot be
    reached beyond one link and an IPv6 one carries no interface in IPVS."""
    error = _common_address_error(address)
    if error is not None:
        return error
    if isinstance(address, ipaddress.IPv4Address) and address in _ZERO_NETWORK:
        return f"{address} is in 0.0.0.0/8, which the kernel refuses as a destination"
    if address.is_link_local:
        return f"{address} is a link-local address"
    return None


def probe_mark_range(base: int) -> range:
    """The fwmarks lvsd may give its DR-path probe services."""
    return range(base, base + PROBE_MARK_SPAN)


def probe_mark_base_error(base: int) -> str | None:
    error = _integer_error(base, FWMARK_MIN, FWMARK_MAX - PROBE_MARK_SPAN + 1,
                           "dr_check_mark_base")
    if error is not None and isinstance(base, int) and base > FWMARK_MAX - PROBE_MARK_SPAN + 1:
        return (f"dr_check_mark_base {base:#x} leaves no room for {PROBE_MARK_SPAN} probe "
                f"marks below {FWMARK_MAX:#x} (at most {FWMARK_MAX - PROBE_MARK_SPAN + 1:#x})")
    return error


def probe_mark_clash_error(fwmark: int, base: int) -> str | None:
    marks = probe_mark_range(base)
    if fwmark in marks:
        return (f"fwmark {fwmark:#x} is inside the DR-path probe marks {marks.start:#x}.."
                f"{marks.stop - 1:#x} (daemon.dr_check_mark_base): use another fwmark or "
                f"move dr_check_mark_base")
    return None


# --- the routes ``[announce]`` keeps (rtnetlink; iproute2's rt_tables and rt_protos) ---------

ROUTE_TABLE_MAX = 2**32 - 1
RESERVED_ROUTE_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
ROUTE_PROTOCOL_MAX = 255
# The kernel's own numbers and iproute2's rt_protos: routes of these belong to someone else.
RESERVED_ROUTE_PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
    10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp",
    18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf",
    189: "rip", 192: "eigrp",
}


def route_table_error(table: int) -> str | None:
    if not 1 <= table <= ROUTE_TABLE_MAX:
        return f"a routing table is 1..{ROUTE_TABLE_MAX}, got {table}"
    if table in RESERVED_ROUTE_TABLES:
        return (f"table {table} is the kernel's {RESERVED_ROUTE_TABLES[table]!r} table: lvsd "
                f"needs a table of its own (e.g. 250)")
    return None


def route_protocol_error(protocol: int) -> str | None:
    if not 1 <= protocol <= ROUTE_PROTOCOL_MAX:
        return f"a route protocol is 1..{ROUTE_PROTOCOL_MAX}, got {protocol}"
    if protocol in RESERVED_ROUTE_PROTOCOLS:
        return (f"protocol {protocol} is {RESERVED_ROUTE_PROTOCOLS[protocol]}'s: lvsd tags "
                f"its routes with a number of its own, so it never touches another's "
                f"(e.g. 250)")
    return None
