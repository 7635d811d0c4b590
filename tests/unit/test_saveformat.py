"""The ipvsadm-save format: byte-identical with ipvsadm 1.31, strict parsing, round trips."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.errors import SaveFormatError
from lvsd.ipvs.saveformat import (
    NumericResolver,
    SystemResolver,
    format_address,
    format_listing,
    format_op,
    format_table,
    ipvsadm_order,
    parse,
    write_atomic,
)
from lvsd.model import (
    SVC_F_SCHED3,
    TUN_CSUM,
    AddDest,
    Address,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    DestStats,
    EditDest,
    EditService,
    Family,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    SetTimeouts,
    Table,
    Timeouts,
    Tunnel,
    TunnelType,
    VirtualService,
    parse_address,
)
from tests.strategies import ALL_FORWARDS, service_keys, tables

# `ipvsadm-save -n` of tables built with ipvsadm 1.31 on Debian's 6.1 kernel (the VM), and the
# examples in the reference notes. Lines are ipvsadm's order, so they are formatted unsorted.
REAL_SAVE_1 = """\
-A -t 127.0.0.1:8080 -s rr
-A -t 192.168.1.3:0 -s rr -p 360
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
-A -t 10.0.0.3:80 -s wrr
-a -t 10.0.0.3:80 -r 100.64.0.1:80 -m -w 1
-a -t 10.0.0.3:80 -r 172.16.0.1:80 -m -w 1
-a -t 10.0.0.3:80 -r 10.0.0.1:8080 -m -w 3
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-A -t 100.64.0.9:443 -s sh -b sh-port
-A -t 127.0.0.1:80 -s rr
-A -u 10.1.0.1:53 -s wlc -p 360 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -u 10.1.0.13:5060 -s rr -o
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A -u 127.0.0.1:53 -s rr
-A --sctp-service 10.1.0.15:3868 -s sed
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-a -t [2001:db8::2]:443 -r 192.0.2.5:443 -i -w 1 --tun-type ipip
-a -t [2001:db8::2]:443 -r [::1.2.3.4]:443 -m -w 1
-A -f 8 -s fo -p 30
-a -f 8 -r 192.168.10.7:0 -g -w 2
-a -f 8 -r 192.168.10.8:443 -m -w 2
-A -f 9 -6 -s dh
-a -f 9 -6 -r [2001:db8::9]:0 -g -w 4
"""

REAL_SAVE_2 = """\
-A -t 10.1.0.16:80 -s rr
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.2:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.1.0.16:80 -r 10.1.5.3:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
-a -t 10.1.0.16:80 -r 10.1.5.4:80 -i -w 1 --tun-type gre --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.5:80 -i -w 1 --tun-type gue --tun-port 6082 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.6:80 -g -w 1
-a -t 10.1.0.16:80 -r 10.1.5.7:9090 -m -w 65535
-a -t 10.1.0.16:80 -r [2001:db8::77]:80 -i -w 1 --tun-type ipip
-a -t 10.1.0.16:80 -r 127.0.0.1:80 -m -w 1
-A -t 10.1.0.19:80 -s wlc -b flag-1,flag-2,flag-3
-A -t 10.1.0.20:80 -s wlc -p 100 -M 0.0.0.0
-A -t 10.1.0.22:80 -s wlc -p 360
-A -t 10.1.0.23:80 -s lc -p 100
-A -t [2001:db8::3]:80 -s rr -p 10
-A -t [2001:db8::5]:80 -s rr
-a -t [2001:db8::5]:80 -r [2001:db8::1:6]:80 -m -w 1
-A -u [2001:db8::4]:80 -s rr
"""

NOTES_EXAMPLES = """\
-A -t 192.168.1.3:0 -s rr -p 360
-A -u 10.1.0.1:53 -s wlc -p 600 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A -u 10.1.0.13:5060 -s rr -o
-A --sctp-service 10.1.0.15:3868 -s rr
-A -f 9 -6 -s rr
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-A -t 10.1.0.16:80 -s rr
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-A -f 8 -s wrr
-a -f 8 -r 192.168.10.7:0 -g -w 2
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
"""

# `ipvsadm -Ln` and `ipvsadm -Ln --tun-info` in the VM for REAL_SAVE_2's table
REAL_LISTING_2 = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.1.0.16:80 rr
  -> 10.1.5.1:80                  Tunnel  1      0          0         
  -> 10.1.5.2:80                  Tunnel  1      0          0         
  -> 10.1.5.3:80                  Tunnel  1      0          0         
  -> 10.1.5.4:80                  Tunnel  1      0          0         
  -> 10.1.5.5:80                  Tunnel  1      0          0         
  -> 10.1.5.6:80                  Route   1      0          0         
  -> 10.1.5.7:9090                Masq    65535  0          0         
  -> [2001:db8::77]:80            Tunnel  1      0          0         
  -> 127.0.0.1:80                 Masq    1      0          0         
TCP  10.1.0.19:80 wlc (flag-1,flag-2,flag-3)
TCP  10.1.0.20:80 wlc persistent 100 mask 0.0.0.0
TCP  10.1.0.22:80 wlc persistent 360
TCP  10.1.0.23:80 lc persistent 100
TCP  [2001:db8::3]:80 rr persistent 10
TCP  [2001:db8::5]:80 rr
  -> [2001:db8::1:6]:80           Masq    1      0          0         
UDP  [2001:db8::4]:80 rr
"""  # noqa: W291

