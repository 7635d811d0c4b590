"""The slow-start ramps: which servers are coming back, and when their weight next steps up.

A server with ``slow_start`` that comes back (its health turns up: from down, or a first
probe passing; or its agent stops holding it out) or that a reload adds (a server without
checks, not already served by the kernel) ramps from weight 1 to its full weight over the
period, a step every
``weight.ramp_step(period)`` (HAProxy's ``slowstart``: twentieths, at most once a second).
Servers the kernel already serves when lvsd starts or reloads keep their weight: they start
up without a transition (``health.initial(assume_up=True)``), so nothing ramps them from zero.

One heap holds the next step of every ramp: the daemon sleeps until its top, and ``due()``
names only the services of the servers that step, so the work per step is bounded by the
ramping servers' services, never the whole table, and there is no timer per server.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from lvsd.model import ServiceKey
from lvsd.pacing import Steps, finish
from lvsd.spec import Config, ServerRef
from lvsd.weight import ramp_share, ramp_step

EARLY = 0.002  # seconds: a timer that fires this early still takes its step


@dataclass(frozen=True, slots=True)
class Ramp:
    started: float  # the clock's time
    period: float
    until: float  # wall time the ramp ends, for /status


@dataclass(frozen=True, slots=True)
class StagedRamps:
    """The slow-start periods of a new config, not in use yet (``Ramps.commit``)."""

    periods: dict[ServerRef, float]
    known: set[ServerRef]
    added: list[ServerRef]


class Ramps:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._periods: dict[ServerRef, float] = {}  # the servers with a slow start
        self._known: set[ServerRef] | None = None  # every configured server; None before a config
        self._ramps: dict[ServerRef, Ramp] = {}
        self._steps: list[tuple[float, int, ServerRef, Ramp]] = []  # (at, step index, …)

    def rebuild(self, config: Config, serving: Callable[[ServerRef], bool]) -> None:
        """The slow-start periods of ``config``. A ramp whose server lost its slow start (or
        left) ends; a server without checks that this reload added ramps unless the kernel
        already ``serving`` it (at start nothing is added: the kernel's servers keep their
        weight, the others ramp when their first probe passes)."""
        self.commit(finish(self.stage_steps(config, serving)))

    def stage_steps(self, config: Config,
                    serving: Callable[[ServerRef], bool]) -> Steps[StagedRamps]:
        """``rebuild``'s reading of ``config``, a step per service (``lvsd.pacing``); the
        ramps in use change only at ``commit``."""
        periods: dict[ServerRef, float] = {}
        known: set[ServerRef] = set()
        added: list[ServerRef] = []
        for spec in config.services:
            yield None
            for server in spec.servers:
                ref = (spec.key, server.key)
                known.add(ref)
                if server.slow_start > 0:
                    periods[ref] = server.slow_start
                    if (self._known is not None and ref not in self._known
                            and not server.checks and not serving(ref)):
                        added.append(ref)
        return StagedRamps(periods, known, added)

    def commit(self, staged: StagedRamps) -> None:
        periods = staged.periods
        self._periods, self._known = periods, staged.known
        self._ramps = {ref: ramp for ref, ramp in self._ramps.items()
                       if periods.get(ref) == ramp.period}
        for ref in staged.added:
            self.begin(ref)

    def begin(self, ref: ServerRef) -> None:
        """``ref`` came back: ramp it from now, if it has a slow start."""
        period = self._periods.get(ref)
        if period is None:
            return
        now = self._clock()
        ramp = self._ramps[ref] = Ramp(now, period, self._wall() + period)
        self._push(ref, ramp, 1)

    def _push(self, ref: ServerRef, ramp: Ramp, index: int) -> None:
        at = min(ramp.started + index * ramp_step(ramp.period), ramp.started + ramp.period)
        heapq.heappush(self._steps, (at, index, ref, ramp))

    def __bool__(self) -> bool:
        return bool(self._ramps)

    def __len__(self) -> int:
        return len(self._ramps)

    def share(self, ref: ServerRef) -> float:
        """The share of its full weight ``ref`` gets now: 1 unless it is ramping."""
        ramp = self._ramps.get(ref)
        if ramp is None:
            return 1.0
        return ramp_share(self._clock() - ramp.started + EARLY, ramp.period)

    def ramp(self, ref: ServerRef) -> tuple[float, float] | None:
        """(wall time the ramp ends, the share now) while ``ref`` ramps."""
        ramp = self._ramps.get(ref)
        return None if ramp is None else (ramp.until, self.share(ref))

    def next_step(self) -> float | None:
        """The clock's time of the next step of any ramp."""
        steps = self._steps
        while steps and self._ramps.get(steps[0][2]) is not steps[0][3]:
            heapq.heappop(steps)  # a ramp that ended or started over
        return steps[0][0] if steps else None

    def due(self) -> set[ServiceKey]:
        """The services whose servers' weight steps now; a ramp that reached its full
        weight ends here (after its last step is planned)."""
        now = self._clock() + EARLY
        services: set[ServiceKey] = set()
        steps = self._steps
        while steps and steps[0][0] <= now:
            _, index, ref, ramp = heapq.heappop(steps)
            if self._ramps.get(ref) is not ramp:
                continue
            services.add(ref[0])
            if now - ramp.started >= ramp.period:
                del self._ramps[ref]
            else:
                self._push(ref, ramp, max(index + 1, math.floor(
                    (now - ramp.started) / ramp_step(ramp.period)) + 1))
        return services
