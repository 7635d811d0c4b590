"""The rise/fall state machine of one probe (a ``CheckKey``): pure, no I/O, no clock.

- UNKNOWN (never probed, gets no traffic): the first result decides, pass → UP, fail → DOWN.
- UP: ``fall`` consecutive failures → DOWN.
- DOWN: ``rise`` consecutive passes → UP.
- ``initial(assume_up=True)`` is for a restart over a kernel table that already serves the
  server: it starts UP and needs ``fall`` failures to leave, so a restart does not flap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lvsd.probe import ProbeResult


class Status(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class HealthState:
    """``changed`` tells whether the observation that produced this state moved ``status``
    (from ``previous``); ``reason`` says why the status is what it is; ``since`` is when it
    became so."""

    status: Status = Status.UNKNOWN
    passes: int = 0  # consecutive
    fails: int = 0  # consecutive
    last: ProbeResult | None = None
    since: float = 0.0
    changed: bool = False
    previous: Status | None = None
    reason: str = "not probed yet"

    @property
    def up(self) -> bool:
        return self.status is Status.UP


def initial(assume_up: bool = False, now: float = 0.0) -> HealthState:
    if assume_up:
        return HealthState(Status.UP, since=now, reason="assumed up: already in the kernel table")
    return HealthState(Status.UNKNOWN, since=now)


def observe(state: HealthState, result: ProbeResult, rise: int, fall: int, *,
            now: float) -> HealthState:
    """The state after one more probe result, observed at ``now``."""
    passes = state.passes + 1 if result.ok else 0
    fails = 0 if result.ok else state.fails + 1
    status, reason = _next_status(state.status, passes, fails, result, rise, fall)
    if status is state.status:
        return HealthState(status, passes, fails, result, state.since, False, None, state.reason)
    return HealthState(status, passes, fails, result, now, True, state.status, reason)


def _next_status(status: Status, passes: int, fails: int, result: ProbeResult, rise: int,
                 fall: int) -> tuple[Status, str]:
    if status is Status.UNKNOWN:
        if result.ok:
            return Status.UP, "first probe passed"
        return Status.DOWN, f"first probe failed: {result.reason}"
    if status is Status.UP and fails >= fall:
        return Status.DOWN, _counted(fails, "failure", result.reason)
    if status is Status.DOWN and passes >= rise:
        return Status.UP, _counted(passes, "pass", result.reason)
    return status, ""


def _counted(count: int, what: str, last_reason: str) -> str:
    plural = f"{what}es" if what.endswith("s") else f"{what}s"
    text = f"{count} consecutive {plural if count > 1 else what}"
    return f"{text}, last: {last_reason}" if last_reason else text