REAL_TUN_INFO_HEAD = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  10.1.0.16:80 rr
  -> 10.1.5.1:80                  Tunnel  gue:6080:-c   1      0          0         
  -> 10.1.5.2:80                  Tunnel  gre:+c        1      0          0         
  -> 10.1.5.3:80                  Tunnel  gue:6081:r+c  1      0          0         
  -> 10.1.5.4:80                  Tunnel  gre:-c        1      0          0         
  -> 10.1.5.5:80                  Tunnel  gue:6082:-c   1      0          0         
  -> 10.1.5.6:80                  Route   n/a           1      0          0         
  -> 10.1.5.7:9090                Masq    n/a           65535  0          0         
  -> [2001:db8::77]:80            Tunnel  ipip          1      0          0         
  -> 127.0.0.1:80                 Masq    n/a           1      0          0         
"""  # noqa: W291

INFO: dict[str, Any] = {"version": "1.2.1", "conn_table_size": 4096}
WEB = ServiceKey.virtual(Protocol.TCP, "200.0.0.254", 80)


class FakeNames:
    """A services and hosts database for tests: http=80, domain=53, host ``web1``."""

    ports: ClassVar[dict[tuple[str, Protocol], int]] = {
        ("http", Protocol.TCP): 80, ("www", Protocol.TCP): 80, ("domain", Protocol.UDP): 53,
        ("http-alt", Protocol.TCP): 8080}
    hosts: ClassVar[dict[str, Address]] = {"web1": ipaddress.IPv4Address("192.168.1.2"),
             "v6host": ipaddress.IPv6Address("2001:db8::7")}

    def host_name(self, address: Address) -> str | None:
        return next((n for n, a in self.hosts.items() if a == address), None)

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        return next((n for (n, p), v in self.ports.items()
                     if v == port and p is protocol and n != "www"), None)

    def host_address(self, name: str, family: Family) -> Address | None:
        address = self.hosts.get(name)
        return address if address is not None and Family.of(address) is family else None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        return self.ports.get((name, protocol))


def numeric_parse(text: str) -> Table:
    return parse(text, "save", resolver=NumericResolver())


# --- byte-identical with ipvsadm ------------------------------------------------------------


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


def test_listing_matches_ipvsadm_ln() -> None:
    table = numeric_parse(REAL_SAVE_2)
    assert format_listing(table, **INFO, sort=False) == REAL_LISTING_2
    assert format_listing(table, **INFO, sort=False, tun_info=True).startswith(
        REAL_TUN_INFO_HEAD)


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
    assert numeric_parse("-A -f -1 -s rr\n") == numeric_parse("-A -f 4294967295 -s rr\n")


def test_local_forwarding_prints_as_g_as_ipvsadm_does() -> None:
    dest = Dest(DestKey(parse_address("127.0.0.1"), 80), forward=Forward.LOCAL)
    table = Table((VirtualService(Service(WEB, "rr"), (dest,)),))
    text = format_table(table)
    assert text.endswith("-a -t 200.0.0.254:80 -r 127.0.0.1:80 -g -w 1\n")
    assert numeric_parse(text).by_key()[WEB].dests[0].forward is Forward.ROUTE
    assert "Local" in format_listing(table)


# --- what ipvsadm-save drops ----------------------------------------------------------------


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


# --- ipvsadm's sort -------------------------------------------------------------------------


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


# --- names ----------------------------------------------------------------------------------


def test_service_and_host_names_parse_and_format_like_plain_ipvsadm_save() -> None:
    names = FakeNames()
    text = ("-A -t 200.0.0.254:http -s rr\n"
            "-a -t 200.0.0.254:http -r web1:http -g -w 1\n"
            "-A -u 10.1.0.1:domain -s wlc -p 360\n"
            "-A -t [v6host]:http-alt -s rr\n")
    table = parse(text, resolver=names)
    assert table.by_key()[WEB].dests[0].key == DestKey(parse_address("192.168.1.2"), 80)
    assert ServiceKey.virtual(Protocol.TCP, "2001:db8::7", 8080) in table.by_key()
    assert format_table(table, resolve=True, resolver=names, sort=False) == text
    assert format_table(table, sort=False).startswith("-A -t 200.0.0.254:80 -s rr\n")
    assert format_listing(table, resolve=True, resolver=names, sort=False).splitlines()[2] \
        == "TCP  200.0.0.254:http rr"


def test_the_system_services_database_names_ports() -> None:
    table = parse("-A -t 192.0.2.1:http -s rr\n-A -u 192.0.2.1:domain -s rr\n",
                  resolver=SystemResolver())
    assert set(table.by_key()) == {ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80),
                                   ServiceKey.virtual(Protocol.UDP, "192.0.2.1", 53)}


# --- parse details --------------------------------------------------------------------------


def test_long_options_popt_spellings_and_defaults_are_accepted() -> None:
    text = """\
