"""Probe scheduling: when each check's next probe starts, and how many run at once.

- One probe per ``CheckKey`` however many services share it (the caller passes keys).
- Start-up and every batch of new checks: checks with the same interval take evenly spaced
  slots of it, ordered by a stable hash of their key, each at a random point of its slot, so
  10 ms bins stay near the mean and a restart keeps the same order.
- Then each check keeps an anchor that advances by ``period`` per probe (the interval, or
  ``retry_interval`` while the last probe failed), never to before the last probe finished;
  each probe starts at its anchor ± ``jitter * period`` at random. Jitter does not
  accumulate, so the start-up spacing survives in steady state, and a runner that fell
  behind moves on instead of bursting to catch up.
- The scheduler wakes at most once per ``batch`` (5 ms) and starts everything then due:
  probes that start together share the event loop's wake-ups (at 500 probes/s, one
  wake-up per probe would cost more CPU than the probes), for at most ``batch`` lateness.
- At most ``max_in_flight`` probes run; due probes beyond that wait in arrival order (their
  wait shows as start lateness). A probe still running at ``timeout`` is cancelled and fails
  with the step it was stuck in: "timeout (connect)", "timeout (response)", …
- ``update(keys)`` adds and removes only what changed: unchanged checks keep their schedule.

Time comes from an injectable ``Clock`` (the event loop by default; a fake one in tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from lvsd.checks.base import CheckSpec, Prober, ProbeTarget, current_stage, set_stage
from lvsd.probe import CheckKey, ProbeReport, ProbeResult, ResultsCallback

log = logging.getLogger(__name__)

TIMER_TICK = 0.001  # uvloop's timer resolution
DEFAULT_BATCH = 0.005


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
    ``finished``; ``draw`` is uniform in [0, 1) and places the start within ± jitter."""
    anchor = max(anchor + period, finished)
    return anchor, max(anchor + period * jitter * (2.0 * draw - 1.0), finished)


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
    __slots__ = ("alive", "anchor", "due", "key", "prober", "seq", "shared", "task", "timed_out")

    def __init__(self, key: CheckKey, shared: _SharedProber, anchor: float) -> None:
        self.key = key
        self.shared = shared
        self.prober = shared.prober
        shared.users += 1
        self.anchor = anchor
        self.due = anchor
        self.seq = 0
        self.alive = True
        self.task: asyncio.Task[None] | None = None
        self.timed_out = False


class ProbeRunner:
    """Runs the probes of a set of ``CheckKey``s and hands their reports to ``on_results``
    (one batch per finished probe, for now).

    ``on_results`` runs on the event loop and must not block; it is not given a check
    removed while its probe ran.
    """

    def __init__(self, on_results: ResultsCallback, *, max_in_flight: int = 1000,
                 jitter: float = 0.05, batch: float = DEFAULT_BATCH,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        self._on_results = on_results
        self._max_in_flight = max_in_flight
        self._jitter = jitter
        self._batch = batch
        self._last_wake = float("-inf")
        self._clock: Clock = clock if clock is not None else asyncio.get_running_loop()
        self._rng = rng if rng is not None else random.Random()
        self._entries: dict[CheckKey, _Entry] = {}
        self._probers: dict[CheckSpec, _SharedProber] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._waiting: deque[tuple[_Entry, float]] = deque()
        self._in_flight = 0
        self._running = False
        self._timer: Cancellable | None = None
        self._timer_when = 0.0

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
        if entry is None or entry.task is not None or entry.seq < 0:
            return None
        return entry.due

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
        by_identity: dict[int, _SharedProber] = {}  # spares hashing equal specs again
        for key, offset in startup_offsets(added, self._rng).items():
            shared = by_identity.get(id(key.spec))
            if shared is None:
                shared = by_identity[id(key.spec)] = self._prober_for(key.spec)
            entry = _Entry(key, shared, now + offset)
            self._entries[key] = entry
            self._push(entry, entry.anchor)
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
        tasks = [entry.task for entry in self._entries.values() if entry.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()
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
        if entry.task is not None:
            entry.task.cancel()
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
        if heap:
            self._timer_when = max(heap[0][0], self._last_wake + self._batch)
            self._timer = self._clock.call_at(self._timer_when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # Timers may fire up to a tick early (uvloop counts whole milliseconds and caches the
        # time per loop iteration): take what is due within a tick rather than spin.
        now = self._clock.time()
        self._last_wake = now
        limit = now + TIMER_TICK
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

    def _launch(self, entry: _Entry, scheduled: float) -> None:
        self._in_flight += 1
        entry.task = asyncio.get_running_loop().create_task(self._run(entry, scheduled))

    def _fill_slots(self) -> None:
        while self._running and self._waiting and self._in_flight < self._max_in_flight:
            entry, scheduled = self._waiting.popleft()
            if entry.alive:
                self._launch(entry, scheduled)

    def _expire(self, entry: _Entry) -> None:
        if entry.task is not None:
            entry.timed_out = True
            entry.task.cancel()

    async def _run(self, entry: _Entry, scheduled: float) -> None:
        clock = self._clock
        started = clock.time()
        spec = entry.key.spec
        task = entry.task
        assert task is not None
        entry.timed_out = False
        set_stage("")
        deadline = clock.call_at(started + spec.timeout, self._expire, entry)
        try:
            result = await entry.prober.probe(entry.key.target)
        except asyncio.CancelledError:
            if not entry.timed_out or task.uncancel() > 0:
                raise
            stage = current_stage()
            result = ProbeResult(False, f"timeout ({stage})" if stage else "timeout",
                                 clock.time() - started)
        except Exception as exc:  # a checker bug must cost one probe, not the runner
            log.exception("probe %s raised", entry.key)
            result = ProbeResult(False, f"check error: {type(exc).__name__}: {exc}",
                                 clock.time() - started)
        finally:
            deadline.cancel()
            entry.task = None
            self._in_flight -= 1
            self._fill_slots()
        finished = clock.time()
        if not entry.alive:
            return
        entry.anchor, due = next_schedule(entry.anchor, finished, probe_period(spec, result.ok),
                                          self._jitter, self._rng.random())
        self._push(entry, due)
        self._arm()
        try:
            self._on_results((ProbeReport(entry.key, result, scheduled, started, finished),))
        except Exception:
            log.exception("result callback failed for %s", entry.key)
