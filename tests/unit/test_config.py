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
    assert first.check is not None and second.check is not None
    assert first.check.interval == 0.5 and second.check.interval == 0.5
    assert first.check.path == "/healthz" and second.check.path == "/other"  # type: ignore[union-attr]


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
