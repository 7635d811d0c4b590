"""Config: every problem reported with its place; valid files become model types."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config import load, loads
from lvsd.errors import ConfigError
from lvsd.model import (
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Family,
    Forward,
    Persistence,
    Protocol,
    ServiceKey,
    Timeouts,
    TunnelType,
)

MINIMAL = """
[[services]]
address = "192.0.2.100"
port = 80
scheduler = "rr"

[services.check]
type = "http"
path = "/healthz"
interval = "500ms"

[[services.real_servers]]
address = "192.0.2.11"

[[services.real_servers]]
address = "192.0.2.12"
weight = 3
check = { path = "/other" }
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(text)
    return [str(p) for p in caught.value.problems]


def test_a_dr_service_with_checks_and_per_server_override() -> None:
    config = loads(MINIMAL)
    (spec,) = config.services
    assert spec.key == ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
    assert spec.service.scheduler == "rr"
    first, second = spec.servers
    assert first.dest.key.port == 80 and first.dest.forward is Forward.ROUTE
    assert second.dest.weight == 3
    (first_check,), (second_check,) = first.checks, second.checks
    assert first_check.interval == 0.5 and second_check.interval == 0.5
    assert first_check.path == "/healthz" and second_check.path == "/other"  # type: ignore[attr-defined]


def test_defaults_are_documented_values() -> None:
    config = loads(MINIMAL)
    assert str(config.daemon.save_file) == "/var/lib/lvsd/ipvsadm.rules"
    assert (config.daemon.listen_host, config.daemon.listen_port) == ("127.0.0.1", 9163)
    assert config.daemon.on_stop == "keep"
    assert config.services[0].on_failure == "weight0"
    assert config.timeouts is None


def test_every_kernel_feature_maps_to_the_model() -> None:
    config = loads("""
[timeouts]
tcp = 30
tcpfin = 5
udp = 60

[[services]]
protocol = "udp"
address = "2001:db8::1"
port = 53
scheduler = "mh"
sched_flags = ["mh-fallback", "mh-port"]
ops = true
persistence = 600
persistence_netmask = 64
pe = "sip"
forward = "masq"
[[services.real_servers]]
address = "2001:db8::11"
port = 5353
upper_threshold = 100
lower_threshold = 10

[[services]]
fwmark = 8
family = "ipv4"
scheduler = "wlc"
[[services.real_servers]]
address = "192.0.2.11"
forward = "tunnel"
tunnel_type = "gue"
tunnel_port = 6080
tunnel_csum = "remcsum"
""")
    udp, fwm = config.services
    assert config.timeouts == Timeouts(30, 5, 60)
    assert udp.key.family is Family.INET6 and udp.key.protocol is Protocol.UDP
    assert udp.service.sched_flags == SVC_F_SCHED1 | SVC_F_SCHED2
    assert udp.service.onepacket and udp.service.pe_name == "sip"
    assert udp.service.persistence == Persistence(600, 64)
    (rs,) = udp.servers
    assert rs.dest.key.port == 5353 and rs.dest.forward is Forward.MASQ
    assert (rs.dest.upper_threshold, rs.dest.lower_threshold) == (100, 10)
    assert fwm.key == ServiceKey.mark(8)
    (tun,) = fwm.servers
    assert tun.dest.tunnel is not None and tun.dest.tunnel.type is TunnelType.GUE
    assert (tun.dest.tunnel.port, tun.dest.tunnel.csum) == (6080, 2)


def test_ipv4_persistence_netmask_accepts_dotted_and_prefix_and_drops_host_mask() -> None:
    base = '[[services]]\naddress = "192.0.2.1"\nport = 0\npersistence = 360\n'
    assert loads(base + 'persistence_netmask = "255.255.255.0"\n').services[0] \
        .service.persistence == Persistence(360, 0xFFFFFF00)
    assert loads(base + "persistence_netmask = 24\n").services[0] \
        .service.persistence == Persistence(360, 0xFFFFFF00)
    assert loads(base + 'persistence_netmask = "255.255.255.255"\n').services[0] \
        .service.persistence == Persistence(360, None)


