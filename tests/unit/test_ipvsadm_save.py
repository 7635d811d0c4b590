"""A table as ipvsadm-save prints it: byte-identical with ipvsadm 1.31, plus what it drops."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings

from lvsd.errors import SaveFormatError
from lvsd.ipvsadm.listing import format_listing
from lvsd.ipvsadm.save import format_address, format_op, format_table
from lvsd.model import (
    SVC_F_SCHED3,
    TUN_CSUM,
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
    parse_address,
)
from tests.strategies import service_keys, tables
from tests.unit.ipvsadm_samples import (
    NOTES_EXAMPLES,
    REAL_SAVE_1,
    REAL_SAVE_2,
    WEB,
    numeric_parse,
)

# --- byte-identical with ipvsadm -----------------------------------------------------------------


@pytest.mark.parametrize("text", [REAL_SAVE_1, REAL_SAVE_2, NOTES_EXAMPLES])
def test_real_ipvsadm_save_output_round_trips_byte_for_byte(text: str) -> None:
    table = numeric_parse(text)
    assert format_table(table, compat=True, sort=False) == text
    assert format_table(table, sort=False) == text  # nothing dropped: no thresholds, timeouts


def test_parsed_table_has_the_meaning_ipvsadm_gives_each_option() -> None:
    table = numeric_parse(REAL_SAVE_1 + REAL_SAVE_2.replace("127.0.0.1:80", "127.0.0.2:80"))
    by_key = table.by_key()
    web = by_key[WEB]
    assert web.service.scheduler == "rr"
    assert [d.key for d in web.dests] == [DestKey(parse_address("192.168.1.2"), 80),
                                          DestKey(parse_address("192.168.1.3"), 80)]
    assert all(d.forward is Forward.ROUTE and d.weight == 1 for d in web.dests)
    dns = by_key[ServiceKey.virtual(Protocol.UDP, "10.1.0.1", 53)].service
    assert dns.persistence == Persistence(360, 0xFFFFFF00)
    assert by_key[ServiceKey.virtual(Protocol.TCP, "2001:db8::2", 443)].service.persistence \
        == Persistence(120, 64)
    assert by_key[ServiceKey.virtual(Protocol.TCP, "10.1.0.2", 443)].service.sched_flags == 0x18
    assert by_key[ServiceKey.virtual(Protocol.UDP, "10.1.0.13", 5060)].service.onepacket
    assert by_key[ServiceKey.virtual(Protocol.UDP, "10.1.0.14", 5060)].service.pe_name == "sip"
    assert ServiceKey.virtual(Protocol.SCTP, "10.1.0.15", 3868) in by_key
    assert by_key[ServiceKey.mark(9, Family.INET6)].service.scheduler == "dh"
    tunnels = {d.key.address: d.tunnel for d in
               by_key[ServiceKey.virtual(Protocol.TCP, "10.1.0.16", 80)].dests}
    assert tunnels[parse_address("10.1.5.1")] == Tunnel(TunnelType.GUE, 6080, 0)
    assert tunnels[parse_address("10.1.5.2")] == Tunnel(TunnelType.GRE, 0, TUN_CSUM)
    assert tunnels[parse_address("2001:db8::77")] == Tunnel(TunnelType.IPIP)
    assert tunnels[parse_address("10.1.5.7")] is None


def test_glibc_inet_ntop_writes_ipv4_compatible_addresses_dotted() -> None:
    assert format_address(ipaddress.IPv6Address("::102:304")) == "::1.2.3.4"
    assert format_address(ipaddress.IPv6Address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4"
    assert format_address(ipaddress.IPv6Address("2001:db8::1:6")) == "2001:db8::1:6"


def test_compat_prints_what_ipvsadm_prints_even_where_restore_cannot_read_it() -> None:
    table = Table((
        VirtualService(Service(ServiceKey.mark(2**32 - 1), "rr")),
        VirtualService(Service(ServiceKey.virtual(Protocol.TCP, "10.1.0.17", 80), "sh",
                               sched_flags=SVC_F_SCHED3)),
    ))
    assert format_table(table, compat=True, sort=False) == \
        "-A -f -1 -s rr\n-A -t 10.1.0.17:80 -s sh -b \n"
    assert format_table(table, sort=False) == \
        "-A -f 4294967295 -s rr\n-A -t 10.1.0.17:80 -s sh -b flag-3\n"
    # ipvsadm-restore cannot read its own "-f -1" back, nor can lvsd: the error says what to write
    with pytest.raises(SaveFormatError, match=r"fwmark -1 is negative.*write 4294967295"):
        numeric_parse("-A -f -1 -s rr\n")


def test_local_forwarding_prints_as_g_as_ipvsadm_does() -> None:
    dest = Dest(DestKey(parse_address("127.0.0.1"), 80), forward=Forward.LOCAL)
    table = Table((VirtualService(Service(WEB, "rr"), (dest,)),))
    text = format_table(table)
    assert text.endswith("-a -t 200.0.0.254:80 -r 127.0.0.1:80 -g -w 1\n")
    assert numeric_parse(text).by_key()[WEB].dests[0].forward is Forward.ROUTE
    assert "Local" in format_listing(table)



# --- what ipvsadm-save drops ---------------------------------------------------------------------


def test_default_output_adds_thresholds_and_non_default_timeouts() -> None:
    dest = Dest(DestKey(parse_address("10.0.0.1"), 8080), 3, Forward.MASQ,
                upper_threshold=100, lower_threshold=10)
    only_upper = Dest(DestKey(parse_address("10.0.0.2"), 80), 1, Forward.MASQ,
                      upper_threshold=7)
    service = Service(ServiceKey.virtual(Protocol.TCP, "10.0.0.3", 80), "wrr")
    table = Table((VirtualService(service, (dest, only_upper)),), Timeouts(30, 5, 60))
    assert format_table(table, sort=False) == (
        "--set 30 5 60\n"
        "-A -t 10.0.0.3:80 -s wrr\n"
        "-a -t 10.0.0.3:80 -r 10.0.0.1:8080 -m -w 3 -x 100 -y 10\n"
        "-a -t 10.0.0.3:80 -r 10.0.0.2:80 -m -w 1 -x 7\n")
    assert format_table(table, sort=False, compat=True) == (
        "-A -t 10.0.0.3:80 -s wrr\n"
        "-a -t 10.0.0.3:80 -r 10.0.0.1:8080 -m -w 3\n"
        "-a -t 10.0.0.3:80 -r 10.0.0.2:80 -m -w 1\n")
    assert numeric_parse(format_table(table)) == table


def test_kernel_default_timeouts_are_not_written() -> None:
    assert format_table(Table((), Timeouts())) == ""
    assert format_table(Table((), None)) == ""



# --- format_op -----------------------------------------------------------------------------------


def test_plan_operations_print_as_ipvsadm_commands() -> None:
    service = Service(ServiceKey.virtual(Protocol.UDP, "192.0.2.1", 53), "wrr",
                      persistence=Persistence(60, 0xFFFFFF00))
    dest = Dest(DestKey(parse_address("198.51.100.1"), 53), 0, Forward.TUNNEL,
                Tunnel(TunnelType.GUE, 6080, TUN_CSUM), upper_threshold=50)
    mark = ServiceKey.mark(9, Family.INET6)
    assert format_op(AddService(service)) == "-A -u 192.0.2.1:53 -s wrr -p 60 -M 255.255.255.0"
    assert format_op(EditService(service)).startswith("-E -u 192.0.2.1:53 -s wrr")
    assert format_op(DeleteService(mark)) == "-D -f 9 -6"
    assert format_op(AddDest(service.key, dest)) == (
        "-a -u 192.0.2.1:53 -r 198.51.100.1:53 -i -w 0 --tun-type gue --tun-port 6080 "
        "--tun-csum -x 50")
    assert format_op(EditDest(service.key, dest)).startswith("-e -u 192.0.2.1:53 -r ")
    assert format_op(DeleteDest(mark, DestKey(parse_address("2001:db8::1"), 0))) == \
        "-d -f 9 -6 -r [2001:db8::1]:0"
    assert format_op(SetTimeouts(Timeouts(30, 5, 60))) == "--set 30 5 60"


def test_plan_lines_from_an_empty_table_parse_back_to_the_table() -> None:
    table = numeric_parse(REAL_SAVE_2)
    ops = [AddService(vs.service) for vs in table] + [
        AddDest(vs.key, d) for vs in table for d in vs.dests]
    assert numeric_parse("".join(format_op(op) + "\n" for op in ops)) == table



# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(tables())
def test_parse_inverts_format(table: Table) -> None:
    text = format_table(table, sort=False)
    parsed = numeric_parse(text)
    assert parsed == table
    assert format_table(parsed, sort=False) == text
    assert [vs.key for vs in parsed] == [vs.key for vs in table]
    assert numeric_parse(format_table(table)) == table  # in ipvsadm's order too


@settings(max_examples=40, deadline=None)
@given(tables(with_timeouts=False))
def test_compat_output_is_default_output_without_thresholds(table: Table) -> None:
    compat = format_table(table, compat=True).splitlines()
    default = format_table(table).splitlines()
    assert len(compat) == len(default)
    for short, full in zip(compat, default, strict=True):
        if short != full:
            assert full.startswith(short.removesuffix(" -b ")) or "-f " in short


@given(service_keys())
def test_service_keys_format_and_parse_back(key: ServiceKey) -> None:
    persistence = Persistence() if key.port == 0 and not key.is_fwmark else None
    table = Table((VirtualService(Service(key, "rr", persistence=persistence)),))
    assert numeric_parse(format_table(table)) == table

