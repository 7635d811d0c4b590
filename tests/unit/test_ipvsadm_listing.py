"""ipvsadm -L's views, column for column."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from lvsd.ipvsadm.listing import format_listing
from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Service,
    ServiceStats,
    Table,
    VirtualService,
    parse_address,
)
from tests.strategies import ALL_FORWARDS, tables
from tests.unit.ipvsadm_samples import (
    INFO,
    REAL_LISTING_2,
    REAL_SAVE_2,
    REAL_TUN_INFO_HEAD,
    WEB,
    numeric_parse,
)

# --- listing views -------------------------------------------------------------------------------


def test_stats_rate_and_threshold_views_use_ipvsadm_columns_and_units() -> None:
    traffic = ServiceStats(conns=99_999_999, inpkts=123_456_789, outpkts=12_345_678_901,
                           inbytes=5 * 10**12, outbytes=2 * 10**15, cps=1, inpps=22,
                           outpps=333, inbps=4_444_444_444, outbps=5)
    dest = Dest(DestKey(parse_address("192.168.1.2"), 80), upper_threshold=100,
                lower_threshold=10, stats=DestStats(3, 4, 5, traffic))
    table = Table((VirtualService(Service(WEB, "rr", stats=traffic), (dest,)),))
    assert format_listing(table, stats=True).splitlines() == [
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  200.0.0.254:80               99999999  123456K   12345M    5000G    2000T",
        "  -> 192.168.1.2:80               99999999  123456K   12345M    5000G    2000T",
    ]
    assert format_listing(table, rate=True).splitlines()[2:] == [
        "TCP  200.0.0.254:80                      1       22      333    4444M        5",
        "  -> 192.168.1.2:80                      1       22      333    4444M        5",
    ]
    assert format_listing(table, stats=True, exact=True).splitlines()[2] == (
        "TCP  200.0.0.254:80               99999999 123456789 12345678901 5000000000000"
        " 2000000000000000")
    assert format_listing(table, thresholds=True).splitlines()[3] == (
        "  -> 192.168.1.2:80               100        10         3          4         ")
    assert format_listing(table, persistent_conn=True).splitlines()[3] == (
        "  -> 192.168.1.2:80               1         5           3          4         ")
    assert format_listing(table, **INFO).startswith(
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n")


def test_listing_matches_ipvsadm_ln() -> None:
    table = numeric_parse(REAL_SAVE_2)
    assert format_listing(table, **INFO, sort=False) == REAL_LISTING_2
    assert format_listing(table, **INFO, sort=False, tun_info=True).startswith(
        REAL_TUN_INFO_HEAD)


@settings(max_examples=40, deadline=None)
@given(tables(stats=True, forwards=ALL_FORWARDS))
def test_listing_has_one_line_per_service_and_real_server(table: Table) -> None:
    views: list[dict[str, Any]] = [{}, {"stats": True}, {"rate": True}, {"thresholds": True},
                                 {"persistent_conn": True}, {"tun_info": True}]
    for view in views:
        lines = format_listing(table, **INFO, **view).splitlines()
        assert len(lines) == 3 + len(table) + table.dest_count
