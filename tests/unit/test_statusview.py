"""``lvsd ctl status``'s text: ipvsadm's --stats columns byte for byte, lvsd's to the right."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings

from lvsd.api import status_document
from lvsd.ipvsadm.listing import format_listing
from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    Table,
    VirtualService,
    parse_address,
)
from lvsd.snapshot import LastProbe, ServerStatus, ServiceStatus, Snapshot
from lvsd.statusview import StatusDocumentError, render_status, wants_colour
from lvsd.tablejson import key_from_json, key_json, stats_from_json, stats_json
from tests.strategies import ALL_FORWARDS, tables
from tests.unit.snapshot_builders import NOW, WEB, lab_snapshot, server, service

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def document(snapshot: Snapshot) -> dict[str, Any]:
    """What the client gets: the daemon's document through JSON."""
    loaded: dict[str, Any] = json.loads(json.dumps(status_document(snapshot, NOW)))
    return loaded


def managed(table: Table) -> Snapshot:
    """A snapshot in which lvsd manages every service of ``table``, every server up."""
    services = tuple(
        ServiceStatus(vs.key, f"svc{index}", vs.service, tuple(
            ServerStatus(d.key, "real", d.weight, d, "up", check_type="tcp",
                         last_probe=LastProbe(True, "connected", 0.001, NOW - 1),
                         health_since=NOW - 30, health_reason="first probe passed")
            for d in vs.dests), 1, 1, False, False, False)
        for index, vs in enumerate(table.services))
    return Snapshot(services, (), NOW - 1, True, "test.toml", kernel_version="1.2.1")


def assert_starts_with_ipvsadm(rendered: str, table: Table, *, exact: bool) -> None:
    expected = format_listing(table, stats=True, exact=exact).splitlines()
    lines = rendered.splitlines()[1:]
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(want), (line, want)
        rest = line[len(want):]
        assert rest == "" or rest.startswith("  "), (line, want)


@settings(max_examples=60, deadline=None)
@given(tables(stats=True, forwards=ALL_FORWARDS))
def test_every_table_line_begins_with_what_ipvsadm_ln_stats_prints(table: Table) -> None:
    for exact in (False, True):
        managed_text = render_status(document(managed(table)), now=NOW, exact=exact)
        assert_starts_with_ipvsadm(managed_text, table, exact=exact)
        foreign = Snapshot((), table.services, NOW - 1, True, "test.toml")
        assert_starts_with_ipvsadm(render_status(document(foreign), now=NOW, exact=exact),
                                   table, exact=exact)


@settings(max_examples=60, deadline=None)
@given(tables(stats=True))
def test_keys_and_counters_read_back_from_json_as_they_were(table: Table) -> None:
    for vs in table.services:
        assert key_from_json(json.loads(json.dumps(key_json(vs.key)))) == vs.key
        assert stats_from_json(stats_json(vs.service.stats)) == vs.service.stats


GOLDEN = """\
lvsd {version}, ready, table read 500.0 ms ago, IPVS 1.2.1, TABLE NOT IN SYNC
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port                                                         \
Health        Since    Latency  Weight  Kernel  Admin                       Reason
TCP  192.0.2.10:80                     100     1000      900   100000    90000  \
web, wrr, healthy weight 10, quorum 1
  -> 198.51.100.1:80                    11      110       99    11000     9900  \
up           60.0 s     4.2 ms      10      10  -                           ok: HTTP 200
  -> 198.51.100.2:80                    12      120      108    12000    10800  \
down         60.0 s     4.2 ms      10       0  -                           \
failed: connection refused
  -> 198.51.100.4:80                                                            \
down         60.0 s     4.2 ms      10       -  -                           \
failed: connection refused
  -> 198.51.100.5:80                     0        0        0        0        0  \
unchecked         -          -       0       0  leaving, removed in 20.0 s
TCP  203.0.113.7:443                     7       70       63     7000     6300  \
not managed by lvsd, rr
  -> 198.51.100.99:443                   8       80       72     8000     7200
"""


def golden_snapshot() -> Snapshot:
    leaving = ServerStatus(DestKey(parse_address("198.51.100.5"), 80), "draining", 0,
                           Dest(DestKey(parse_address("198.51.100.5"), 80), 0), "unchecked",
                           drain_deadline=NOW + 20)
    web = service(WEB, "web", [server("198.51.100.1", seed=11),
                               server("198.51.100.2", health="down", kernel_weight=0, seed=12),
                               server("198.51.100.4", health="down", in_kernel=False),
                               leaving])
    lab = lab_snapshot()
    return Snapshot((web,), lab.foreign, lab.taken_at, True, lab.config_source,
                    lab.last_reload, lab.kernel_version)


def test_the_layout_byte_for_byte() -> None:
    import lvsd

    rendered = render_status(document(golden_snapshot()), now=NOW)
    assert rendered == GOLDEN.format(version=lvsd.__version__)


def test_a_server_out_of_the_kernel_has_blank_counters_and_no_kernel_weight() -> None:
    rendered = render_status(document(golden_snapshot()), now=NOW)
    line = next(line for line in rendered.splitlines() if "198.51.100.4:80" in line)
    assert line.startswith("  -> 198.51.100.4:80" + " " * 60 + "down")
    assert re.search(r"\s10\s+-\s", line), line