def test_every_problem_is_reported_with_its_place() -> None:
    found = problems_of("""
[daemon]
listen = "nowhere"

[[services]]
address = "192.0.2.1"
port = 80
scheduler = "rrr"
sched_flags = ["mh-port"]
check = { type = "http", pth = "/" }
[[services.real_servers]]
address = "192.0.2.300"
[[services.real_servers]]
address = "192.0.2.3"
weight = -1
[[services.real_servers]]
address = "192.0.2.4"
port = 8080
check = { type = "tcp", timeout = 0 }

[[services]]
fwmark = 8
protocol = "tcp"
""")
    svc = "services[0] (tcp:192.0.2.1:80)"
    assert found == [
        "daemon.listen: expected IP:PORT, e.g. 127.0.0.1:9163 or [::1]:9163, got 'nowhere'",
        f"{svc}.scheduler: unknown scheduler 'rrr' (did you mean 'rr'?) (one of rr, wrr, lc, "
        "wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)",
        f"{svc}.sched_flags: 'mh-port' needs scheduler 'mh', not 'rrr'",
        f"{svc}.check: unknown key 'pth' (did you mean 'path'?)",
        f"{svc}.real_servers[0] (192.0.2.300).address: not an IP address: '192.0.2.300'",
        f"{svc}.real_servers[1] (192.0.2.3).weight: weight -1 is out of range 0..65535",
        f"{svc}.real_servers[2] (192.0.2.4).port: route forwarding cannot change the port: the "
        "server must listen on 80 (or use masq)",
        f"{svc}.real_servers[2] (192.0.2.4).check.timeout: must be above 0, got 0",
        "services[1] (fwm:8).protocol: a fwmark service has no protocol",
    ]


def test_duplicates_are_problems() -> None:
    found = problems_of("""
[[services]]
address = "192.0.2.1"
port = 80
[[services.real_servers]]
address = "192.0.2.3"
[[services.real_servers]]
address = "192.0.2.3"
port = 80
[[services]]
address = "192.0.2.1"
port = 80
""")
    assert found == [
        "services[0] (tcp:192.0.2.1:80).real_servers[1] (192.0.2.3): duplicate of "
        "real_servers[0] (192.0.2.3)",
        "services[1] (tcp:192.0.2.1:80): duplicate of services[0] (tcp:192.0.2.1:80)",
    ]


def test_unknown_keys_and_bad_toml_are_problems() -> None:
    assert problems_of("[daemon]\nlistn = 1\nallow_empty = true\n") == [
        "daemon: unknown key 'listn' (did you mean 'listen'?)"]
    (bad,) = problems_of("[[services]\n")
    assert bad.startswith("line 1, column 11: not valid TOML")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_shipped_examples_are_valid() -> None:
    examples = sorted(Path(__file__).parents[2].joinpath("config").rglob("*.toml"))
    assert examples, "config/ has example files"
    for path in examples:
        load(path)


def test_every_independent_problem_is_reported_in_one_run() -> None:
    found = problems_of("""
[daemon]
resync_interval = -1

[timeouts]
tcp = 0

[[services]]
name = "web"
address = "192.0.2.1"
port = true
[[services.real_servers]]
address = "192.0.2.11"
wieght = 2

[[services]]
name = "dns"
protocol = "udp"
address = "192.0.2.2"
port = 53
scheduler = "wrrr"
[[services.real_servers]]
address = "192.0.2.21"
weight = 1.5
""")
    assert found == [
        "daemon.resync_interval: must be above 0, got -1",
        "timeouts.tcp: must be at least 1, got 0",
        'services[0] "web".port: expected an integer, got true',
        'services[0] "web".real_servers[0] (192.0.2.11): unknown key \'wieght\' '
        "(did you mean 'weight'?)",
        'services[1] "dns" (udp:192.0.2.2:53).scheduler: unknown scheduler \'wrrr\' (did you '
        "mean 'wrr'?) (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)",
        'services[1] "dns" (udp:192.0.2.2:53).real_servers[0] (192.0.2.21).weight: expected an '
        "integer, got 1.5",
    ]


@pytest.mark.parametrize("text", [
    'port = true', 'port = 80.0', 'weight = true', 'quorum = 1.0', 'ops = 1',
    'fail_open = "yes"', 'persistence = 60.5'])
def test_types_are_strict(text: str) -> None:
    key, _, value = text.partition(" = ")
    base = {"port": 80, "weight": None}
    service = '[[services]]\naddress = "192.0.2.1"\n'
    server = '[[services.real_servers]]\naddress = "192.0.2.11"\n'
    if key == "weight":
        body = f"{service}port = 80\n{server}{text}\n"
    elif key == "port":
        body = f"{service}{text}\n{server}"
    else:
        body = f"{service}port = {base['port']}\n{text}\n{server}"
    (problem,) = problems_of(body)
    assert f".{key}: expected " in problem and f"got {value}" in problem


