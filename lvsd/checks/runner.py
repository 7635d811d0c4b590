"""Probe scheduling: when each check's next probe starts, and how many run at once.

- One probe per ``CheckKey`` however many services share it (the caller passes keys).
- Start-up and every batch of new checks: checks with the same interval take evenly spaced
  slots of it, ordered by a stable hash of their key, each at a random point of its slot, so
  10 ms bins stay near the mean and a restart keeps the same order. The slots count from
  the runner's first wake-up after ``update()``, not from the call: building 10,000 entries
  keeps the loop for a few hundred ms, and slots counted from before that would all be due
  at once.
- Then each check keeps an anchor that advances by ``period`` per probe (the interval, or
  ``retry_interval`` while the last probe failed), never to before the last probe finished;
  each probe starts up to ``jitter * period`` (at most its slot of the interval: the
  interval over the number of checks with that interval) before its anchor, at random:
  never after it, so the period bounds the time from one probe to the next and detection
  stays within interval + timeout + (fall - 1) * retry. Jitter does not accumulate, so the start-up
  spacing survives in steady state, and a runner that fell behind moves on instead of
  bursting to catch up.
- The scheduler wakes at most once per ``batch`` (5 ms) and starts everything then due:
  probes that start together share the event loop's wake-ups (at 500 probes/s, one
  wake-up per probe would cost more CPU than the probes), for at most ``batch`` lateness.
- At most ``max_in_flight`` probes run; due probes beyond that wait in arrival order (their
  wait shows as start lateness). A probe still running at ``timeout`` is cancelled and fails
  with the step it was stuck in: "timeout (connect)", "timeout (response)", … Deadlines sit
  in one queue per timeout value (they expire in start order) and are swept at the wake-ups:
  no timer per probe, at most ``batch`` late.
- A probe is an object the prober starts with a callback (``Prober.start``), not a task for
  the stream checkers; results go to ``on_results`` in batches, one per loop iteration.
- ``update(keys)`` adds and removes only what changed: unchanged checks keep their schedule.

An overloaded lvsd must not take healthy servers out. A failed probe is reported
``inconclusive`` (the health book ignores it) when lvsd, not the server, may be the cause:
it started later than ``late_bound(spec)`` (its timeout, or half its interval if shorter)
and then timed out or met a shortage on the director (a failure the server answered,
refused or a wrong status, counts however late: else a mass failure that fills every probe
slot would never be seen), or it timed out while the event loop stalled (a wake-up
``lag_bound`` or more behind its timer, the reply may have sat unread). ``load()`` says how
late lvsd runs; a warning is logged, at most every ``LOG_EVERY`` seconds, while it is.

Time comes from an injectable ``Clock`` (the event loop by default; a fake one in tests).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from lvsd.checks.base import CheckSpec, Prober, RunningProbe, TaskProbe
from lvsd.checks.target import ProbeTarget
from lvsd.probe import (
    CheckKey,
    EngineLoad,
    ProbeReport,
    ProbeResult,
    ResultsCallback,
    answered_by_the_server,
    late_bound,
)

log = logging.getLogger(__name__)

TIMER_TICK = 0.001  # uvloop's timer resolution
DEFAULT_BATCH = 0.005
DEFAULT_LAG_BOUND = 0.1
LOG_EVERY = 10.0


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the runner needs of time; ``asyncio.AbstractEventLoop`` is one."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


def stable_hash(key: CheckKey, spec_digest: bytes = b"") -> int:
    """A hash of ``key`` that is the same in every process (``hash()`` is salted)."""
    target = key.target
    text = (f"{target.address}|{target.port}|{target.rs_address}|{target.rs_port}|{target.vip}"
            f"|{target.vport}|{target.protocol}|{target.mark}|{target.source}")
    digest = hashlib.blake2b(spec_digest or spec_fingerprint(key.spec), digest_size=8)
    digest.update(text.encode())
    return int.from_bytes(digest.digest(), "big")


def spec_fingerprint(spec: CheckSpec) -> bytes:
    return hashlib.blake2b(repr(spec).encode(), digest_size=16).digest()


def startup_offsets(keys: Sequence[CheckKey], rng: random.Random) -> dict[CheckKey, float]:
    """Seconds from now to each new check's first probe: evenly spaced slots per interval."""
    fingerprints: dict[CheckSpec, bytes] = {}
    by_interval: dict[float, list[tuple[int, CheckKey]]] = {}
    for key in keys:
        digest = fingerprints.get(key.spec)
        if digest is None:
            digest = fingerprints[key.spec] = spec_fingerprint(key.spec)
        by_interval.setdefault(key.spec.interval, []).append((stable_hash(key, digest), key))
    offsets: dict[CheckKey, float] = {}
    for interval, group in by_interval.items():
        group.sort(key=lambda item: item[0])
        slot = interval / len(group)
        for rank, (_, key) in enumerate(group):
            offsets[key] = (rank + rng.random()) * slot
    return offsets


