"""Announcement of healthy VIPs for ECMP (issue 12 item 4), on the real kernel.

One lab for the module: the pair lab in ECMP mode, BIRD 2 with the shipped configs on the
router (BGP multipath, BFD) and on both directors (kernel ``learn`` of lvsd's table, BGP, BFD).
lvsd on d1 announces the VIP while its service meets quorum; its real servers carry a file
check (the file present: the server is out), so a test takes d1's quorum away by creating one
file. d2 announces through the same table with a route put there by hand: BIRD learns it
exactly as it learns lvsd's, and a second lvsd would double the slowest part of the module
(a daemon's start takes 20-45 s under emulation) for nothing d1 does not already prove.

Times come from the route events themselves (``ip -timestamp monitor route`` on the router and
on d1), never from the test's polling: the bound in the issue (1 s) is asserted as it stands.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.birdlab import (
    BOTH,
    Bird,
    RouteMonitor,
    birds_report,
    route_next_hops,
    start_bird,
    wait_next_hops,
)
from tests.integration.daemon_support import LVSD, LvsdProcess
from tests.integration.pairlab import D1, D2, REAL_SERVERS, VIP, PairLab, pair_lab

pytestmark = pytest.mark.asyncio(loop_scope="module")

BOUND = 1.0  # seconds, the issue's
HOLD_DOWN = 2.0
TABLE = "250"


def director_config(down_file: Path) -> str:
    servers = "".join(f'[[services.real_servers]]\naddress = "{rs}"\n' for rs in REAL_SERVERS)
    return f"""resync_interval = 1
reconcile_delay = 0

[announce]
hold_down = "{HOLD_DOWN:g}s"