def test_exact_counters_widen_their_lines_and_lvsds_columns_stay_aligned() -> None:
    big = ServiceStats(conns=123_456_789_012, inpkts=5, outpkts=6, inbytes=7, outbytes=8)
    dest = Dest(DestKey(parse_address("198.51.100.1"), 80), 1,
                stats=DestStats(traffic=big))
    small = Dest(DestKey(parse_address("198.51.100.2"), 80), 1)
    table = Table((VirtualService(Service(WEB, "rr", stats=big), (dest, small)),))
    rendered = render_status(document(managed(table)), now=NOW, exact=True)
    assert "123456789012" in rendered
    assert "     123G" in render_status(document(managed(table)), now=NOW)
    columns = {line.index("up ") for line in rendered.splitlines()[3:]
               if line.startswith("  -> ")}
    assert len(columns) == 1, rendered
    heading = rendered.splitlines()[2]
    assert heading.index("Health") == columns.pop()


def test_states_service_alarms_and_reasons_are_shown() -> None:
    key = ServiceKey.virtual(Protocol.TCP, "192.0.2.20", 443)
    sorry = ServerStatus(DestKey(parse_address("198.51.100.9"), 443), "sorry", 1, None,
                         "unchecked")
    disabled = server("198.51.100.8", 443, disabled=True)
    down = ServiceStatus(key, "tls", None, (sorry, disabled), 2, 0, True, True, False)
    text = render_status(document(Snapshot((down,), (), NOW, True, "x")), now=NOW)
    assert "tls, healthy weight 0, quorum 2, BELOW QUORUM, SORRY SERVER ACTIVE, NOT IN KERNEL" \
        in text
    assert re.search(r"198\.51\.100\.9:443 .* sorry server", text)
    assert re.search(r"198\.51\.100\.8:443 .* disabled in config", text)


def test_the_health_reason_says_why_and_the_last_probe_is_the_fallback() -> None:
    with_reason = ServerStatus(DestKey(parse_address("198.51.100.1"), 80), "real", 1, None,
                               "down", health_reason="3 consecutive failures, last: refused",
                               last_probe=LastProbe(False, "refused", 0.002, NOW - 1))
    text = render_status(document(Snapshot(
        (ServiceStatus(WEB, "web", None, (with_reason,), 1, 0, True, False, False),),
        (), NOW, True, "x")), now=NOW)
    assert text.rstrip().endswith("3 consecutive failures, last: refused")


def test_colour_marks_health_and_alarms_only_and_never_moves_a_column() -> None:
    snapshot = document(golden_snapshot())
    plain = render_status(snapshot, now=NOW)
    coloured = render_status(snapshot, now=NOW, colour=True)
    assert "\x1b[" not in plain
    assert ANSI.sub("", coloured) == plain
    assert "\x1b[32mup\x1b[0m" in coloured and "\x1b[1;31mdown\x1b[0m" in coloured
    assert "\x1b[33mleaving, removed in 20.0 s\x1b[0m" in coloured


@pytest.mark.parametrize(("isatty", "environ", "expected"), [
    (True, {}, True),
    (False, {}, False),  # piped
    (True, {"NO_COLOR": "1"}, False),
    (True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
    (True, {"TERM": "dumb"}, False),
])
def test_colour_only_on_a_terminal_and_never_with_no_color(
        isatty: bool, environ: dict[str, str], expected: bool) -> None:
    assert wants_colour(isatty, environ) is expected


@pytest.mark.parametrize("broken", [
    {"services": [{"name": "web"}]},
    {"services": [{"protocol": "TCP", "family": "ipv4", "address": "nope", "port": 80}]},
    {"services": "web"},
    {"foreign": [{"protocol": "XYZ", "family": "ipv4", "address": None, "port": 0}]},
])
def test_a_document_it_cannot_read_is_a_clear_error(broken: dict[str, Any]) -> None:
    with pytest.raises(StatusDocumentError, match="not a status document this lvsd understands"):
        render_status(broken, now=NOW)


def test_admin_slow_start_and_agent_each_add_a_label_and_the_column_widens() -> None:
    rendered = document(golden_snapshot())
    rs1 = rendered["services"][0]["servers"][0]
    rs1["admin"] = {"state": "drained", "weight": 5, "weight_until": NOW + 540}
    rs1["slow_start"] = {"until": NOW + 10, "share": 0.25}
    rs1["agent"] = {"answering": True, "state": "75%"}
    rendered["services"][0]["servers"][1]["admin"] = {"state": "enabled", "weight": None,
                                                      "weight_until": None}
    lines = render_status(rendered, now=NOW).splitlines()
    label = "drained, weight 5 for 9 min, slow start 25%, agent 75%"
    assert lines[4].endswith(f"  {label}  ok: HTTP 200")
    assert lines[2].index("Reason") == lines[4].index("ok: HTTP 200")
    assert lines[5][lines[2].index("Admin"):].startswith("-" + " " * len(label))