def next_schedule(anchor: float, finished: float, period: float, jitter: float,
                  draw: float) -> tuple[float, float]:
    """(next anchor, next start) of a check whose probe anchored at ``anchor`` finished at
    ``finished``; ``draw`` is uniform in [0, 1) and places the start up to ``jitter`` early."""
    anchor = max(anchor + period, finished)
    return anchor, max(anchor - period * jitter * draw, finished)


def probe_period(spec: CheckSpec, last_ok: bool) -> float:
    return spec.interval if last_ok else spec.failing_interval


class _BrokenProber(Prober):
    """Stands in for a prober that could not be built (e.g. an unreadable CA file)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        return ProbeResult(False, self.reason)


class _SharedProber:
    """One prober per distinct spec, and how many checks use it."""

    __slots__ = ("prober", "users")

    def __init__(self, prober: Prober) -> None:
        self.prober = prober
        self.users = 0


class _Entry:
    __slots__ = ("alive", "anchor", "due", "generation", "key", "prober", "report", "running",
                 "scheduled", "seq", "shared", "started")

    def __init__(self, key: CheckKey, shared: _SharedProber, anchor: float) -> None:
        self.key = key
        self.shared = shared
        self.prober = shared.prober
        shared.users += 1
        self.anchor = anchor
        self.due = anchor
        self.seq = 0
        self.alive = True
        self.running: RunningProbe | None = None
        self.generation = 0  # counts probes: tells a stale deadline from the current one
        self.scheduled = 0.0
        self.started = 0.0
        self.report: Callable[[ProbeResult], None] = _noop


def _noop(result: ProbeResult) -> None:
    return None


_Deadlines = deque[tuple[float, int, _Entry]]  # (started, generation, entry) per timeout


class ProbeRunner:
    """Runs the probes of a set of ``CheckKey``s and hands their reports to ``on_results``,
    a batch at a time.

    ``on_results`` runs on the event loop and must not block; it gets no report of a check
    removed while its probe ran.
    """

    def __init__(self, on_results: ResultsCallback, *, max_in_flight: int = 1000,
                 jitter: float = 0.05, batch: float = DEFAULT_BATCH,
                 lag_bound: float = DEFAULT_LAG_BOUND, log_load: bool = True,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        self._on_results = on_results
        self._max_in_flight = max_in_flight
        self._jitter = jitter
        self._batch = batch
        self._lag_bound = lag_bound
        self._log_load = log_load
        self._last_wake = float("-inf")
        self._loop = asyncio.get_running_loop()
        self._clock: Clock = clock if clock is not None else self._loop
        self._rng = rng if rng is not None else random.Random()
        self._per_interval: collections.Counter[float] = collections.Counter()
        self._entries: dict[CheckKey, _Entry] = {}
        self._probers: dict[CheckSpec, _SharedProber] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._waiting: deque[tuple[_Entry, float]] = deque()
        self._fresh: list[tuple[_Entry, float]] = []  # new checks and their start-up offsets
        self._fresh_since = 0.0  # when the oldest of them was added
        self._deadlines: dict[float, _Deadlines] = {}
        self._in_flight = 0
        self._running = False
        self._timer: Cancellable | None = None
        self._timer_when = 0.0
        self._reports: list[ProbeReport] = []
        self._stall_end = float("-inf")  # when the last event-loop stall was seen
        self._window = _LoadCounter()  # since _window_start and the last load()
        self._window_start = self._clock.time()
        self._since_load = EngineLoad()  # earlier windows not yet read by load()
        self._log_carry = EngineLoad()  # read by load() since _window_start, not yet logged

    # --- public -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Probes due but held back by ``max_in_flight``."""
        return len(self._waiting)

    def due(self, key: CheckKey) -> float | None:
        """When ``key``'s next probe is due (None while it runs or waits for a slot)."""
        entry = self._entries.get(key)
        if entry is None or entry.running is not None or entry.seq < 0:
            return None
        return entry.due

    def load(self) -> EngineLoad:
        """How late the engine ran since the previous call (for /status and the log)."""
        current = self._window.freeze()
        self._log_carry += current  # the log's window still covers it
        load = self._since_load + current
        self._since_load = EngineLoad()
        self._window = _LoadCounter()
        return load

    def update(self, keys: Iterable[CheckKey]) -> None:
        """Make the set of checks ``keys``: new ones are spread over their interval from now,
        removed ones stop (a running probe is cancelled), the others keep their schedule."""
        wanted = keys if isinstance(keys, AbstractSet) else set(keys)
        for key in [key for key in self._entries if key not in wanted]:
            self._remove(self._entries.pop(key))
        added = [key for key in wanted if key not in self._entries]
        if not added:
            return
        now = self._clock.time()
        if not self._fresh:
            self._fresh_since = now
        by_identity: dict[int, _SharedProber] = {}  # spares hashing equal specs again
        for key, offset in startup_offsets(added, self._rng).items():
            shared = by_identity.get(id(key.spec))
            if shared is None:
                shared = by_identity[id(key.spec)] = self._prober_for(key.spec)
            entry = _Entry(key, shared, now + offset)  # placed again at the first wake-up
            entry.report = functools.partial(self._finished, entry)
            self._entries[key] = entry
            self._per_interval[key.spec.interval] += 1
            self._fresh.append((entry, offset))
        if self._timer is not None and self._timer_when > self._fresh_since:
            self._timer.cancel()
            self._timer = None
        self._arm()

    def start(self) -> None:
        self._running = True
        self._arm()

    async def stop(self) -> None:
        """Stop scheduling and cancel the running probes; ``start()`` resumes."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = []
        for entry in self._entries.values():
            if entry.running is not None:
                if isinstance(entry.running, TaskProbe):
                    tasks.append(entry.running.task)
                entry.running.cancel()
                entry.running = None
        self._in_flight = 0
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()
        self._deadlines.clear()
        for entry in self._entries.values():
            if entry.seq < 0:  # was running or waiting for a slot: due again at once
                self._push(entry, entry.due)

    # --- scheduling ---------------------------------------------------------------------

    def _prober_for(self, spec: CheckSpec) -> _SharedProber:
        shared = self._probers.get(spec)
        if shared is None:
            try:
                prober = spec.prober()
            except Exception as exc:  # the spec validated, but e.g. its CA file went bad
                prober = _BrokenProber(f"check setup failed: {exc}")
            shared = self._probers[spec] = _SharedProber(prober)
        return shared

    def _remove(self, entry: _Entry) -> None:
        entry.alive = False
        self._per_interval[entry.key.spec.interval] -= 1
        entry.report = _noop  # breaks the entry <-> callback cycle: freed without the GC
        if entry.running is not None:
            entry.running.cancel()
            entry.running = None
            self._in_flight -= 1
            self._fill_slots()
        entry.shared.users -= 1
        if entry.shared.users == 0:
            del self._probers[entry.key.spec]

    def _push(self, entry: _Entry, due: float) -> None:
        self._seq += 1
        entry.due = due
        entry.seq = self._seq
        heapq.heappush(self._heap, (due, self._seq, entry))
        if self._timer is not None and max(due, self._last_wake + self._batch) < self._timer_when:
            self._timer.cancel()
            self._timer = None
            self._arm()

    def _arm(self) -> None:
        if not self._running or self._timer is not None:
            return
        heap = self._heap
        while heap and (not heap[0][2].alive or heap[0][1] != heap[0][2].seq):
            heapq.heappop(heap)
        wake = heap[0][0] if heap else float("inf")
        if self._fresh:
            wake = min(wake, self._fresh_since)
        for timeout, deadlines in self._deadlines.items():
            while deadlines and _stale(deadlines[0]):
                deadlines.popleft()
            if deadlines and deadlines[0][0] + timeout < wake:
                wake = deadlines[0][0] + timeout
        if wake != float("inf"):
            self._timer_when = max(wake, self._last_wake + self._batch)
            self._timer = self._clock.call_at(self._timer_when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # Timers may fire up to a tick early (uvloop counts whole milliseconds and caches the
        # time per loop iteration): take what is due within a tick rather than spin.
        now = self._clock.time()
        lag = now - self._timer_when
        if lag >= self._lag_bound:
            self._stall_end = now
        self._window.lag(lag)
        self._last_wake = now
        limit = now + TIMER_TICK
        if self._fresh:
            self._place_fresh(now)
        self._expire(now)
        heap = self._heap
        while heap and heap[0][0] <= limit:
            due, seq, entry = heapq.heappop(heap)
            if not entry.alive or seq != entry.seq:
                continue
            entry.seq = -1  # out of the heap until it is rescheduled
            if self._in_flight < self._max_in_flight:
                self._launch(entry, due)
            else:
                self._waiting.append((entry, due))
        self._arm()
        if now - self._window_start >= LOG_EVERY:
            current = self._window.freeze()
            logged = self._log_carry + current
            if logged.overloaded and self._log_load:
                log_overload(logged)
            self._since_load += current
            self._log_carry = EngineLoad()
            self._window = _LoadCounter()
            self._window_start = now

    def _place_fresh(self, now: float) -> None:
        fresh, self._fresh = self._fresh, []
        for entry, offset in fresh:
            if entry.alive:
                entry.anchor = now + offset
                self._push(entry, entry.anchor)

    def _launch(self, entry: _Entry, scheduled: float) -> None:
        self._in_flight += 1
        entry.scheduled = scheduled
        entry.started = started = self._clock.time()
        entry.generation += 1
        timeout = entry.key.spec.timeout
        deadlines = self._deadlines.get(timeout)
        if deadlines is None:
            deadlines = self._deadlines[timeout] = deque()
        deadlines.append((started, entry.generation, entry))
        try:
            entry.running = entry.prober.start(entry.key.target, entry.report)
        except Exception as exc:  # a checker bug must cost one probe, not the runner
            log.exception("probe %s raised", entry.key)
            entry.running = _NOT_STARTED
            self._loop.call_soon(entry.report, ProbeResult(
                False, f"check error: {type(exc).__name__}: {exc}"))

    def _fill_slots(self) -> None:
        while self._running and self._waiting and self._in_flight < self._max_in_flight:
            entry, scheduled = self._waiting.popleft()
            if entry.alive:
                self._launch(entry, scheduled)

    def _expire(self, now: float) -> None:
        """Fail the probes whose deadline passed (never early: a timer that fired a tick
        early leaves them to the next wake-up), with the step each was stuck in."""
        expired = False
        for timeout, deadlines in self._deadlines.items():
            while deadlines and now - deadlines[0][0] >= timeout:
                started, generation, entry = deadlines.popleft()
                running = entry.running
                if running is None or generation != entry.generation:
                    continue
                stage = running.stage
                running.cancel()
                entry.running = None
                self._in_flight -= 1
                expired = True
                stalled = (now - started - timeout >= self._lag_bound
                           or self._stall_end >= started)
                result = ProbeResult(False, f"timeout ({stage})" if stage else "timeout",
                                     now - entry.started)
                self._complete(entry, result, now, stalled)
        if expired:
            self._fill_slots()

    def _finished(self, entry: _Entry, result: ProbeResult) -> None:
        if entry.running is None:
            return  # cancelled (timed out, removed, stopped) before it answered
        entry.running = None
        self._in_flight -= 1
        self._complete(entry, result, self._clock.time(), False)
        self._fill_slots()

    def _complete(self, entry: _Entry, result: ProbeResult, finished: float,
                  stalled: bool) -> None:
        if not entry.alive:
            return
        spec = entry.key.spec
        lateness = entry.started - entry.scheduled
        late = lateness > late_bound(spec)
        inconclusive = not result.ok and (
            stalled or (late and not answered_by_the_server(result)))
        self._window.probe(lateness, late, inconclusive)
        period = probe_period(spec, result.ok)
        # Jitter within the check's own slot of the interval: the start-up spacing survives,
        # and 10 ms bins stay near the mean (independent draws over 5% of 2 s made them
        # Poisson: peaks of 2.6x the mean at 1,000 checks).
        slot = spec.interval / max(1, self._per_interval[spec.interval])
        jitter = min(self._jitter, slot / period)
        entry.anchor, due = next_schedule(entry.anchor, finished, period, jitter,
                                          self._rng.random())
        self._push(entry, due)
        self._arm()
        if not self._reports:
            self._loop.call_soon(self._flush)
        self._reports.append(ProbeReport(entry.key, result, entry.scheduled, entry.started,
                                         finished, inconclusive))

    def _flush(self) -> None:
        reports, self._reports = self._reports, []
        try:
            self._on_results(reports)
        except Exception:
            log.exception("the results callback failed for %d reports", len(reports))


def _stale(item: tuple[float, int, _Entry]) -> bool:
    entry = item[2]
    return entry.running is None or item[1] != entry.generation


class _NotStarted:
    """Stands for a probe whose ``start`` raised, until its failure is recorded."""

    stage = ""

    def cancel(self) -> None:
        return None


_NOT_STARTED = _NotStarted()


class _LoadCounter:
    __slots__ = ("inconclusive", "late", "max_lag", "max_lateness", "probes")

    def __init__(self) -> None:
        self.probes = self.inconclusive = self.late = 0
        self.max_lateness = self.max_lag = 0.0

    def probe(self, lateness: float, late: bool, inconclusive: bool) -> None:
        self.probes += 1
        self.late += late
        self.inconclusive += inconclusive
        self.max_lateness = max(self.max_lateness, lateness)

    def lag(self, lag: float) -> None:
        self.max_lag = max(self.max_lag, lag)

    @property
    def overloaded(self) -> bool:
        return self.late > 0 or self.inconclusive > 0

    def freeze(self) -> EngineLoad:
        return EngineLoad(self.probes, self.inconclusive, self.late, self.max_lateness,
                          self.max_lag)


def log_overload(load: EngineLoad) -> None:
    log.warning("probe engine overloaded: %d of %d probes started late (up to %.3f s), the "
                "event loop stalled up to %.3f s; %d failures not counted against their "
                "servers", load.late, load.probes, load.max_lateness, load.max_lag,
                load.inconclusive)
