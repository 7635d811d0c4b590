"""Announcement of healthy VIPs: the pure decision as a table, the owner over in-memory routes,
and the daemon's wiring. The kernel side (routes, BIRD, a router's ECMP route) is proven in
tests/integration/test_announce_kernel.py."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from lvsd.announce import (
    AnnouncementChange,
    Announcer,
    VipHealth,
    VipMemory,
    decide,
    route_changes,
    vip_health,
)
from lvsd.api import render_page, status_document
from lvsd.checks.manual import ManualRunner
from lvsd.config import load, loads
from lvsd.daemon import Daemon
from lvsd.errors import ConfigError
from lvsd.health import Status
from lvsd.ipvs.fake import FakeIpvs
from lvsd.metrics import DaemonMetrics
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.routes import MemoryRoutes, Routes, host_prefix
from lvsd.spec import AnnouncedVip, AnnounceSettings, ServerSpec, ServiceSpec

VIP = parse_address("198.51.100.10")
VIP6 = parse_address("2001:db8::10")
ROUTE = host_prefix(VIP)
HOLD = 5.0


def health(quorum: bool = True, probed: bool = True, settle: float = 0.0) -> VipHealth:
    return VipHealth(VIP, "all", quorum, probed, settle)


# --- the decision, as a table --------------------------------------------------------------

NEVER = VipMemory()
UP = VipMemory(True, quorum_since=0.0)
WITHDRAWN = VipMemory(False, None, withdrawn_at=10.0)
HOLDING = VipMemory(False, quorum_since=11.0, withdrawn_at=10.0)

DECISIONS = [
    # memory, quorum, probed, settle, now -> announced, changed, recheck_at
    ("fresh, quorum, first round done, no rise to wait", NEVER, True, True, 0.0, 1.0,
     True, True, None),
    ("fresh, quorum, first round not done", NEVER, True, False, 0.0, 1.0, False, False, None),
    ("fresh, below quorum", NEVER, False, True, 0.0, 1.0, False, False, None),
    ("fresh, quorum, waiting for the rise", NEVER, True, True, 2.0, 1.0, False, False, 3.0),
    ("announced, quorum", UP, True, True, 2.0, 50.0, True, False, None),
    ("announced, below quorum: withdrawn at once", UP, False, True, 0.0, 50.0,
     False, True, None),
    ("announced, below quorum, not even probed: withdrawn at once", UP, False, False, 0.0, 50.0,
     False, True, None),
    ("kept at start, first round not done", VipMemory(True), True, False, 0.0, 1.0,
     True, False, None),
    ("withdrawn, quorum back: the hold-down starts", WITHDRAWN, True, True, 0.0, 11.0,
     False, False, 11.0 + HOLD),
    ("withdrawn, quorum held less than the hold-down", HOLDING, True, True, 0.0, 15.9,
     False, False, 11.0 + HOLD),
    ("withdrawn, quorum held for the hold-down", HOLDING, True, True, 0.0, 16.0,
     True, True, None),
    ("withdrawn, a rise longer than the hold-down", HOLDING, True, True, 8.0, 16.0,
     False, False, 19.0),
    ("withdrawn, quorum lost again: the hold-down restarts later", HOLDING, False, True, 0.0,
     15.0, False, False, None),
]


@pytest.mark.parametrize(
    ("memory", "quorum", "probed", "settle", "now", "announced", "changed", "recheck_at"),
    [row[1:] for row in DECISIONS], ids=[row[0] for row in DECISIONS])
def test_the_decision_table(memory: VipMemory, quorum: bool, probed: bool, settle: float,
                            now: float, announced: bool, changed: bool,
                            recheck_at: float | None) -> None:
    decision = decide(memory, health(quorum, probed, settle), now, HOLD)
    assert (decision.memory.announced, decision.changed, decision.recheck_at) == (
        announced, changed, recheck_at)
    assert decision.memory.reason


def flap(period: float, seconds: float, hold_down: float, settle: float = 0.0,
         step: float = 0.05) -> list[tuple[float, bool]]:
    """The announcement changes of a VIP whose quorum toggles every ``period`` / 2 s for
    ``seconds``, then holds; evaluated every ``step`` s (and at each flip)."""
    memory, changes = VipMemory(True, quorum_since=-100.0), []
    now = 0.0
    while now < seconds + hold_down + settle + 1:
        quorum = now >= seconds or int(now / (period / 2)) % 2 == 1
        decision = decide(memory, health(quorum, True, settle), now, hold_down)
        memory = decision.memory
        if decision.changed:
            changes.append((now, memory.announced))
        now = round(now + step, 6)
    return changes


@pytest.mark.parametrize("hold_down", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("period", [0.1, 0.5, 1.0, 3.0])
def test_a_flapping_quorum_changes_the_announcement_at_most_once_per_hold_down(
        hold_down: float, period: float) -> None:
    seconds = 10.0
    changes = flap(period, seconds, hold_down)
    flapping = [at for at, _ in changes if at < seconds]
    for at in flapping:
        assert sum(1 for other in flapping if at <= other < at + hold_down) == 1, changes
    assert len(flapping) <= math.ceil(seconds / hold_down)
    assert changes[0] == (0.0, False), "the first loss of quorum withdraws at once"
    assert changes[-1][1] is True, "once steady, the VIP is announced again"
    for (before, _), (after, announced) in itertools.pairwise(changes):
        if announced:
            assert after - before >= hold_down - 1e-9, "a re-announce waits out the hold-down"


def test_a_2_hz_flap_is_withdrawn_once_and_stays_withdrawn() -> None:
    changes = flap(0.5, 10.0, 2.0)
    assert [announced for at, announced in changes if at < 10.0] == [False]


# --- the inputs ----------------------------------------------------------------------------

CONFIG = """
[daemon]
state_dir = "{state}"
reconcile_delay = 0