# saved by hand
ipvsadm --add-service --tcp-service 192.0.2.1:80 --scheduler=wrr --persistent --netmask 255.255.255.0

--add-server --tcp-service 192.0.2.1:80 --real-server 198.51.100.1 --masquerading --weight=5 --u-threshold 9 --l-threshold=2
-a -t 192.0.2.1:80 -r 198.51.100.2:8080 --gatewaying -w7
-a -t 192.0.2.1:80 -r 198.51.100.3 --ipip --tun-type gre --tun-csum
-A -t 192.0.2.2:80 -p 10
-A -f 7 --ipv6 --ops --sched-flags flag-2 --pe sip
-a -f 7 -6 -r 2001:db8::1
-A -t 192.0.2.3:443 -s sh -b sh-port,sh-fallback
"""  # noqa: E501
    table = numeric_parse(text)
    web = table.by_key()[ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)]
    assert web.service == Service(web.key, "wrr", persistence=Persistence(360, 0xFFFFFF00))
    assert web.dests == (
        Dest(DestKey(parse_address("198.51.100.1"), 80), 5, Forward.MASQ,
             upper_threshold=9, lower_threshold=2),
        Dest(DestKey(parse_address("198.51.100.2"), 80), 7, Forward.ROUTE),  # DR: VIP port
        Dest(DestKey(parse_address("198.51.100.3"), 80), 1, Forward.TUNNEL,
             Tunnel(TunnelType.GRE, 0, TUN_CSUM)),
    )
    by_key = table.by_key()
    assert by_key[ServiceKey.virtual(Protocol.TCP, "192.0.2.2", 80)].service.scheduler == "wlc"
    mark = by_key[ServiceKey.mark(7, Family.INET6)]
    assert mark.service == Service(mark.key, "wlc", 0x10, True, None, "sip")
    assert mark.dests == (Dest(DestKey(parse_address("2001:db8::1"), 0)),)
    assert by_key[ServiceKey.virtual(Protocol.TCP, "192.0.2.3", 443)].service.sched_flags \
        == 0x18


def test_edit_and_delete_lines_run_in_order_like_ipvsadm_restore() -> None:
    text = """\
