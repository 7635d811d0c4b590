"""The limits of the kernel and ipvsadm 1.31, each at its edge: the last value accepted and
the first refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from lvsd import limits
from lvsd.model import TUN_CSUM, TUN_NOCSUM, TUN_REMCSUM, Protocol, TunnelType

EDGES: list[tuple[Callable[[int], str | None], int, int]] = [
    # (check, the largest value accepted, the smallest above it refused)
    (limits.port_error, 65535, 65536),
    (limits.weight_error, 65535, 65536),
    (limits.fwmark_error, 2**32 - 1, 2**32),
    (limits.persistence_timeout_error, 2678400, 2678401),
    (limits.connection_timeout_error, 2147483, 2147484),
    (limits.ipv6_prefix_error, 128, 129),
    (limits.probe_mark_base_error, 2**32 - 65536, 2**32 - 65535),
]
LOWEST: list[tuple[Callable[[int], str | None], int]] = [
    (limits.port_error, 0),
    (limits.weight_error, 0),
    (limits.fwmark_error, 1),
    (limits.persistence_timeout_error, 1),
    (limits.connection_timeout_error, 0),
    (limits.ipv6_prefix_error, 1),
    (limits.probe_mark_base_error, 1),
]


@pytest.mark.parametrize(("check", "highest", "above"), EDGES)
def test_the_highest_value_passes_and_the_next_is_refused(
        check: Callable[[int], str | None], highest: int, above: int) -> None:
    assert check(highest) is None
    message = check(above)
    assert message is not None
    assert str(above) in message or f"{above:#x}" in message


@pytest.mark.parametrize(("check", "lowest"), LOWEST)
def test_the_lowest_value_passes_and_the_one_below_is_refused(
        check: Callable[[int], str | None], lowest: int) -> None:
    assert check(lowest) is None
    assert check(lowest - 1) is not None


@pytest.mark.parametrize("check", [edge[0] for edge in EDGES])
def test_a_boolean_is_not_a_number(check: Callable[[int], str | None]) -> None:
    assert check(True) is not None


def test_a_persistence_the_kernel_would_wrap_is_refused() -> None:
    message = limits.persistence_timeout_error(2_000_000_000)
    assert message is not None and "31 days" in message


def test_thresholds_lower_needs_upper_and_not_above_it() -> None:
    assert limits.thresholds_error(0, 0) is None
    assert limits.thresholds_error(10, 10) is None
    assert limits.thresholds_error(2**31 - 1, 0) is None
    assert "needs an upper threshold" in (limits.thresholds_error(0, 5) or "")
    assert "above the upper threshold 10" in (limits.thresholds_error(10, 11) or "")
    assert limits.thresholds_error(2**31, 0) is not None
    assert limits.thresholds_error(2**31, 2**31) is not None


@pytest.mark.parametrize(("name", "ok"), [("wlc", True), ("a" * 15, True), ("a" * 16, False),
                                          ("", False), ("w\x00lc", False), ("wlç", False)])
def test_names_fit_the_kernel_field(name: str, ok: bool) -> None:
    assert (limits.name_error(name, "scheduler") is None) is ok


def test_one_packet_scheduling_is_for_udp_and_fwmark_only() -> None:
    assert limits.onepacket_error(Protocol.UDP) is None
    assert limits.onepacket_error(Protocol.FWMARK) is None
    assert "not TCP" in (limits.onepacket_error(Protocol.TCP) or "")
    assert limits.onepacket_error(Protocol.SCTP) is not None


def test_port_zero_needs_persistence_except_for_fwmark() -> None:
    assert limits.zero_port_error(0, True, Protocol.TCP) is None
    assert limits.zero_port_error(80, False, Protocol.TCP) is None
    assert limits.zero_port_error(0, False, Protocol.FWMARK) is None
    assert "needs persistence" in (limits.zero_port_error(0, False, Protocol.UDP) or "")


@pytest.mark.parametrize(("tunnel_type", "port", "csum", "ok"), [
    (TunnelType.IPIP, 0, TUN_NOCSUM, True),
    (TunnelType.IPIP, 6080, TUN_NOCSUM, False),
    (TunnelType.IPIP, 0, TUN_CSUM, False),
    (TunnelType.GUE, 6080, TUN_REMCSUM, True),
    (TunnelType.GUE, 65535, TUN_CSUM, True),
    (TunnelType.GUE, 0, TUN_NOCSUM, False),
    (TunnelType.GUE, 65536, TUN_NOCSUM, False),
    (TunnelType.GRE, 0, TUN_CSUM, True),
    (TunnelType.GRE, 0, TUN_REMCSUM, False),
    (TunnelType.GRE, 1, TUN_NOCSUM, False),
])
def test_tunnel_options_follow_ipvsadm(tunnel_type: TunnelType, port: int, csum: int,
                                       ok: bool) -> None:
    assert (limits.tunnel_error(tunnel_type, port, csum) is None) is ok


@pytest.mark.parametrize("text", ["224.0.0.1", "255.255.255.255", "0.0.0.0", "::", "ff02::1",
                                  "fe80::1%eth0", "::ffff:192.0.2.1"])
def test_addresses_never_valid_for_a_vip_or_a_real_server(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert limits.virtual_address_error(address) is not None
    assert limits.real_server_address_error(address) is not None


@pytest.mark.parametrize("text", ["169.254.1.1", "fe80::1", "0.1.2.3"])
def test_addresses_refused_only_as_real_servers(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert limits.real_server_address_error(address) is not None
    assert limits.virtual_address_error(address) is None


@pytest.mark.parametrize("text", ["192.0.2.1", "2001:db8::1", "127.0.0.1", "10.255.255.255"])
def test_ordinary_unicast_addresses_pass(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert limits.virtual_address_error(address) is None
    assert limits.real_server_address_error(address) is None


def test_the_scope_is_named_in_the_message() -> None:
    message = limits.virtual_address_error(ipaddress.ip_address("fe80::1%eth0"))
    assert message is not None and "%eth0" in message


def test_configured_fwmarks_and_the_probe_mark_range() -> None:
    base = 0x4C560000
    assert limits.probe_mark_range(base) == range(base, base + 65536)
    assert limits.probe_mark_clash_error(base - 1, base) is None
    assert limits.probe_mark_clash_error(base + 65536, base) is None
    assert limits.probe_mark_clash_error(base, base) is not None
    assert "dr_check_mark_base" in (limits.probe_mark_clash_error(base + 65535, base) or "")
