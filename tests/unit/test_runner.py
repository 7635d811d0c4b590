"""The probe scheduler, on a fake clock: spread, jitter, retry interval, dedup, updates,
timeouts and the bound on probes in flight."""

from __future__ import annotations

import asyncio
import gc
import heapq
import ipaddress
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from lvsd.checks import CheckKey, HttpCheck, ProbeResult, ProbeTarget, check_key
from lvsd.checks import runner as runner_module
from lvsd.checks.base import CheckSpec, Prober, set_stage
from lvsd.checks.runner import (
    ProbeReport,
    ProbeRunner,
    next_schedule,
    stable_hash,
    startup_offsets,
)

START = 1000.0
BIN = 0.010


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return self.when < other.when


class FakeClock:
    """Time that moves only when the test says so; timers fire in order as it moves."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = 0
        self.scheduled = 0  # timers asked for, ever

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.scheduled += 1
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        timer = self.call_at(self.now + seconds, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            timer.cancel()

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            for _ in range(3):  # let the tasks the last timer woke run at this instant
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            if not self._timers or self._timers[0][0] > end:
                break
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            timer.callback(*timer.args)
        self.now = end


@dataclass
class World:
    clock: FakeClock
    starts: list[tuple[float, ProbeTarget]] = field(default_factory=list)
    failing: set[int] = field(default_factory=set)  # ports whose probes fail
    concurrent: int = 0
    max_concurrent: int = 0


class FakeCheck(CheckSpec):
    """A check whose probe takes ``duration`` seconds of fake time."""

    world: ClassVar[World]
    type: Literal["fake"] = "fake"
    duration: float = 0.0
    broken: bool = False
    fail_reason: str = "refused"

    def prober(self) -> Prober:
        if self.broken:
            raise OSError("cannot read /etc/ssl/missing.pem")
        return FakeProber(self, FakeCheck.world)


class FakeProber(Prober):
    def __init__(self, spec: FakeCheck, world: World) -> None:
        self.spec = spec
        self.world = world

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        world = self.world
        world.starts.append((world.clock.time(), target))
        world.concurrent += 1
        world.max_concurrent = max(world.max_concurrent, world.concurrent)
        try:
            if self.spec.duration:
                set_stage("response")
                await world.clock.sleep(self.spec.duration)
            if target.port in world.failing:
                return ProbeResult(False, self.spec.fail_reason)
            return ProbeResult(True, "ok")
        finally:
            world.concurrent -= 1


@pytest.fixture
def world() -> Iterator[World]:
    FakeCheck.world = World(FakeClock())
    yield FakeCheck.world


def keys(count: int, spec: CheckSpec | None = None, first_port: int = 1) -> list[CheckKey]:
    spec = spec or FakeCheck()
    return [check_key(ProbeTarget(ipaddress.ip_address("127.0.0.1"), port), spec)
            for port in range(first_port, first_port + count)]


def make_runner(world: World, reports: list[ProbeReport], **options: Any) -> ProbeRunner:
    return ProbeRunner(reports.extend, clock=world.clock, rng=random.Random(7), **options)


def peak_over_mean(times: list[float], start: float, end: float) -> float:
    bins = Counter(int((t - start) / BIN) for t in times if start <= t < end)
    mean = len([t for t in times if start <= t < end]) / ((end - start) / BIN)
    return max(bins.values()) / mean


# --- start-up spread, steady state (P3) ----------------------------------------------------

async def test_start_up_spreads_10k_checks_evenly_and_runs_each_within_the_interval(
        world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=10_000)
    runner.update(keys(10_000))
    runner.start()
    await world.clock.advance(2.1)
    first: dict[int, float] = {}
    for t, target in world.starts:
        first.setdefault(target.port, t)
    assert len(first) == 10_000
    assert max(first.values()) <= START + 2.0 + 0.01  # every check within its interval (+1 s)
    assert peak_over_mean(list(first.values()), START, START + 2.0) <= 2.0
    await runner.stop()


async def test_jitter_keeps_each_check_in_its_slot_so_1000_checks_stay_spread(
        world: World) -> None:
    """500 probes/s: jitter drawn over 5% of the interval, independently per probe, made the
    10 ms bins Poisson (peaks near 2.6x the mean over a minute); within the check's own slot
    of the interval they stay near the mean, and each probe still starts at its own random
    point of it."""
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=10_000)
    runner.update(keys(1_000))
    runner.start()
    await world.clock.advance(62.0)
    starts = [t for t, _ in world.starts]
    assert peak_over_mean(starts, START + 2.0, START + 62.0) <= 2.0
    gaps = Counter(round(b - a, 4) for a, b in itertools.pairwise(
        t for t, target in world.starts if target.port == 1))
    # jittered; at most the interval, the slot (2 ms) and one batch (5 ms) apart
    assert len(gaps) > 1 and max(gaps) <= 2.0 + 0.002 + 0.005
    await runner.stop()


async def test_start_up_counts_the_slots_from_the_first_wake_up_not_from_update(
        world: World) -> None:
    """update() of 10,000 checks keeps the loop for a few hundred ms: slots counted from the
    call would all be due by the first wake-up, and start at once."""
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=10_000)
    runner.update(keys(10_000))
    runner.start()
    world.clock.now += 0.4  # the loop was busy: no timer ran meanwhile
    await world.clock.advance(2.5)
    first: dict[int, float] = {}
    for t, target in world.starts:
        first.setdefault(target.port, t)
    assert len(first) == 10_000
    woke = START + 0.4
    assert min(first.values()) >= woke
    assert max(first.values()) <= woke + 2.0 + 0.01
    assert peak_over_mean(list(first.values()), woke, woke + 2.0) <= 2.0
    await runner.stop()


async def test_steady_state_stays_spread(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=10_000)
    runner.update(keys(5_000))
    runner.start()
    await world.clock.advance(6.0)
    starts = [t for t, _ in world.starts]
    assert peak_over_mean(starts, START + 4.0, START + 6.0) <= 2.0
    per_check = Counter(target.port for t, target in world.starts if t >= START + 4.0)
    assert len(per_check) > 4_900 and set(per_check.values()) <= {1, 2}
    await runner.stop()


def test_start_up_order_comes_from_a_stable_hash() -> None:
    batch = keys(100, HttpCheck())
    first = startup_offsets(batch, random.Random(1))
    second = startup_offsets(list(reversed(batch)), random.Random(2))
    order = sorted(batch, key=lambda k: first[k])
    assert order == sorted(batch, key=lambda k: second[k])
    assert order == sorted(batch, key=stable_hash)
    assert all(0 <= offset < 2.0 for offset in first.values())
    # each check in its own slot of interval / n
    slots = sorted(int(offset / (2.0 / 100)) for offset in first.values())
    assert slots == list(range(100))


def test_checks_with_different_intervals_spread_over_their_own() -> None:
    batch = keys(50, HttpCheck(interval=1.0)) + keys(50, HttpCheck(interval=10.0))
    offsets = startup_offsets(batch, random.Random(3))
    assert max(offsets[k] for k in batch[:50]) < 1.0
    assert max(offsets[k] for k in batch[50:]) > 5.0


def test_next_schedule_jitters_early_of_an_anchor_that_does_not_drift() -> None:
    """Never after the anchor: the interval bounds the time between two probes, so a
    failure is seen within interval + timeout (detection's bound has no jitter in it)."""
    anchor = 100.0
    for draw in (0.0, 0.5, 0.999):
        new_anchor, due = next_schedule(anchor, 100.01, 2.0, 0.05, draw)
        assert new_anchor == 102.0
        assert 101.9 < due <= 102.0
    assert next_schedule(anchor, 100.01, 2.0, 0.05, 0.0)[1] == 102.0
    assert next_schedule(anchor, 100.01, 2.0, 0.05, 0.5)[1] == 101.95
    # a probe that ran past the next slot: start again once it finished, not in a burst
    assert next_schedule(anchor, 105.0, 2.0, 0.05, 0.0) == (105.0, 105.0)


# --- retry interval, timeouts, lateness ------------------------------------------------

async def test_failing_check_is_probed_at_the_retry_interval(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, jitter=0.0)
    spec = FakeCheck(interval=4.0, retry_interval=1.0)
    (key,) = keys(1, spec, first_port=80)
    world.failing.add(80)
    runner.update([key])
    runner.start()
    while not reports:
        await world.clock.advance(0.01)
    first = reports[0].started
    await world.clock.advance(3.0)
    gaps = [round(b.started - a.started, 6) for a, b in itertools.pairwise(reports)]
    assert gaps == [1.0, 1.0, 1.0]
    world.failing.clear()
    await world.clock.advance(1.0)  # passes now
    await world.clock.advance(8.0)
    later = [round(r.started - first, 6) for r in reports[4:]]
    assert later == [4.0, 8.0, 12.0]
    await runner.stop()


async def test_probe_running_past_its_timeout_is_cancelled_and_fails(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, jitter=0.0)
    spec = FakeCheck(interval=2.0, timeout=0.5, duration=3.0)
    runner.update(keys(1, spec))
    runner.start()
    while not reports:
        await world.clock.advance(0.01)
    (report,) = reports
    assert (report.result.ok, report.result.reason) == (False, "timeout (response)")
    assert report.finished - report.started == pytest.approx(0.5)
    assert world.concurrent == 0
    await runner.stop()


async def test_in_flight_bound_holds_and_waiting_shows_as_lateness(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=5)
    runner.update(keys(50, FakeCheck(interval=2.0, timeout=1.0, duration=0.5)))
    runner.start()
    await world.clock.advance(2.0)
    assert (runner.in_flight, world.max_concurrent) == (5, 5)
    assert runner.waiting > 0
    await world.clock.advance(4.0)
    assert world.max_concurrent == 5
    assert len({r.key for r in reports}) == 50
    # 25 s of probing due within 2 s through 5 slots: the wait shows as start lateness
    assert min(r.lateness for r in reports) == 0.0
    assert max(r.lateness for r in reports) > 2.0
    await runner.stop()


async def test_a_prober_that_cannot_be_built_fails_every_probe(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    runner.update(keys(1, FakeCheck(broken=True)))
    runner.start()
    await world.clock.advance(2.0)
    assert reports
    assert {(r.result.ok, r.result.reason) for r in reports} == {
        (False, "check setup failed: cannot read /etc/ssl/missing.pem")}
    await runner.stop()


# --- dedup and updates -------------------------------------------------------------------

async def test_one_probe_per_key_however_many_services_share_it(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    spec = FakeCheck()
    rs = ipaddress.ip_address("198.51.100.7")
    shared = [check_key(spec.target(rs, 80, vip=ipaddress.ip_address(f"192.0.2.{i}"), vport=80),
                        spec) for i in range(1, 11)]
    runner.update(shared)
    runner.start()
    await world.clock.advance(2.0)
    assert len(runner) == 1 and len(world.starts) == 1
    await runner.stop()


async def test_update_keeps_the_schedule_of_unchanged_checks(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    kept = keys(100)
    removed = keys(100, first_port=1000)
    runner.update(kept + removed)
    runner.start()
    await world.clock.advance(1.3)
    before = {key: runner.due(key) for key in kept}
    probes_before = Counter(t.port for _, t in world.starts)
    added = keys(100, first_port=5000)
    runner.update(kept + added)
    assert {key: runner.due(key) for key in kept} == before
    assert all(key not in runner for key in removed) and len(runner) == 200
    await world.clock.advance(0.0)  # the runner wakes at once to place the new checks
    started_now = Counter(t.port for _, t in world.starts) - probes_before
    due_by_port = {key.target.port: due for key, due in before.items()}
    assert all(due_by_port[port] is not None
               and due_by_port[port] <= world.clock.now + runner_module.TIMER_TICK
               for port in started_now)  # nothing restarted: only what was due anyway
    await world.clock.advance(2.0)
    late_removed = [t for t, target in world.starts
                    if 1000 <= target.port < 1100 and t > START + 1.3]
    assert late_removed == []
    assert {target.port for t, target in world.starts if t > START + 1.3} >= set(
        range(5000, 5100))
    await runner.stop()


async def test_removing_a_check_cancels_its_running_probe(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    (key,) = keys(1, FakeCheck(duration=0.8, timeout=1.0))
    runner.update([key])
    runner.start()
    while not world.starts:
        await world.clock.advance(0.1)
    assert runner.in_flight == 1
    runner.update([])
    await world.clock.advance(3.0)
    assert (runner.in_flight, reports, world.concurrent) == (0, [], 0)
    await runner.stop()


async def test_stop_then_start_resumes_every_check(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    runner.update(keys(20, FakeCheck(duration=0.5)))
    runner.start()
    await world.clock.advance(1.0)
    await runner.stop()
    assert runner.in_flight == 0
    count = len(world.starts)
    await world.clock.advance(5.0)
    assert len(world.starts) == count
    runner.start()
    await world.clock.advance(2.6)
    assert {t.port for time_, t in world.starts if time_ > START + 6.0} == set(range(1, 21))
    await runner.stop()


# --- batches, and lvsd's own lateness ----------------------------------------------------

async def test_results_come_in_batches_not_one_call_per_probe(world: World) -> None:
    batches: list[int] = []
    runner = ProbeRunner(lambda reports: batches.append(len(reports)), clock=world.clock,
                         rng=random.Random(7), max_in_flight=10_000)
    runner.update(keys(1_000))
    runner.start()
    await world.clock.advance(2.0)
    assert sum(batches) >= 1_000
    assert len(batches) <= 2.0 / 0.005 + 1  # at most one batch per wake-up
    await runner.stop()


async def test_a_timeout_that_started_late_is_inconclusive(world: World) -> None:
    reports: list[ProbeReport] = []
    # one slot, probes of 0.6 s: the later ones wait beyond their late bound (1 s)
    runner = make_runner(world, reports, max_in_flight=1)
    runner.update(keys(5, FakeCheck(interval=2.0, timeout=1.0, duration=0.6,
                                    fail_reason="timeout (connect)")))
    world.failing.update(range(1, 6))
    runner.start()
    await world.clock.advance(4.0)
    assert reports
    for report in reports:
        assert not report.result.ok
        assert report.inconclusive == (report.lateness > 1.0)
    assert any(r.inconclusive for r in reports) and any(not r.inconclusive for r in reports)
    load = runner.load()
    assert load.overloaded and load.late == load.inconclusive > 0
    assert load.max_lateness > 1.0 and load.probes == len(reports)
    assert runner.load().probes == 0  # each call covers the time since the previous one
    await runner.stop()


async def _late_failures(world: World, reason: str) -> tuple[ProbeRunner, list[ProbeReport]]:
    """Five failing checks sharing one slot, probes of 0.6 s: the later ones start beyond
    their late bound (1 s) and fail with ``reason``."""
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=1)
    runner.update(keys(5, FakeCheck(interval=2.0, timeout=1.0, duration=0.6,
                                    fail_reason=reason)))
    world.failing.update(range(1, 6))
    runner.start()
    await world.clock.advance(4.0)
    return runner, reports


@pytest.mark.parametrize("reason", ["refused", "reset", "status 503", "body mismatch"])
async def test_a_failure_the_server_answered_counts_however_late(
        world: World, reason: str) -> None:
    """Half the servers hung and filling every probe slot must not hide the other half's
    refusals: a late start cannot make a server refuse."""
    runner, reports = await _late_failures(world, reason)
    assert max(r.lateness for r in reports) > 1.0
    assert not any(r.inconclusive for r in reports)
    assert runner.load().late > 0  # still said: lvsd runs late
    await runner.stop()


@pytest.mark.parametrize("reason", ["too many open files", "cannot assign requested address",
                                    "check error: RuntimeError: bug"])
async def test_a_late_failure_lvsd_may_have_caused_is_inconclusive(
        world: World, reason: str) -> None:
    runner, reports = await _late_failures(world, reason)
    assert all(r.inconclusive == (r.lateness > 1.0) for r in reports)
    assert any(r.inconclusive for r in reports)
    await runner.stop()


async def test_reading_the_load_does_not_swallow_the_overload_warning(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=1)
    spec = FakeCheck(interval=2.0, timeout=1.0, duration=0.6)
    runner.update(keys(5, spec))
    world.failing.update(range(1, 6))
    runner.start()
    with caplog.at_level("WARNING", logger=runner_module.__name__):
        overloaded = []
        for second in range(11):  # the daemon samples every second, the log window is 10 s
            if second == 4:
                runner.update(keys(1, spec))  # overloaded early in the window only
            await world.clock.advance(1.0)
            overloaded.append(runner.load().overloaded)
    assert any(overloaded[:5]) and not any(overloaded[6:])
    warnings = [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(warnings) == 1 and "started late" in warnings[0]
    await runner.stop()


async def test_a_success_that_started_late_still_counts(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=1)
    runner.update(keys(5, FakeCheck(interval=2.0, timeout=1.0, duration=0.6)))
    runner.start()
    await world.clock.advance(4.0)
    assert max(r.lateness for r in reports) > 1.0
    assert not any(r.inconclusive for r in reports)
    await runner.stop()


async def test_a_timeout_during_an_event_loop_stall_is_inconclusive(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, jitter=0.0)
    (key,) = keys(1, FakeCheck(interval=2.0, timeout=0.5, duration=3.0))
    runner.update([key])
    runner.start()
    while not world.starts:
        await world.clock.advance(0.01)
    await world.clock.advance(0.45)  # on time: no report yet
    world.clock.now += 0.4  # the loop was busy elsewhere: every timer fires 0.35 s late
    await world.clock.advance(0.0)
    (stalled,) = reports
    assert stalled.result.reason == "timeout (response)" and stalled.inconclusive
    assert runner.load().max_lag >= 0.35
    while len(reports) < 2:
        await world.clock.advance(0.01)
    assert reports[1].result.reason == "timeout (response)"
    assert not reports[1].inconclusive  # the loop kept time: the server did not answer
    await runner.stop()


async def test_deadlines_need_no_timer_per_probe(world: World) -> None:
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports, max_in_flight=10_000)
    runner.update(keys(2_000, FakeCheck(interval=2.0, timeout=0.2, duration=0.1)))
    runner.start()
    timers_before = world.clock.scheduled
    await world.clock.advance(2.0)
    probes = len(world.starts)
    assert probes >= 2_000
    # the runner's own wake-ups (at most one per batch) and the fake probes' sleeps
    assert world.clock.scheduled - timers_before <= probes + 2.0 / 0.005 + 1
    await runner.stop()


async def test_a_removed_check_leaves_no_reference_cycle(world: World) -> None:
    """Workers freeze the collector's view of their checks: a removed one must be freed by
    reference counting alone (once the scheduler's queues let go of it), or never."""
    reports: list[ProbeReport] = []
    runner = make_runner(world, reports)
    runner.start()
    gc.collect()
    gc.disable()
    try:
        batch = set(keys(50, FakeCheck(duration=0.5)))
        entry_type = vars(runner_module)["_Entry"]  # what the scheduler holds per check

        def entries() -> int:
            return sum(type(o) is entry_type and o.key in batch for o in gc.get_objects())

        runner.update(batch)
        await world.clock.advance(1.0)
        assert entries() == 50
        runner.update([])
        await world.clock.advance(3.0)
        assert entries() == 0
    finally:
        gc.enable()
    await runner.stop()