def test_a_config_without_services_needs_allow_empty() -> None:
    (problem,) = problems_of("# the rest of the file was lost\n")
    assert problem.startswith("services: no services") and "allow_empty = true" in problem
    config = loads("[daemon]\nallow_empty = true\n")
    assert config.services == () and config.daemon.allow_empty


def test_listen_takes_ip_literals_of_both_families() -> None:
    config = loads('[daemon]\nlisten = "[::1]:9000"\n' + MINIMAL)
    assert (config.daemon.listen_host, config.daemon.listen_port) == ("::1", 9000)
    assert problems_of('[daemon]\nlisten = "localhost:9163"\n' + MINIMAL) == [
        "daemon.listen: expected IP:PORT, e.g. 127.0.0.1:9163 or [::1]:9163: 'localhost' is "
        "not an IP address (host names are not looked up)"]


def test_a_network_check_of_a_fwmark_service_needs_connect_port() -> None:
    text = """
[[services]]
fwmark = 8
[services.check]
type = "tcp"
[[services.real_servers]]
address = "192.0.2.11"
"""
    (problem,) = problems_of(text)
    assert problem == (
        "services[0] (fwm:8).real_servers[0] (192.0.2.11).check: this tcp check would probe "
        "port 0 (a fwmark service's server has no port): set connect_port in the check, or "
        "give the real server a port")
    fixed = loads(text.replace('type = "tcp"', 'type = "tcp"\nconnect_port = 80'))
    assert fixed.services[0].servers[0].checks
    assert loads(text.replace('type = "tcp"', 'type = "file"\npath = "/run/m"'))


def test_configured_fwmarks_stay_out_of_the_probe_mark_range() -> None:
    text = "[daemon]\ndr_check_mark_base = {base}\n[[services]]\nfwmark = {mark}\n" \
           '[[services.real_servers]]\naddress = "192.0.2.11"\n'
    assert loads(text.format(base=1000, mark=999))
    assert loads(text.format(base=1000, mark=1000 + 65536))
    for mark in (1000, 1000 + 65535):
        (problem,) = problems_of(text.format(base=1000, mark=mark))
        assert problem.startswith(f"services[0] (fwm:{mark}).fwmark: fwmark {mark:#x} is inside")
    (problem,) = problems_of(text.format(base=2**32 - 65535, mark=1))
    assert problem.startswith("daemon.dr_check_mark_base: dr_check_mark_base 0xffff0001 leaves")


def test_what_the_kernel_or_ipvsadm_refuse_is_refused() -> None:
    service = '[[services]]\naddress = "{vip}"\nport = {port}\n{extra}\n' \
              '[[services.real_servers]]\naddress = "{rs}"\n{rs_extra}\n'

    def refused(vip: str = "192.0.2.1", port: int = 80, extra: str = "", rs: str = "192.0.2.11",
                rs_extra: str = "") -> str:
        (problem,) = problems_of(service.format(vip=vip, port=port, extra=extra, rs=rs,
                                                rs_extra=rs_extra))
        return problem

    assert "needs an upper threshold" in refused(rs_extra="lower_threshold = 1")
    assert "multicast" in refused(rs="239.1.1.1")
    assert "broadcast" in refused(rs="255.255.255.255")
    assert "unspecified" in refused(rs="0.0.0.0")
    assert "link-local" in refused(rs="169.254.0.1")
    assert "at most 2147483647" in refused(rs_extra="upper_threshold = 4294967295")
    assert "only for UDP" in refused(extra="ops = true")
    assert "needs persistence" in refused(port=0)
    assert "31 days" in refused(extra="persistence = 2000000000")
    assert "scope" in refused(vip="fe80::1%eth0", rs="fe80::2", rs_extra='forward = "tunnel"')
    (problem,) = problems_of("[timeouts]\ntcp = 2678400\n" + MINIMAL)
    assert problem.startswith("timeouts.tcp: timeout 2678400 s is above 2147483 s")