-C
-A -t 10.0.0.6:80 -s rr
-E -t 10.0.0.6:80 -p 50
-a -t 10.0.0.6:80 -r 10.0.0.9 -m -w 4 -x 5
-e -t 10.0.0.6:80 -r 10.0.0.9 -m
-a -t 10.0.0.6:80 -r 10.0.0.10 -m
-d -t 10.0.0.6:80 -r 10.0.0.10
-A -t 10.0.0.7:80 -s rr
-D -t 10.0.0.7:80
"""
    # the same ipvsadm -R gives: -E and -e reset every option they do not name
    assert format_table(numeric_parse(text)) == \
        "-A -t 10.0.0.6:80 -s wlc -p 50\n-a -t 10.0.0.6:80 -r 10.0.0.9:80 -m -w 1\n"


BAD_LINES = [
    ("-A -t 192.0.2.9:80 -s rr --bogus", "unknown option '--bogus'"),
    ("-A -t 300.1.1.1:80 -s rr", "bad address '300.1.1.1'"),
    ("-A -t 192.0.2.9:99999 -s rr", "bad port '99999'"),
    ("-A -t 192.0.2.9:nosuchname -s rr", "bad port 'nosuchname'"),
    ("-A -t 192.0.2.9:80 -s fastest", "unknown scheduler 'fastest'"),
    ("-A -t 192.0.2.9:80 -s", "option '-s' needs an argument"),
    ("-A -t 192.0.2.9:80 -s rr -p 0", "bad persistence timeout '0'"),
    ("-A -t 192.0.2.9:80 -s rr -p 30 -M 255.255.255.256", "bad netmask"),
    ("-A -t [2001:db8::1]:80 -s rr -p 30 -M 129", "bad IPv6 netmask '129'"),
    ("-A -t 192.0.2.9:80 -s rr -o", "only for UDP and fwmark services"),
    ("-A -t 192.0.2.9:0 -s rr", "port 0 is only allowed for a persistent service"),
    ("-A -t 192.0.2.9:80 -s rr -b mh-port", "needs scheduler 'mh'"),
    ("-A -t 192.0.2.9:80 -s rr --pe http", "unknown persistence engine 'http'"),
    ("-A -t 192.0.2.9:80 -s rr -r 198.51.100.1", "option '-r' is not allowed with -A"),
    ("-A -t 192.0.2.9:80 -u 192.0.2.1:53", "option '-u' conflicts with '-t'"),
    ("-A -t 192.0.2.9:80 -s rr extra", "unexpected argument 'extra'"),
    ("-A -t 192.0.2.9:80 -6", "only for fwmark services"),
    ("-A -f 0 -s rr", "bad fwmark '0'"),
    ("-A -s rr", "no virtual service"),
    ("-t 192.0.2.1:80 -A", "a line must start with a command"),
    ("-A -t 192.0.2.9:80 -a", "more than one command"),
    ("-a -t 192.0.2.9:80 -r 198.51.100.1", "no -A line for it above"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w 65536", "bad weight '65536' (an integer from 0 to"
                                                    " 65535)"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w -1", "bad weight '-1'"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -x 2147483648", "bad upper threshold"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -y 5", "lower threshold 5 is above the upper"),
    ("-a -t 192.0.2.1:80", "no real server"),
    ("-a -t 192.0.2.1:80 -r 80", "a port without an address"),
    ("-a -t 192.0.2.1:80 -r [2001:db8::1]", "write [IPv6-address]:port"),
    ("-a -t 192.0.2.1:80 -r 2001:db8::1 -m", "needs -i (tunneling)"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -m --tun-type gue", "--tun-type needs -i"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type vxlan", "unknown tunnel type 'vxlan'"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue", "tunnel type gue needs --tun-port"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-port 1", "not allowed with tunnel type ipip"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gre --tun-remcsum", "not allowed with"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue --tun-port 1 --tun-csum "
     "--tun-nocsum", "conflicts with"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -g -m", "option '-m' conflicts with '-g'"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w 1 -w 2", "option '-w' given twice"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.2 -g", "duplicate real server 198.51.100.2:80"),
    ("-A -t 192.0.2.1:80 -s wlc", "duplicate service tcp:192.0.2.1:80 (first defined on line 1)"),
    ("-e -t 192.0.2.1:80 -r 198.51.100.7 -w 1", "not defined above"),
    ("-D -t 192.0.2.9:80", "no -A line for it above"),
    ("-C", "-C (clear) would discard the 1 service(s)"),
    ("--set 30 5", "--set needs exactly three timeouts"),
    ("--set 30 5 x", "bad timeout 'x'"),
    ("-Z", "a line must start with a command"),
]


@pytest.mark.parametrize(("bad_line", "message"), BAD_LINES)
def test_a_bad_line_anywhere_names_its_number_and_the_problem(bad_line: str,
                                                              message: str) -> None:
    text = ("-A -t 192.0.2.1:80 -s rr\n"
            "-a -t 192.0.2.1:80 -r 198.51.100.2 -g -w 1\n"
            "# a comment\n"
            f"{bad_line}\n"
            "-A -t 192.0.2.5:80 -s rr\n")
    with pytest.raises(SaveFormatError) as caught:
        parse(text, "/etc/lvsd/table.save", resolver=NumericResolver())
    error = caught.value
    assert error.line_no == 4
    assert message in error.reason
    assert str(error).startswith("/etc/lvsd/table.save:4: ")


def test_a_second_set_line_names_the_first() -> None:
    with pytest.raises(SaveFormatError, match=r":3: a second --set line \(the first is line 1\)"):
        numeric_parse("--set 1 2 3\n-A -t 192.0.2.1:80\n--set 4 5 6\n")


# --- format_op ------------------------------------------------------------------------------


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


# --- listing views --------------------------------------------------------------------------


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


# --- properties -----------------------------------------------------------------------------


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


@settings(max_examples=40, deadline=None)
@given(tables(stats=True, forwards=ALL_FORWARDS))
def test_listing_has_one_line_per_service_and_real_server(table: Table) -> None:
    views: list[dict[str, Any]] = [{}, {"stats": True}, {"rate": True}, {"thresholds": True},
                                 {"persistent_conn": True}, {"tun_info": True}]
    for view in views:
        lines = format_listing(table, **INFO, **view).splitlines()
        assert len(lines) == 3 + len(table) + table.dest_count


@given(service_keys())
def test_service_keys_format_and_parse_back(key: ServiceKey) -> None:
    persistence = Persistence() if key.port == 0 and not key.is_fwmark else None
    table = Table((VirtualService(Service(key, "rr", persistence=persistence)),))
    assert numeric_parse(format_table(table)) == table


# --- write_atomic ---------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_whole_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    write_atomic(target, "-A -t 192.0.2.1:80 -s rr\n")
    assert target.read_text() == "-A -t 192.0.2.1:80 -s rr\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, "")
    assert target.read_text() == ""
    assert os.listdir(tmp_path) == ["ipvs.save"]


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    target.write_text("old\n")
    target.chmod(0o600)
    write_atomic(target, "new\n")
    assert (target.read_text(), stat.S_IMODE(target.stat().st_mode)) == ("new\n", 0o600)


def test_write_atomic_failure_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "ipvs.save"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "-A \udcff\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["ipvs.save"]
