"""``lvsd import keepalived``: every fixture imports into a config that check-config accepts,
and each keepalived option lands where lvsd has it, or in a comment."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvsd import cli
from lvsd.config import loads
from lvsd.errors import ConfigError
from lvsd.migrate.document import render
from lvsd.migrate.keepalived import import_keepalived

FIXTURES = Path(__file__).parent / "keepalived"
ALL = sorted(FIXTURES.glob("*.conf"))


def imported(name: str | Path, config_id: str = "lb1") -> tuple[str, dict[str, Any]]:
    path = name if isinstance(name, Path) else FIXTURES / name
    text = render(import_keepalived(path, config_id=config_id))
    return text, tomllib.loads(text)


def services(name: str) -> list[dict[str, Any]]:
    return list(imported(name)[1]["services"])


def test_there_are_at_least_ten_fixtures() -> None:
    assert len(ALL) >= 10


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_fixture_imports_into_a_config_check_config_accepts(
        path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lvsd.toml"
    assert cli.main(["import", "keepalived", str(path), "--config-id", "lb1",
                     "-o", str(out)]) == 0
    assert cli.main(["check-config", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert loads(out.read_text()).services


def test_nat_http_get_maps_every_option_and_comments_the_digest() -> None:
    text, doc = imported("01-doc-nat-http.conf")
    (svc,) = doc["services"]
    assert svc["address"] == "192.0.2.10" and svc["port"] == 80
    assert svc["scheduler"] == "wrr" and svc["forward"] == "masq"
    assert svc["persistence"] == 50 and svc["persistence_netmask"] == "255.255.255.0"
    assert svc["on_failure"] == "remove"
    assert svc["sorry_server"] == {"address": "198.51.100.9", "port": 8080}
    check = svc["check"]  # both servers have the same check: written once
    assert check["type"] == "http" and check["path"] == "/health"
    assert check["expect_status"] == ["200-299", 301, 503]
    assert check["host"] == "www.example.com"
    assert (check["interval"], check["timeout"], check["fall"], check["rise"],
            check["retry_interval"]) == (6, 3, 4, 1, 2)
    assert [(s["address"], s["port"], s["weight"]) for s in svc["real_servers"]] == [
        ("198.51.100.1", 8080, 3), ("198.51.100.2", 8080, 1)]
    assert "digest 9b3a0c85a887a256d6939da88aabd8cd: not imported" in text
    assert "url: not imported" in text
    assert "global_defs: not imported: notification_email, router_id" in text


def test_dr_tcp_check_inhibit_quorum_and_thresholds() -> None:
    text, doc = imported("02-doc-dr-tcp-inhibit.conf")
    (svc,) = doc["services"]
    assert svc["forward"] == "route" and svc["on_failure"] == "weight0"
    assert svc["quorum"] == 2
    first, second = svc["real_servers"]
    assert first["upper_threshold"] == 1000 and first["lower_threshold"] == 100
    assert first["check"] == {"type": "tcp", "connect_port": 8443, "interval": 10,
                              "timeout": 2, "rise": 1, "fall": 3, "retry_interval": 1}
    assert second["check"]["connect_ip"] == "192.0.2.122"
    assert second["check"]["fall"] == 2  # keepalived's default retry 1
    assert "hysteresis 1: not imported" in text
    assert "bindto 192.0.2.5: not imported" in text
    assert "alpha: lvsd always keeps a new server out" in text


def test_fwmark_ipv6_sh_flags_default_persistence_and_ssl_get() -> None:
    text, doc = imported("03-doc-fwmark-ssl.conf")
    (svc,) = doc["services"]
    assert svc["fwmark"] == 8 and svc["family"] == "ipv6"
    assert "address" not in svc and "protocol" not in svc
    assert svc["sched_flags"] == ["sh-port", "sh-fallback"]
    assert svc["persistence"] == 360  # persistence_timeout without a value
    check = svc["check"]
    assert check["type"] == "https" and check["verify"] is False
    assert check["host"] == "api.example.com" and check["expect_status"] == [200]
    assert "never verifies the certificate" in text
    assert "enable_sni: not imported (lvsd always sends SNI)" in text
    assert check["connect_port"] == 443
    assert "a fwmark service's server has no port: the https check probes port 443" in text


def test_tunnel_options_ops_dns_and_misc_check() -> None:
    text, doc = imported("04-doc-tun-misc-dns.conf")
    (svc,) = doc["services"]
    assert svc["protocol"] == "udp" and svc["ops"] is True and svc["forward"] == "tunnel"
    gue, misc = svc["real_servers"]
    assert (gue["tunnel_type"], gue["tunnel_port"], gue["tunnel_csum"]) == ("gue", 6080, "csum")
    assert gue["check"]["type"] == "dns"
    assert (gue["check"]["query_type"], gue["check"]["query_name"]) == ("A", "example.org")
    assert gue["check"]["fall"] == 4  # DNS_CHECK's retry default is 3
    assert misc["check"]["argv"] == ["/usr/local/bin/check_dns", "--server", "203.0.113.51",
                                     "a b"]
    assert misc["check"]["timeout"] == 4 and misc["check"]["fall"] == 1
    assert "misc_dynamic: not imported" in text and "user nobody: not imported" in text


def test_a_group_becomes_one_service_per_member_with_ranges_expanded() -> None:
    svcs = services("05-doc-group.conf")
    keys = [s.get("fwmark") or (s["address"], s["port"]) for s in svcs]
    assert keys == [("192.0.2.30", 80), ("192.0.2.31", 80), ("192.0.2.32", 80),
                    ("192.0.2.33", 80), ("192.0.2.40", 8080), ("192.0.2.41", 8080), 9]
    for svc in svcs:
        assert svc["scheduler"] == "lc"
        assert [s["address"] for s in svc["real_servers"]] == ["10.9.0.1"]
    assert len({s["name"] for s in svcs}) == len(svcs)


ONE_LINE_SPREAD = """
virtual_server 192.0.2.60 80 {
    lb_algo rr
    lb_kind DR
    delay_loop 3
    real_server 192.0.2.61 80 {
        weight 4
        HTTP_GET {
            url {
                path /ok
                status_code 200
            }
            connect_timeout 1
            retry 2
            delay_before_retry 1
        }
    }
    real_server 192.0.2.62 80 {
        weight 6
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
"""


def test_blocks_on_one_line_read_as_if_spread_over_lines(tmp_path: Path) -> None:
    spread = tmp_path / "spread.conf"
    spread.write_text(ONE_LINE_SPREAD)
    one_line = loads(imported("06-nasty-one-line.conf")[0])
    assert one_line.services == loads(imported(spread)[0]).services
    (svc,) = one_line.services
    assert [s.dest.weight for s in svc.servers] == [4, 6]
    (first,) = svc.servers[0].checks
    assert first.fall == 3 and first.timeout == 1


def test_comments_quotes_and_unknown_options_are_kept_as_comments() -> None:
    text, doc = imported("07-nasty-comments-quotes.conf")
    (svc,) = doc["services"]
    assert svc["scheduler"] == "rr" and svc["forward"] == "masq"
    assert svc["check"]["argv"] == ["/usr/bin/check", "--tag", "#1", "--say", "hi!"]
    assert "unknown_option 1 2 3: not imported (unknown to lvsd)" in text
    assert "unknown_block { … }: not imported" in text


def test_includes_globs_relative_paths_track_files_and_unmapped_checkers() -> None:
    text, doc = imported("08-nasty-include.conf")
    web, mail = doc["services"]
    assert web["check"] == {"type": "file", "path": "/run/maint-web"}
    smtp, udp = mail["real_servers"]
    assert smtp["check"]["type"] == "tcp" and smtp["check"]["expect"] == "^220"
    assert "check" not in udp
    assert "PING_CHECK: not imported (lvsd has no ICMP probe" in text
    assert "UDP_CHECK: not imported (lvsd has no UDP probe" in text
    assert "include conf.d/missing-*.conf: no file matched" in text
    assert "conf.d/a.conf:4: virtual_server 192.0.2.80 80" in text


def test_conditional_lines_follow_the_config_id_and_vrrp_is_commented() -> None:
    text, doc = imported("09-nasty-vrrp-and-conditional.conf", config_id="lb1")
    assert [s["address"] for s in doc["services"]] == ["192.0.2.100"]
    assert "VRRP is not lvsd's part" in text and "vrrp_script chk" in text
    other = imported("09-nasty-vrrp-and-conditional.conf", config_id="lb2")[1]
    assert [s["address"] for s in other["services"]] == ["192.0.2.101"]


def test_ipv6_mh_flags_sip_sorry_server_method_and_regex() -> None:
    text, doc = imported("10-doc-ipv6-sorry-persist.conf")
    (svc,) = doc["services"]
    assert svc["sched_flags"] == ["mh-port"] and svc["pe"] == "sip"
    assert svc["persistence"] == 600 and svc["persistence_netmask"] == 64
    assert svc["sorry_server"] == {"address": "2001:db8::99", "port": 8080, "forward": "masq"}
    assert svc["check"]["expect_body"] == "^OK"
    assert 'notify_down "/usr/bin/page-oncall down": not imported' in text


def test_a_flag_for_another_scheduler_keeps_its_bit(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("virtual_server 192.0.2.1 80 { lb_algo rr sh-port lb_kind DR "
                    "real_server 192.0.2.2 80 { } }")
    (svc,) = imported(conf)[1]["services"]
    assert svc["sched_flags"] == ["flag-2"]


def test_lvs_timeouts_in_global_defs_become_timeouts(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("global_defs { lvs_timeouts tcp 7200 tcpfin 60 udp 30 }\n")
    assert imported(conf)[1]["timeouts"] == {"tcp": 7200, "tcpfin": 60, "udp": 30}


@pytest.mark.parametrize(("text", "message"), [
    ("virtual_server 192.0.2.1 80 {\n lb_algo rr\n", "virtual_server block is never closed"),
    ("virtual_server 192.0.2.1 80 { }\n}\n", "'}' closes no block"),
    ('virtual_server 192.0.2.1 80 { real_server 1.2.3.4 80 { MISC_CHECK { misc_path "/x } } }',
     "unterminated quoted string"),
    ("virtual_server group NOPE { lb_algo rr }", "no virtual_server_group 'NOPE'"),
    ("virtual_server 192.0.2.300 80 { }", "not an IP address"),
    ("virtual_server 192.0.2.1 99999 { }", "not a port"),
    ("virtual_server 192.0.2.1 80 { lb_algo fastest }", "unknown scheduler 'fastest'"),
    ("virtual_server 192.0.2.1 80 { lb_kind ROUTE }", "expected NAT, DR or TUN"),
    ("virtual_server_group G { 10.0.0.9-10.0.0.1 80 }\nvirtual_server group G { }",
     "the range ends before it starts"),
    ("include self.conf\n", "includes itself"),
    ("virtual_server 192.0.2.1 80 { real_server 10.0.0.1 80 { MISC_CHECK { } } }",
     "MISC_CHECK: needs misc_path"),
    ("virtual_server fwmark 3 { real_server 10.0.0.1 { TCP_CHECK { } } }",
     "needs connect_port"),
    ("$PORT=80\nvirtual_server 192.0.2.1 $PORT { }", "parameter substitution"),
])
def test_what_cannot_be_imported_is_an_error_with_its_place(
        tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "self.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as caught:
        import_keepalived(conf, config_id="x")
    rendered = str(caught.value)
    assert message in rendered
    assert "self.conf" in rendered


def test_an_unreadable_file_is_an_input_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "keepalived", str(tmp_path / "none.conf")]) == cli.EXIT_BAD_INPUT
    assert "cannot read" in capsys.readouterr().err


def test_every_checker_of_a_server_becomes_one_of_its_checks(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("virtual_server 192.0.2.1 80 {\n protocol TCP\n lb_kind DR\n"
                    " real_server 192.0.2.2 80 {\n  HTTP_GET { url { path /a } }\n"
                    "  TCP_CHECK { connect_port 81 }\n }\n}\n")
    text, doc = imported(conf)
    (spec,) = loads(text).services
    assert [c.type for c in spec.servers[0].checks] == ["http", "tcp"]
    assert doc["services"][0]["real_servers"][0]["checks"][0]["connect_port"] == 81


def test_no_protocol_is_udp_as_keepalived_makes_it_and_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("virtual_server 192.0.2.1 80 {\n lb_kind DR\n}\n")
    text, doc = imported(conf)
    assert doc["services"][0]["protocol"] == "udp"
    assert "no protocol: keepalived makes a UDP service" in text