def test_legal_but_probably_wrong_values_are_warnings(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\n")
    config = loads(f"""
[daemon]
listen = "0.0.0.0:9163"
state_dir = "state"
save_file = "rules"

[[services]]
name = "web"
address = "192.0.2.1"
port = 80
quorum = 10
[services.check]
type = "tcp"
interval = "1s"
timeout = "3s"
[[services.real_servers]]
address = "192.0.2.11"
weight = 2
[[services.real_servers]]
address = "192.0.2.12"
check = {{ type = "file", path = "maintenance/{{address}}" }}
[[services.real_servers]]
address = "192.0.2.13"
check = {{ type = "exec", argv = ["{program}"] }}
[[services.real_servers]]
address = "192.0.2.14"
check = {{ type = "exec", argv = ["/nonexistent/check"] }}
[[services.real_servers]]
address = "192.0.2.15"
check = {{ type = "exec", argv = ["./check.sh"] }}
[[services.real_servers]]
address = "192.0.2.16"
check = {{ type = "exec", argv = ["no-such-program-in-path"] }}
""")
    place = 'services[0] "web" (tcp:192.0.2.1:80)'
    assert [str(w) for w in config.warnings] == [
        "daemon.listen: 0.0.0.0:9163 listens on every interface: /metrics, /status and the API "
        "are reachable from any network (use 127.0.0.1 or one address)",
        "daemon.state_dir: relative path 'state' is resolved against the daemon's working "
        "directory (/ under systemd): write an absolute path",
        "daemon.save_file: relative path 'rules' is resolved against the daemon's working "
        "directory (/ under systemd): write an absolute path",
        f"{place}.check.timeout: 3 s is longer than the interval 1 s: a hung probe delays the "
        "next",
        f"{place}.real_servers[1] (192.0.2.12).check.path: relative path 'maintenance/{{address}}'"
        " is resolved against the daemon's working directory (/ under systemd): write an "
        "absolute path",
        f"{place}.real_servers[2] (192.0.2.13).check.argv: program '{program}' is not "
        "executable",
        f"{place}.real_servers[3] (192.0.2.14).check.argv: program '/nonexistent/check' does "
        "not exist",
        f"{place}.real_servers[4] (192.0.2.15).check.argv: relative path './check.sh' is "
        "resolved against the daemon's working directory (/ under systemd): write an absolute "
        "path",
        f"{place}.real_servers[5] (192.0.2.16).check.argv: program 'no-such-program-in-path' "
        "is not found in PATH",
        f"{place}.quorum: quorum 10 is above the total weight 7 of the real servers: the service "
        "is always below quorum",
    ]


@pytest.mark.parametrize("content", [
    b"[[services]]\nname = \"caf\xe9\"\n",
    b"\xff\xfe[\x00d\x00",
])
def test_a_file_not_in_utf8_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load(path)
    (problem,) = caught.value.problems
    assert problem.where.startswith("line ") and "not UTF-8" in problem.message


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load(path).services[0].name == "tcp:192.0.2.100:80"


def test_dr_path_checks_fit_in_the_probe_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    from lvsd import limits

    monkeypatch.setattr(limits, "PROBE_MARK_SPAN", 1)
    text = ('[[services]]\naddress = "192.0.2.1"\nport = 80\n'
            '[services.check]\ntype = "tcp"\ndr_path = true\n'
            '[[services.real_servers]]\naddress = "192.0.2.11"\n')
    assert loads(text)
    assert problems_of(text + '[[services.real_servers]]\naddress = "192.0.2.12"\n') == [
        "services: 2 real servers have a dr_path check; lvsd has 1 probe marks"]


def test_a_servers_checks_come_in_addition_to_the_services_check() -> None:
    config = load(Path(__file__).parents[2] / "config/examples/udp-dns-timeouts.toml")
    plain, maintained = config.services[0].servers
    assert [check.type for check in plain.checks] == ["dns"]
    assert [check.type for check in maintained.checks] == ["dns", "file"]


def test_checks_of_service_and_server_add_up_and_each_is_validated() -> None:
    text = """
[[services]]
address = "192.0.2.1"
port = 80
check = { type = "tcp" }
checks = [{ type = "file", path = "/run/all" }]
[[services.real_servers]]
address = "192.0.2.11"
check = { type = "http", path = "/" }
checks = [{ type = "file", path = "/run/rs11" }, { type = "tcp", timout = 1 }]
"""
    (problem,) = problems_of(text)
    assert "real_servers[0]" in problem and "checks[1]" in problem and "timout" in problem
    config = loads(text.replace(", timout = 1", ""))
    assert [check.type for check in config.services[0].servers[0].checks] == [
        "http", "file", "file", "tcp"]