[announce]
hold_down = "2s"
vips = [{{ address = "198.51.100.10" }}, {{ address = "198.51.100.20", rule = "any" }}]

[[services]]
name = "web"
address = "198.51.100.10"
port = 80
check = {{ type = "http", rise = 3, interval = "1s" }}
[[services.real_servers]]
address = "192.0.2.21"
[[services.real_servers]]
address = "192.0.2.22"

[[services]]
name = "dns"
address = "198.51.100.10"
protocol = "udp"
port = 53
quorum = 2
[[services.real_servers]]
address = "192.0.2.21"
check = {{ type = "tcp", connect_port = 53, rise = 2, interval = "4s" }}
[[services.real_servers]]
address = "192.0.2.22"
check = {{ type = "tcp", connect_port = 53, rise = 2, interval = "4s" }}

[[services]]
name = "a"
address = "198.51.100.20"
port = 80
quorum = 2
[[services.real_servers]]
address = "192.0.2.21"
check = {{ type = "tcp" }}
[[services.real_servers]]
address = "192.0.2.22"
check = {{ type = "tcp" }}

[[services]]
name = "b"
address = "198.51.100.20"
port = 443
[[services.real_servers]]
address = "192.0.2.21"
"""


def test_the_rule_all_needs_every_service_at_quorum_any_needs_one(tmp_path: Path) -> None:
    config = loads(CONFIG.format(state=tmp_path))
    assert config.announce is not None
    down = {parse_address("192.0.2.22")}

    def one_down(spec: ServiceSpec, server: ServerSpec) -> Status:
        return Status.DOWN if server.key.address in down else Status.UP

    found = {h.vip: h for h in vip_health(config.announce, config.services, one_down,
                                          lambda spec, server: True)}
    web = found[VIP]
    assert (web.rule, web.quorum) == ("all", False), "dns has quorum 2, one server is down"
    assert web.settle == 4.0, "the slowest rise: (2 - 1) * 4 s"
    other = found[parse_address("198.51.100.20")]
    assert (other.rule, other.quorum) == ("any", True), "b has no check, so it meets quorum"
    assert other.probed
    no_first_round = vip_health(config.announce, config.services, one_down,
                                lambda spec, server: server.key.address not in down)
    assert not no_first_round[0].probed


def test_without_a_list_every_vip_of_the_services_is_announced_with_the_default_rule(
        tmp_path: Path) -> None:
    text = CONFIG.format(state=tmp_path).replace(
        'vips = [{ address = "198.51.100.10" }, { address = "198.51.100.20", rule = "any" }]',
        'rule = "any"')
    config = loads(text)
    assert config.announce is not None
    assert config.announce.vips == (AnnouncedVip(VIP, "any"),
                                    AnnouncedVip(parse_address("198.51.100.20"), "any"))
    assert (config.announce.table, config.announce.protocol, config.announce.hold_down,
            config.announce.withdraw_on_stop) == (250, 250, 2.0, True)


def test_route_changes_are_the_difference_in_a_stable_order() -> None:
    a, b, c = (host_prefix(parse_address(x)) for x in ("192.0.2.1", "192.0.2.2", "2001:db8::1"))
    assert route_changes([c, a], [b, a]) == ([c], [b])
    assert route_changes([c, b, a], []) == ([a, b, c], [])
    assert route_changes([], []) == ([], [])


# --- the config ----------------------------------------------------------------------------

BASE = """
[[services]]
address = "198.51.100.10"
port = 80
[[services.real_servers]]
address = "192.0.2.21"
"""


@pytest.mark.parametrize(("section", "where", "words"), [
    ("table = 254", "announce.table", "'main' table"),
    ("table = 0", "announce.table", "1..4294967295"),
    ("table = 4294967296", "announce.table", "1..4294967295"),
    ('table = "250"', "announce.table", "an integer"),
    ("protocol = 12", "announce.protocol", "bird's"),
    ("protocol = 2", "announce.protocol", "kernel's"),
    ("protocol = 256", "announce.protocol", "1..255"),
    ('hold_down = "soon"', "announce.hold_down", "not a duration"),
    ("hold_down = -1", "announce.hold_down", "at least 0"),
    ("hold_down = 7200", "announce.hold_down", "at most 3600"),
    ("withdraw_on_stop = 1", "announce.withdraw_on_stop", "true or false"),
    ('rule = "most"', "announce.rule", "'all' or 'any'"),
    ("vips = []", "announce.vips", "empty"),
    ('vips = ["198.51.100.10"]', "announce.vips[0]", "expected a table"),
    ('vips = [{ address = "198.51.100.99" }]', "announce.vips[0].address",
     "not the address of any service"),
    ('vips = [{ address = "nowhere" }]', "announce.vips[0].address", "not an IP address"),
    ('vips = [{ address = "198.51.100.10", rule = "some" }]', "announce.vips[0].rule",
     "'all' or 'any'"),
    ('vips = [{ address = "198.51.100.10" }, { address = "198.51.100.10" }]',
     "announce.vips[1].address", "also announce.vips[0]"),
    ('vips = [{ addr = "198.51.100.10" }]', "announce.vips[0]", "unknown key 'addr'"),
    ("tabel = 250", "announce", "did you mean 'table'"),
])
def test_a_broken_announce_section_names_the_place(section: str, where: str,
                                                    words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        loads(f"[announce]\n{section}\n{BASE}")
    assert any(p.where == where and words in p.message for p in raised.value.problems), \
        raised.value.problems


def test_the_vips_are_examined_when_another_key_is_wrong() -> None:
    with pytest.raises(ConfigError) as raised:
        loads(f'[announce]\ntable = 255\nvips = [{{ address = "x" }}]\n{BASE}')
    assert {p.where for p in raised.value.problems} == {"announce.table",
                                                         "announce.vips[0].address"}


def test_announce_is_a_table() -> None:
    with pytest.raises(ConfigError) as raised:
        loads(f"announce = 3\n{BASE}")
    assert [p.where for p in raised.value.problems] == ["announce"]


def test_a_zero_hold_down_is_legal_but_warned_about() -> None:
    config = loads(f"[announce]\nhold_down = 0\n{BASE}")
    assert [w.where for w in config.warnings] == ["announce.hold_down"]


def test_without_the_section_nothing_is_announced() -> None:
    assert loads(BASE).announce is None


# --- the owner, over routes in memory ------------------------------------------------------

SETTINGS = AnnounceSettings(250, 250, 2.0, True, (AnnouncedVip(VIP), AnnouncedVip(VIP6)))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Inputs:
    def __init__(self) -> None:
        self.quorum = {VIP: True, VIP6: True}
        self.probed = True

    def __call__(self) -> list[VipHealth]:
        return [VipHealth(vip, "all", met, self.probed, 0.0) for vip, met in self.quorum.items()]


def announcer(routes: MemoryRoutes | None = None, settings: AnnounceSettings = SETTINGS
              ) -> tuple[Announcer, MemoryRoutes, Inputs, Clock, list[AnnouncementChange]]:
    routes = routes or MemoryRoutes()
    inputs, clock = Inputs(), Clock()
    owner = Announcer(settings, routes, inputs, resync_interval=30.0, clock=clock)
    changes: list[AnnouncementChange] = []
    owner.listeners.append(changes.append)
    return owner, routes, inputs, clock, changes


def in_table(routes: MemoryRoutes, table: int = 250) -> set[str]:
    return {str(prefix) for (tab, prefix), _ in routes.routes.items() if tab == table}


def test_the_memory_routes_are_routes() -> None:
    routes: Routes = MemoryRoutes()
    assert routes is not None


async def test_healthy_vips_get_a_host_route_and_a_change_each() -> None:
    owner, routes, _, _, changes = announcer()
    await owner.start()
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}
    assert routes.routes[(250, ROUTE)] == 250, "tagged with lvsd's protocol"
    assert [(c.vip, c.announced) for c in changes] == [(VIP, True), (VIP6, True)]
    assert all(vip.in_kernel and vip.announced for vip in owner.status().vips)


async def test_no_announcement_before_the_first_round_of_checks() -> None:
    owner, routes, inputs, _, changes = announcer()
    inputs.probed = False
    await owner.start()
    assert in_table(routes) == set() and changes == []
    assert owner.status().vips[0].reason == "waiting for the first round of checks"
    inputs.probed = True
    await owner.sync()
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}


async def test_below_quorum_the_route_goes_at_once_and_comes_back_after_the_hold_down() -> None:
    owner, routes, inputs, clock, changes = announcer()
    await owner.start()
    inputs.quorum[VIP] = False
    await owner.sync()
    assert in_table(routes) == {"2001:db8::10/128"}
    assert (changes[-1].vip, changes[-1].announced) == (VIP, False)
    inputs.quorum[VIP] = True
    clock.now += 0.5
    await owner.sync()
    assert in_table(routes) == {"2001:db8::10/128"}, "within the hold-down"
    clock.now += 2.0
    await owner.sync()
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}


async def test_a_route_deleted_behind_its_back_is_repaired_and_a_foreign_one_left_alone(
        ) -> None:
    routes = MemoryRoutes()
    foreign = host_prefix(parse_address("198.51.100.99"))
    routes.routes[(250, foreign)] = 4  # "static", someone else's
    routes.routes[(251, ROUTE)] = 250  # another table
    owner, routes, _, _, changes = announcer(routes)
    await owner.start()
    del routes.routes[(250, ROUTE)]
    await owner.sync()
    assert routes.routes[(250, ROUTE)] == 250
    assert routes.routes[(250, foreign)] == 4 and routes.routes[(251, ROUTE)] == 250
    assert len(changes) == 2, "a repair is no change of the announcement"
    await owner.stop()
    assert in_table(routes) == {"198.51.100.99/32"}, "only lvsd's own routes are withdrawn"
    assert routes.routes[(251, ROUTE)] == 250


async def test_a_stray_route_of_its_own_protocol_is_deleted() -> None:
    routes = MemoryRoutes()
    stray = host_prefix(parse_address("198.51.100.77"))
    routes.routes[(250, stray)] = 250  # an old config's VIP
    owner, routes, _, _, _ = announcer(routes)
    await owner.start()
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}


async def test_a_restart_keeps_the_routes_it_finds_until_the_first_round() -> None:
    routes = MemoryRoutes()
    routes.routes[(250, ROUTE)] = 250
    owner, routes, inputs, _, changes = announcer(routes)
    inputs.probed = False
    await owner.start()
    assert in_table(routes) == {"198.51.100.10/32"} and changes == []
    inputs.quorum[VIP] = False
    await owner.sync()
    assert in_table(routes) == set(), "below quorum is a withdraw even before the first round"


async def test_stop_withdraws_unless_told_to_fail_static() -> None:
    owner, routes, _, _, changes = announcer()
    await owner.start()
    await owner.stop()
    assert in_table(routes) == set() and routes.closed
    assert [c.announced for c in changes[-2:]] == [False, False]
    kept, routes, _, _, _ = announcer(settings=AnnounceSettings(
        250, 250, 2.0, False, SETTINGS.vips))
    await kept.start()
    await kept.stop()
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}


async def test_a_refused_route_is_retried_and_said() -> None:
    owner, routes, _, _, _ = announcer()
    routes.refuse = errno.EPERM
    await owner.start()
    assert owner.status().last_error is not None and "EPERM" in owner.status().last_error
    routes.refuse = None
    await owner.sync()
    assert owner.status().last_error is None
    assert in_table(routes) == {"198.51.100.10/32", "2001:db8::10/128"}


async def test_a_reload_moving_the_table_empties_the_old_one() -> None:
    owner, routes, _, _, changes = announcer()
    await owner.start()
    moved = AnnounceSettings(251, 250, 2.0, True, (AnnouncedVip(VIP),))
    await owner.reconfigure(moved)
    assert in_table(routes, 250) == set()
    assert in_table(routes, 251) == {"198.51.100.10/32"}
    assert [(c.vip, c.announced) for c in changes[2:]] == [(VIP, False), (VIP6, False),
                                                          (VIP, True)]


async def test_a_reload_dropping_a_vip_withdraws_it_and_keeps_the_other() -> None:
    owner, routes, _, _, changes = announcer()
    await owner.start()
    await owner.reconfigure(AnnounceSettings(250, 250, 2.0, True, (AnnouncedVip(VIP),)))
    assert in_table(routes) == {"198.51.100.10/32"}
    assert [(c.vip, c.announced) for c in changes[2:]] == [(VIP6, False)]


# --- the daemon ----------------------------------------------------------------------------

WEB = ServiceKey.virtual(Protocol.TCP, VIP, 80)
RS1 = DestKey(parse_address("192.0.2.21"), 80)
RS2 = DestKey(parse_address("192.0.2.22"), 80)

DAEMON_CONFIG = """
[daemon]
state_dir = "{state}"
reconcile_delay = 0

