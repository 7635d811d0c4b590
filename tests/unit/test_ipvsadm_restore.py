"""Reading a restore file as ipvsadm-restore reads it, all or nothing."""

from __future__ import annotations

import pytest

from lvsd.errors import SaveFormatError
from lvsd.ipvsadm.listing import format_listing
from lvsd.ipvsadm.resolve import NumericResolver, SystemResolver
from lvsd.ipvsadm.restore import parse, restore_plan
from lvsd.ipvsadm.save import format_op, format_table
from lvsd.model import (
    TUN_CSUM,
    Dest,
    DestKey,
    Family,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    Tunnel,
    TunnelType,
    parse_address,
)
from tests.unit.ipvsadm_samples import (
    ACCEPTED,
    WEB,
    FakeNames,
    numeric_parse,
)

# --- names ---------------------------------------------------------------------------------------


def test_service_and_host_names_parse_and_format_like_plain_ipvsadm_save() -> None:
    names = FakeNames()
    text = ("-A -t 200.0.0.254:http -s rr\n"
            "-a -t 200.0.0.254:http -r web1:http -g -w 1\n"
            "-A -u 10.1.0.1:domain -s wlc -p 360\n"
            "-A -t [2001:db8::7]:http-alt -s rr\n")
    table = parse(text, resolver=names)
    assert table.by_key()[WEB].dests[0].key == DestKey(parse_address("192.168.1.2"), 80)
    assert ServiceKey.virtual(Protocol.TCP, "2001:db8::7", 8080) in table.by_key()
    assert format_table(table, resolve=True, resolver=names, sort=False) == \
        text.replace("[2001:db8::7]", "[v6host]")
    assert format_table(table, sort=False).startswith("-A -t 200.0.0.254:80 -s rr\n")
    assert format_listing(table, resolve=True, resolver=names, sort=False).splitlines()[2] \
        == "TCP  200.0.0.254:http rr"


def test_a_host_name_in_brackets_is_refused_as_ipvsadm_would_misread_it() -> None:
    # ipvsadm looks "[v6host]" up as an IPv4 host and drops the port after it
    with pytest.raises(SaveFormatError, match="only an IPv6 address goes in brackets"):
        parse("-A -t [v6host]:http-alt -s rr\n", resolver=FakeNames())


def test_the_system_services_database_names_ports() -> None:
    table = parse("-A -t 192.0.2.1:http -s rr\n-A -u 192.0.2.1:domain -s rr\n",
                  resolver=SystemResolver())
    assert set(table.by_key()) == {ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80),
                                   ServiceKey.virtual(Protocol.UDP, "192.0.2.1", 53)}



# --- parse details -------------------------------------------------------------------------------


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
    ("-A -t 192.0.2.9:99999 -s rr", "port 99999 is out of range 0..65535"),
    ("-A -t 192.0.2.9:nosuchname -s rr", "bad port 'nosuchname'"),
    ("-A -t 192.0.2.9:80 -s fastest", "unknown scheduler 'fastest'"),
    ("-A -t 192.0.2.9:80 -s", "option '-s' needs a value"),
    ("-A -t 192.0.2.9:80 -s rr -p 0", "persistence timeout 0 is out of range 1..2678400"),
    ("-A -t 192.0.2.9:80 -s rr -p 30 -M 255.255.255.256", "bad netmask"),
    ("-A -t [2001:db8::1]:80 -s rr -p 30 -M 129", "prefix 129 is out of range 1..128"),
    ("-A -t 192.0.2.9:80 -s rr -o", "only for UDP and fwmark services"),
    ("-A -t 192.0.2.9:0 -s rr", "port 0 (all ports) needs persistence"),
    ("-A -t 192.0.2.9:80 -s rr -b mh-port", "needs scheduler 'mh'"),
    ("-A -t 192.0.2.9:80 -s rr --pe http", "unknown persistence engine 'http'"),
    ("-A -t 192.0.2.9:80 -s rr -r 198.51.100.1", "option '-r' is not allowed with -A"),
    ("-A -t 192.0.2.9:80 -u 192.0.2.1:53", "option '-u' conflicts with '-t'"),
    ("-A -t 192.0.2.9:80 -s rr extra", "unexpected argument 'extra'"),
    ("-A -t 192.0.2.9:80 -6", "only for fwmark services"),
    ("-A -f 0 -s rr", "fwmark 0 is out of range 1..4294967295"),
    ("-A -s rr", "no virtual service"),
    ("-t 192.0.2.1:80 -A", "a line must start with a command"),
    ("-A -t 192.0.2.9:80 -a", "more than one command"),
    ("-a -t 192.0.2.9:80 -r 198.51.100.1", "no -A line for it above"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w 65536", "weight 65536 is out of range 0..65535"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w -1", "weight -1 is out of range 0..65535"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -x 2147483648", "upper threshold 2147483648 is out"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -y 5", "lower threshold 5 needs an upper threshold"),
    ("-a -t 192.0.2.1:80", "no real server"),
    ("-a -t 192.0.2.1:80 -r 80", "a port without an address"),
    ("-a -t 192.0.2.1:80 -r [2001:db8::1]", "write [IPv6-address]:port"),
    ("-a -t 192.0.2.1:80 -r 2001:db8::1 -m", "needs -i (tunneling)"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -m --tun-type gue", "--tun-type needs -i"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type vxlan", "unknown tunnel type 'vxlan'"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue", "tunnel type gue needs --tun-port"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-port 1", "ipip tunnel has no port"),
    ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gre --tun-remcsum",
     "gre tunnel cannot use remcsum"),
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
    ("--set 30 5 x", "udp timeout 'x' is not a decimal integer"),
    ("-Z", "-Z changes no rule"),
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