[[services]]
name = "web"
address = "{VIP}"
port = 80
scheduler = "rr"
quorum = 3
check = {{ type = "file", path = "{down_file}", interval = "100ms" }}
{servers}"""


@dataclass
class AnnounceLab:
    lab: PairLab
    lvsd: LvsdProcess  # on d1
    birds: dict[str, Bird]
    router_routes: RouteMonitor
    d1_routes: RouteMonitor
    exabgp: subprocess.Popen[bytes]
    exabgp_out: Path

    def quorum(self, held: bool) -> None:
        """Give d1's service its quorum, or take it away."""
        path = self.lab.dir / "d1.down"
        if held:
            path.unlink(missing_ok=True)
        else:
            path.touch()

    def diagnose(self) -> str:
        status = self.lvsd.http("/status") or "no /status"
        announce = status[status.find('"announce"'):][:600]
        return (f"{birds_report(self.lab, self.birds)}\nlvsd on d1: {announce}\n"
                f"{self.lvsd.log_tail(15)}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[AnnounceLab]:
    with pair_lab(mode="ecmp", static_ecmp=False) as pair:
        monitors = [RouteMonitor(pair.router, pair.dir / "router-routes.txt").start(),
                    RouteMonitor(pair.d1.ns, pair.dir / "d1-routes.txt").start()]
        daemon = LvsdProcess(pair.d1.ns, director_config(pair.dir / "d1.down"))
        pair.d2.ns.run("ip", "route", "add", f"{VIP}/32", "dev", "lo", "table", TABLE,
                       "proto", "250")
        out = pair.dir / "exabgp.txt"
        with out.open("wb") as stdout:
            exabgp = subprocess.Popen(
                ["ip", "netns", "exec", pair.d1.ns, LVSD, "announce", "exabgp", "--table",
                 TABLE, "--protocol", "250"],
                stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.STDOUT)
        birds = start_bird(pair)
        try:
            await daemon.start(timeout=300)
            announce = AnnounceLab(pair, daemon, birds, *monitors, exabgp, out)
            try:
                await wait_next_hops(pair.router, BOTH, 30, "after lvsd started on d1")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{announce.diagnose()}") from None
            yield announce
        finally:
            daemon.cleanup()
            if exabgp.poll() is None:
                exabgp.kill()
            exabgp.wait(10)
            for bird in birds.values():
                bird.stop()
            for monitor in monitors:
                monitor.stop()


async def test_quorum_lost_on_one_director_takes_its_next_hop_out_within_1_s(
        lab: AnnounceLab) -> None:
    lost_at = time.time()
    lab.quorum(held=False)
    await wait_next_hops(lab.lab.router, frozenset({D2}), 10, lab.diagnose())
    left = lab.router_routes.left_at(D1, lost_at)
    assert left is not None
    withdrawn = next(e.at for e in lab.d1_routes.events(table=TABLE)
                     if e.deleted and e.at >= lost_at)
    print(f"quorum lost -> d1 withdraws {withdrawn - lost_at:.3f} s -> the router drops d1 "
          f"{left - withdrawn:.3f} s; total {left - lost_at:.3f} s")
    assert left - lost_at <= BOUND
    d1 = lab.lvsd
    status = d1.status()["announce"]
    assert status["vips"][0]["announced"] is False
    assert f'lvsd_vip_announced{{vip="{VIP}"}} 0' in (d1.http("/metrics") or "")
    assert any(e.get("vip") == VIP and e.get("announced") is False
               for e in d1.events("announcement_change"))

    back_from = time.time()
    lab.quorum(held=True)
    await wait_next_hops(lab.lab.router, BOTH, 15, "after d1's quorum came back")
    joined = [at for at, now in lab.router_routes.next_hop_changes(D1, back_from) if now]
    assert joined and joined[0] - back_from >= HOLD_DOWN, "announced again after the hold-down"


async def test_a_route_deleted_behind_lvsd_s_back_is_put_back_and_a_foreign_one_left(
        lab: AnnounceLab) -> None:
    d1 = lab.lab.d1.ns
    d1.run("ip", "route", "add", "198.51.100.99/32", "dev", "lo", "table", TABLE, "proto",
           "static")
    d1.run("ip", "route", "del", f"{VIP}/32", "table", TABLE)
    deadline = time.monotonic() + 15
    while f"{VIP} " not in d1.run("ip", "route", "show", "table", TABLE).stdout:
        assert time.monotonic() < deadline, "lvsd did not put its route back"
        await asyncio.sleep(0.1)
    assert "198.51.100.99 " in d1.run("ip", "route", "show", "table", TABLE).stdout
    d1.run("ip", "route", "del", "198.51.100.99/32", "table", TABLE)
    await wait_next_hops(lab.lab.router, BOTH, 15, "after the repair")


async def test_a_quorum_flapping_at_2_hz_changes_the_announcement_at_most_once_per_hold_down(
        lab: AnnounceLab) -> None:
    started = time.time()
    flaps = 0
    while time.time() - started < 2 * HOLD_DOWN:  # 4 s of flapping, bounded
        lab.quorum(held=flaps % 2 == 1)
        flaps += 1
        await asyncio.sleep(0.25)
    ended = time.time()
    lab.quorum(held=True)
    changes = [(at, present) for at, present in
               ((e.at, not e.deleted) for e in lab.d1_routes.events(table=TABLE))
               if started <= at <= ended]
    router = [c for c in lab.router_routes.next_hop_changes(D1, started) if c[0] <= ended]
    print(f"{flaps} flips in {ended - started:.1f} s: d1's table changed {changes}, "
          f"the router's next hops {router}")
    assert changes and not changes[0][1], "the first loss withdraws at once"
    for at, _ in changes:
        assert sum(1 for other, _ in changes if at <= other < at + HOLD_DOWN) == 1, changes
    for at, _ in router:
        assert sum(1 for other, _ in router if at <= other < at + HOLD_DOWN) == 1, router
    await wait_next_hops(lab.lab.router, BOTH, 15, "after the flapping stopped")


async def test_the_exabgp_adapter_printed_what_lvsd_announced_and_withdrew(
        lab: AnnounceLab) -> None:
    lines = lab.exabgp_out.read_text().splitlines()
    announce = f"announce route {VIP}/32 next-hop self"
    withdraw = f"withdraw route {VIP}/32 next-hop self"
    assert lines[:1] == [announce], lines
    assert lines.count(withdraw) >= 3, lines  # the quorum loss, the repair, the flapping
    assert lines[-1] == announce, lines
    assert all(line in (announce, withdraw) for line in lines), lines
    assert lab.exabgp.stdin is not None
    lab.exabgp.stdin.close()  # ExaBGP went away
    assert lab.exabgp.wait(20) == 0


async def test_a_director_that_dies_silently_leaves_within_1_s_through_bfd(
        lab: AnnounceLab) -> None:
    sessions = lab.birds["router"].show("show", "bfd", "sessions", ns=lab.lab.router)
    assert any(D2 in line and " Up " in line for line in sessions.splitlines()), sessions
    died_at = time.time()
    lab.lab.die_silently(lab.lab.d2)
    try:
        await wait_next_hops(lab.lab.router, frozenset({D1}), 10, lab.diagnose())
        left = lab.router_routes.left_at(D2, died_at)
        assert left is not None
        print(f"d2 died silently: the router dropped it {left - died_at:.3f} s later")
        assert left - died_at <= BOUND
    finally:
        lab.lab.revive(lab.lab.d2)


async def test_lvsd_stopped_takes_its_next_hop_out_within_1_s(lab: AnnounceLab) -> None:
    assert D1 in route_next_hops(lab.lab.router)  # d2 may still be coming back: not needed
    d1 = lab.lvsd
    stopped_at = time.time()
    d1.send(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while D1 in route_next_hops(lab.lab.router):
        assert time.monotonic() < deadline, lab.diagnose()
        await asyncio.sleep(0.05)
    left = lab.router_routes.left_at(D1, stopped_at)
    assert left is not None
    print(f"lvsd on d1 stopped: the router dropped it {left - stopped_at:.3f} s later")
    assert left - stopped_at <= BOUND
    assert d1.process is not None
    assert await asyncio.to_thread(d1.process.wait, 30) == 0
    assert f"{VIP} " not in lab.lab.d1.ns.run("ip", "route", "show", "table", TABLE).stdout