[announce]
hold_down = 0
withdraw_on_stop = {withdraw}

[[services]]
name = "web"
address = "198.51.100.10"
port = 80
quorum = 2
check = {{ type = "http", rise = 1, fall = 1 }}
[[services.real_servers]]
address = "192.0.2.21"
[[services.real_servers]]
address = "192.0.2.22"
"""


async def daemon_with(tmp_path: Path, withdraw: str = "true"
                      ) -> tuple[Daemon, MemoryRoutes, list[AnnouncementChange]]:
    path = tmp_path / "lvsd.toml"
    path.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", withdraw=withdraw))
    routes = MemoryRoutes()
    daemon = Daemon(load(path), FakeIpvs(), config_path=path, runner=ManualRunner,
                    routes=routes)
    changes: list[AnnouncementChange] = []
    daemon.announcement.listeners.append(changes.append)
    await daemon.start()
    return daemon, routes, changes


def feed(daemon: Daemon, servers: Sequence[DestKey], ok: bool) -> None:
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    for server in servers:
        runner.report(daemon.health.checks_of((WEB, server))[0], ok)


async def test_the_daemon_announces_after_the_first_round_and_withdraws_below_quorum(
        tmp_path: Path) -> None:
    daemon, routes, changes = await daemon_with(tmp_path)
    assert daemon.announcement.announcer is not None
    feed(daemon, [RS1], ok=True)
    await daemon.announcement.announcer.sync()
    assert in_table(routes) == set(), "one server has not reported yet"
    feed(daemon, [RS2], ok=True)
    await daemon.announcement.announcer.sync()
    assert in_table(routes) == {"198.51.100.10/32"}
    feed(daemon, [RS2], ok=False)
    await daemon.announcement.announcer.sync()
    assert in_table(routes) == set()
    assert [c.announced for c in changes] == [True, False]
    snapshot = daemon.status.snapshot()
    assert snapshot.announce is not None
    assert [(v.vip, v.announced) for v in snapshot.announce.vips] == [(VIP, False)]
    body = DaemonMetrics().exposition(snapshot).decode()
    assert 'lvsd_vip_announced{vip="198.51.100.10"} 0' in body
    document = status_document(snapshot, now=0.0)["announce"]
    assert (document["table"], document["protocol"]) == (250, 250)
    assert document["vips"] == [{"vip": "198.51.100.10", "rule": "all", "announced": False,
                                 "in_kernel": False, "reason": "withdrawn: below quorum",
                                 "since": document["vips"][0]["since"]}]
    assert "withdrawn</span> withdrawn: below quorum" in render_page(snapshot, now=0.0)
    feed(daemon, [RS2], ok=True)
    await daemon.announcement.announcer.sync()
    body = DaemonMetrics().exposition(daemon.status.snapshot()).decode()
    assert 'lvsd_vip_announced{vip="198.51.100.10"} 1' in body
    await daemon.stop()
    assert in_table(routes) == set()


async def test_a_health_change_pokes_the_announcer_without_a_reconcile_pass(
        tmp_path: Path) -> None:
    daemon, routes, _ = await daemon_with(tmp_path)
    assert daemon.announcement.announcer is not None
    feed(daemon, [RS1, RS2], ok=True)
    await daemon.announcement.announcer.sync()
    feed(daemon, [RS1], ok=False)  # no reconcile pass, no sync: the announcer's own loop
    for _ in range(100):
        if not in_table(routes):
            break
        await asyncio.sleep(0.01)
    assert in_table(routes) == set()
    await daemon.stop()


async def test_each_change_is_an_event_in_the_stream(tmp_path: Path) -> None:
    daemon, _, _ = await daemon_with(tmp_path)
    assert daemon.announcement.announcer is not None
    with daemon.events.subscribe() as stream:
        feed(daemon, [RS1, RS2], ok=True)
        await daemon.announcement.announcer.sync()
        feed(daemon, [RS1], ok=False)
        await daemon.announcement.announcer.sync()
        lines = [json.loads(line) for line in stream.take()]
    announcements = [(e["vip"], e["announced"]) for e in lines if e["type"] == "announcement"]
    assert announcements == [("198.51.100.10", True), ("198.51.100.10", False)]
    await daemon.stop()


async def test_the_daemon_stops_fail_static_when_told(tmp_path: Path) -> None:
    daemon, routes, _ = await daemon_with(tmp_path, withdraw="false")
    feed(daemon, [RS1, RS2], ok=True)
    assert daemon.announcement.announcer is not None
    await daemon.announcement.announcer.sync()
    await daemon.stop()
    assert in_table(routes) == {"198.51.100.10/32"}


async def test_a_reload_without_the_section_withdraws_everything(tmp_path: Path) -> None:
    daemon, routes, _ = await daemon_with(tmp_path)
    feed(daemon, [RS1, RS2], ok=True)
    assert daemon.announcement.announcer is not None
    await daemon.announcement.announcer.sync()
    assert daemon.reloads.config_path is not None
    text = daemon.reloads.config_path.read_text()
    daemon.reloads.config_path.write_text(text.replace("[announce]\nhold_down = 0\n"
                                               "withdraw_on_stop = true\n", ""))
    assert await daemon.reload()
    assert daemon.announcement.announcer is None and in_table(routes) == set()
    assert daemon.status.snapshot().announce is None
    await daemon.stop()


def test_prefixes_are_host_routes() -> None:
    assert host_prefix(VIP) == ipaddress.ip_network("198.51.100.10/32")
    assert host_prefix(VIP6) == ipaddress.ip_network("2001:db8::10/128")