# --- read as ipvsadm-restore reads ----------------------------------------------------------


@pytest.mark.parametrize(("text", "saved"), [case[1:] for case in ACCEPTED],
                         ids=[case[0] for case in ACCEPTED])
def test_spellings_ipvsadm_restore_accepts_mean_what_they_mean_to_it(text: str,
                                                                    saved: str) -> None:
    assert format_table(numeric_parse(text), sort=False) == saved


@pytest.mark.parametrize("separator", ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                                       "\u2029"])
def test_line_numbers_count_newlines_only(separator: str) -> None:
    # str.splitlines() breaks lines at these; ipvsadm-restore does not
    text = f"# a note{separator}more\n-A -t 192.0.2.1:80 -s rr\n-A -t 192.0.2.2:80 -s nosuch\n"
    with pytest.raises(SaveFormatError) as caught:
        numeric_parse(text)
    assert caught.value.line_no == 3
    with pytest.raises(SaveFormatError) as caught:
        numeric_parse(f"-A -t 192.0.2.1:80 -s rr\n-A -t 192.0.2.2:80{separator}-s rr\n")
    assert caught.value.line_no == 2 and "at column 19" in caught.value.reason


def test_bytes_are_read_as_utf8_and_a_bad_byte_is_an_error_on_its_line() -> None:
    assert parse(b"# caf\xc3\xa9\n-A -t 192.0.2.1:80 -s rr\n", resolver=NumericResolver()) \
        == numeric_parse("-A -t 192.0.2.1:80 -s rr\n")
    with pytest.raises(SaveFormatError, match=r"^f:2: the byte 0xFF, which is not UTF-8 text"):
        parse(b"-A -t 192.0.2.1:80 -s rr\n-A -t 192.0.2.2:80 \xff\n", "f",
              resolver=NumericResolver())


def test_a_nul_byte_in_a_host_name_is_an_error_not_a_lookup() -> None:
    # gethostbyname("web\0") raises ValueError: the parser must not get that far
    with pytest.raises(SaveFormatError, match=r":1: a NUL byte at column 10"):
        parse("-A -t web\x00:80 -s rr\n", resolver=SystemResolver())


def test_restore_plan_edits_in_place_and_noflush_deletes_nothing() -> None:
    actual = numeric_parse("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1 -w 1\n"
                           "-A -t 192.0.2.2:80 -s rr\n")
    wanted = numeric_parse("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1 -w 3\n"
                           "-A -t 192.0.2.3:80 -s rr\n")
    assert [format_op(op) for op in restore_plan(wanted, actual)] == [
        "-D -t 192.0.2.2:80", "-A -t 192.0.2.3:80 -s rr",
        "-e -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 3"]
    assert [format_op(op) for op in restore_plan(wanted, actual, noflush=True)] == [
        "-A -t 192.0.2.3:80 -s rr", "-e -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 3"]
