"""ipvsadm's sort order: a signed compare, and glibc's merge sort over its cycles."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsd.ipvsadm.order import ipvsadm_order
from lvsd.model import (
    Dest,
    DestKey,
    Forward,
    Protocol,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    parse_address,
)

# --- ipvsadm's sort ------------------------------------------------------------------------------


def _svc(address: str, port: int = 80) -> VirtualService:
    return VirtualService(Service(ServiceKey.virtual(Protocol.TCP, address, port), "rr"))


def test_sort_reads_address_differences_as_signed_like_ipvsadm() -> None:
    # 10.0.0.3 - 200.0.0.254 wraps to a positive int: ipvsadm lists 200.0.0.254 first
    table = Table((_svc("10.0.0.3"), _svc("200.0.0.254"), _svc("192.168.1.3", 0)))
    assert [str(vs.key) for vs in ipvsadm_order(table)] == [
        "tcp:192.168.1.3:0", "tcp:200.0.0.254:80", "tcp:10.0.0.3:80"]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_sort_of_a_comparison_cycle_depends_on_the_input_order_as_glibc_does(
        order: tuple[int, int, int]) -> None:
    # 10 < 100 < 200 < 10: every rotation is a fixed point of glibc's merge sort
    cycle = [_svc("10.0.0.1"), _svc("100.0.0.1"), _svc("200.0.0.1")]
    given_order = tuple(cycle[i] for i in order)
    assert ipvsadm_order(Table(given_order)).services == given_order


def test_sort_puts_fwmarks_above_2_31_first_and_orders_real_servers() -> None:
    # added 10.0.0.1, 172.16.0.1, 100.64.0.1: the kernel lists the newest first, and
    # ipvsadm printed them in this order (REAL_SAVE_1) although 10 < 100 < 172 < 10
    dests = tuple(Dest(DestKey(parse_address(a), p), forward=Forward.MASQ)
                  for a, p in (("100.64.0.1", 80), ("172.16.0.1", 80), ("10.0.0.1", 8080)))
    table = Table((_svc("10.0.0.3"), VirtualService(Service(ServiceKey.mark(2**32 - 1), "rr"),
                                                    dests)))
    ordered = ipvsadm_order(table)
    assert ordered.services[0].key == ServiceKey.mark(2**32 - 1)
    assert [str(d.key) for d in ordered.services[0].dests] == [
        "100.64.0.1:80", "172.16.0.1:80", "10.0.0.1:8080"]


@given(st.lists(st.integers(0, 2**31 - 1), min_size=2, max_size=40, unique=True),
       st.randoms(use_true_random=False))
def test_sort_without_wrap_is_the_plain_numeric_order_whatever_the_input_order(
        offsets: list[int], rnd: object) -> None:
    base = int(ipaddress.IPv4Address("100.0.0.0"))
    addresses = [str(ipaddress.IPv4Address(base + o)) for o in offsets]
    shuffled = list(addresses)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    ordered = ipvsadm_order(Table(tuple(_svc(a) for a in shuffled)))
    assert [str(vs.key.address) for vs in ordered] == sorted(
        addresses, key=lambda a: int(ipaddress.IPv4Address(a)))

