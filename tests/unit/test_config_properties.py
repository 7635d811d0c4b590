"""Properties over random configs across the whole schema.

Every config ``loads`` accepts gives, with every server up and with every server down, a
desired table whose save file lvsd's parser reads back equal and whose plan from an empty
table encodes for the kernel. The generator draws values at the limits (the last one allowed)
and, now and then, one past them: a config holding such a value must be refused. And nothing,
however broken, makes ``loads`` raise anything but ``ConfigError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.config import loads
from lvsd.errors import ConfigError
from lvsd.health import Status
from lvsd.ipvs.codec import request
from lvsd.ipvsadm.order import ipvsadm_order
from lvsd.ipvsadm.resolve import NumericResolver
from lvsd.ipvsadm.restore import parse
from lvsd.ipvsadm.save import format_table
from lvsd.model import KERNEL_DEFAULT_TIMEOUTS, SCHEDULERS, Table
from lvsd.reconcile import desired, plan
from lvsd.spec import Config, ServerSpec, ServiceSpec

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Draw:
    """Draws values; with ``edges`` it sometimes draws one the kernel or ipvsadm refuses and
    remembers that it did."""

    draw: st.DrawFn
    edges: bool
    refused: list[str] = field(default_factory=list)

    def pick(self, valid: list[Any], invalid: list[Any] = (), what: str = "") -> Any:  # type: ignore[assignment]
        if self.edges and invalid and self.draw(st.integers(0, 39)) == 0:
            value = self.draw(st.sampled_from(invalid))
            self.refused.append(f"{what} = {value!r}")
            return value
        return self.draw(st.sampled_from(valid))

    def maybe(self) -> bool:
        return self.draw(st.booleans())


V4_VIP_BAD = ["224.0.0.1", "255.255.255.255", "0.0.0.0"]
V6_VIP_BAD = ["::", "ff02::1", "fe80::1%eth0"]
V4_RS_BAD = [*V4_VIP_BAD, "169.254.1.1", "0.1.2.3"]
V6_RS_BAD = [*V6_VIP_BAD, "fe80::2"]
TUNNEL_OK = [("ipip", None, None), ("gue", 6080, None), ("gue", 1, "csum"),
             ("gue", 65535, "remcsum"), ("gre", None, "csum"), ("gre", None, "nocsum")]
TUNNEL_BAD = [("gue", 0, None), ("ipip", 6080, None), ("gre", None, "remcsum"),
              ("ipip", None, "csum"), ("gue", 65536, None)]
SCHED_FLAGS = {"sh": ["sh-fallback", "sh-port"], "mh": ["mh-fallback", "mh-port"]}


def _server(d: Draw, index: int, family: int, service_port: int | None, fwmark: bool,
            service_forward: str, sorry: bool = False) -> dict[str, Any]:
    forward = d.pick(["route", "masq", "tunnel", None])
    effective = forward or service_forward
    same_family = effective != "tunnel" or d.maybe()
    server_family = family if same_family else (6 if family == 4 else 4)
    base = "198.51.100." if sorry else "192.0.2."
    if server_family == 4:
        address = d.pick([f"{base}{10 + index}"], V4_RS_BAD, "real server")
    else:
        address = d.pick([f"2001:db8:{'ff' if sorry else '1'}::{10 + index:x}"], V6_RS_BAD,
                         "real server")
    rs: dict[str, Any] = {"address": address}
    if forward is not None:
        rs["forward"] = forward
    if fwmark or effective == "masq":
        port = d.pick([None, 0, 80, 8080, 65535], [65536, -1], "server port")
    else:
        port = d.pick([None, service_port], [65536], "server port")
    if port is not None:
        rs["port"] = port
    if sorry:
        rs["weight"] = d.pick([1, 3, 65535], [0, 65536], "sorry weight")
        return rs
    rs["weight"] = d.pick([0, 1, 5, 65535], [65536, -1, True, 1.5], "weight")
    upper, lower = d.pick([(0, 0), (10, 0), (10, 10), (10, 5), (2**31 - 1, 2**31 - 1)],
                          [(0, 5), (10, 11), (2**31, 0)], "thresholds")
    if upper or d.maybe():
        rs["upper_threshold"] = upper
    if lower or d.maybe():
        rs["lower_threshold"] = lower
    if effective == "tunnel":
        kind, tunnel_port, csum = d.pick(TUNNEL_OK, TUNNEL_BAD, "tunnel")
        rs["tunnel_type"] = kind
        if tunnel_port is not None:
            rs["tunnel_port"] = tunnel_port
        if csum is not None:
            rs["tunnel_csum"] = csum
    if d.maybe():
        rs["disabled"] = d.maybe()
    if d.maybe() and d.maybe():
        rs["checks"] = [{"type": "file", "path": "/run/lvsd/maintenance/{address}"}]
    return rs


def _check(d: Draw, needs_port: bool, dr_path_allowed: bool) -> dict[str, Any]:
    kind = d.pick(["tcp", "http", "https", "dns", "exec", "file"])
    check: dict[str, Any] = {"type": kind}
    if kind in ("http", "https"):
        check["path"] = "/healthz"
        check["expect_status"] = d.pick([[200], ["200-299", 301]])
        if kind == "https":
            check["verify"] = False
    elif kind == "dns":
        check["query_name"] = "example.com"
    elif kind == "exec":
        check["argv"] = ["/bin/true"]
    elif kind == "file":
        check["path"] = "/run/lvsd/maintenance/{address}:{port}"
    if kind not in ("exec", "file"):
        if needs_port:
            check["connect_port"] = d.pick([1, 8080, 65535], [0, 65536], "connect_port")
        elif d.maybe():
            check["connect_port"] = d.pick([1, 65535], [0], "connect_port")
        if dr_path_allowed and d.maybe():
            check["dr_path"] = True
    check["interval"] = d.pick(["2s", 1, 0.5, "500ms"], [0, True, "forever"], "interval")
    check["rise"] = d.pick([1, 2, 1000], [0, 1.5, 1001], "rise")
    return check


def _service(d: Draw, index: int, mark_base: int) -> dict[str, Any]:
    svc: dict[str, Any] = {"name": f"svc{index}"}
    fwmark = d.maybe()
    family = d.pick([4, 6])
    persistence = d.pick([None, 1, 360, 2678400], [0, 2678401, 2_000_000_000], "persistence")
    if persistence is not None:
        svc["persistence"] = persistence
        if d.maybe():
            svc["persistence_netmask"] = (d.pick([24, "255.255.255.0", 32]) if family == 4
                                          else d.pick([64, 128], [129, 0], "IPv6 prefix"))
        if d.maybe():
            svc["pe"] = "sip"
    if fwmark:
        top = [2**32 - 1 - index] if mark_base + 65536 <= 2**32 - 4 else []
        valid_marks = [index + 1, *top]
        svc["fwmark"] = d.pick(valid_marks, [0, 2**32, mark_base, mark_base + 65535], "fwmark")
        if family == 6:
            svc["family"] = "ipv6"
        protocol = None
        port = None
    else:
        protocol = d.pick(["tcp", "udp", "sctp"])
        svc["protocol"] = protocol
        svc["address"] = (d.pick([f"192.0.2.{200 + index}"], V4_VIP_BAD, "VIP") if family == 4
                          else d.pick([f"2001:db8::{index + 1:x}"], V6_VIP_BAD, "VIP"))
        zero_ok = [0] if persistence is not None else []
        port = d.pick([1, 80, 65535, *zero_ok], [65536, -1, True, 80.0], "service port")
        if persistence is None and d.edges and d.draw(st.integers(0, 39)) == 0:
            port = 0
            d.refused.append("port 0 without persistence")
        svc["port"] = port
    scheduler = d.pick(list(SCHEDULERS), ["bogus"], "scheduler")
    svc["scheduler"] = scheduler
    flags = [*SCHED_FLAGS.get(scheduler, []), "flag-3"]
    svc["sched_flags"] = d.draw(st.lists(st.sampled_from(flags), max_size=2, unique=True))
    if protocol in (None, "udp") and d.maybe():
        svc["ops"] = True
    elif protocol == "tcp" and d.edges and d.draw(st.integers(0, 39)) == 0:
        svc["ops"] = True
        d.refused.append("ops on tcp")
    forward = d.pick(["route", "masq", "tunnel"])
    svc["forward"] = forward
    svc["on_failure"] = d.pick(["weight0", "remove"])
    svc["quorum"] = d.pick([0, 1, 2, 10])
    svc["fail_open"] = d.maybe()
    no_port = fwmark or port == 0
    if d.maybe():
        svc["sorry_server"] = _server(d, index, family, port, fwmark, forward, sorry=True)
    servers = d.draw(st.integers(0, 3))
    svc["real_servers"] = [
        _server(d, index * 8 + j, family, port, fwmark, forward) for j in range(servers)]
    if d.maybe():
        routed = all((rs.get("forward") or forward) == "route" for rs in svc["real_servers"])
        svc["check"] = _check(d, needs_port=no_port or any(
            rs.get("port") == 0 for rs in svc["real_servers"]),
            dr_path_allowed=routed and not fwmark)
    if d.maybe() and d.maybe():
        svc["checks"] = [{"type": "exec", "argv": ["/bin/true"], "timeout": "500ms"}]
    return svc


@st.composite
def configs(draw: st.DrawFn, edges: bool) -> tuple[dict[str, Any], list[str]]:
    d = Draw(draw, edges)
    mark_base = d.pick([0x4C560000, 0x10000, 2**32 - 65536], [0, 2**32 - 65535],
                       "dr_check_mark_base")
    raw: dict[str, Any] = {"daemon": {"dr_check_mark_base": mark_base,
                                      "listen": d.pick(["127.0.0.1:9163", "[::1]:9163"],
                                                       ["localhost:9163", "127.0.0.1:abc"],
                                                       "listen")}}
    if d.maybe():
        raw["timeouts"] = {
            name: d.pick([1, 30, 900, 2147483], [0, 2147484, -1], f"timeouts.{name}")
            for name in ("tcp", "tcpfin", "udp")}
    count = draw(st.integers(0, 4))
    raw["services"] = [_service(d, index, mark_base) for index in range(count)]
    if count == 0:
        raw["daemon"]["allow_empty"] = True
    return raw, d.refused


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"


def to_toml(raw: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in ("daemon", "timeouts"):
        if section in raw:
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in raw[section].items())
    for service in raw["services"]:
        lines.append("[[services]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in service.items()
                     if key != "real_servers")
        for server in service["real_servers"]:
            lines.append("[[services.real_servers]]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in server.items())
    return "\n".join(lines) + "\n"


def every(status: Status) -> Any:
    def health(spec: ServiceSpec, server: ServerSpec) -> Status:
        return status
    return health


def saved_and_read_back(table: Table) -> Table:
    return parse(format_table(table), "save", resolver=NumericResolver())


def expected_after_save(table: Table) -> Table:
    """What a save file keeps: ipvsadm's order, and no timeouts line for the kernel's defaults."""
    ordered = ipvsadm_order(table)
    if ordered.timeouts == KERNEL_DEFAULT_TIMEOUTS:
        return Table(ordered.services, None)
    return ordered


def assert_programmable(config: Config) -> None:
    for status in (Status.UP, Status.DOWN):
        table, _ = desired(config, every(status))
        assert saved_and_read_back(table) == expected_after_save(table)
        for op in plan(table, Table(())):
            command, payload = request(op)
            assert command > 0 and payload


@PROPERTY_SETTINGS
@given(configs(edges=False))
def test_every_config_of_legal_values_is_accepted_and_programs(
        case: tuple[dict[str, Any], list[str]]) -> None:
    raw, _ = case
    try:
        config = loads(to_toml(raw))
    except ConfigError as exc:
        raise AssertionError(f"{to_toml(raw)}\nrefused: {exc}") from exc
    assert_programmable(config)


@PROPERTY_SETTINGS
@given(configs(edges=True))
def test_values_past_a_limit_are_refused_and_the_rest_programs(
        case: tuple[dict[str, Any], list[str]]) -> None:
    raw, refused = case
    text = to_toml(raw)
    try:
        config = loads(text)
    except ConfigError:
        return
    assert not refused, f"accepted although it holds {refused}:\n{text}"
    assert_programmable(config)


TOML_FRAGMENTS = st.sampled_from([
    "[[services]]\n", "[daemon]\n", "[timeouts]\n", "[[services.real_servers]]\n",
    "[services.check]\n", 'address = "192.0.2.1"\n', "port = 80\n", "port = true\n",
    "weight = 1.5\n", 'type = "http"\n', "headers = 5\n", "headers = [1, 2]\n",
    'expect_body = "a{99999999999}"\n', "expect_status = 1.5\n", 'expect_status = ["2xx"]\n',
    "check = 5\n", "real_servers = 5\n", "services = 5\n", "daemon = 5\n", 'type = "dns"\n',
    'query_name = "..."\n', "fwmark = 4294967296\n", 'listen = "localhost:x"\n',
    "interval = inf\n", "interval = nan\n", 'argv = ["", "x"]\n', 'env = { A = 5 }\n',
    'path = "{address!z}"\n', "x = " + "[" * 3000 + "]" * 3000 + "\n", "\x00", "\ufeff",
    'persistence_netmask = "1.2.3"\n', "sched_flags = [1]\n", "on_change = [[]]\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(TOML_FRAGMENTS, max_size=12), st.text(max_size=40))
def test_nothing_written_raises_anything_but_a_config_error(fragments: list[str],
                                                            noise: str) -> None:
    for text in ("".join(fragments), "".join(fragments) + noise):
        try:
            loads(text)
        except ConfigError as exc:
            assert exc.problems and all(str(problem) for problem in exc.problems)
