"""The probe contract between the runner and the rest of lvsd: a leaf module.

A ``CheckKey`` names one probe (a check spec and the target it needs); a runner runs the probes
of a set of keys and hands their ``ProbeReport``s back **in batches** to one callback. Nothing
here imports a checker or a third-party library, so the health book and the planner load
without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lvsd.checks.base import CheckSpec
    from lvsd.checks.target import ProbeTarget


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer of one probe: ``reason`` is short text for logs and /status."""

    ok: bool
    reason: str = ""
    latency: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckKey:
    """One probe: a spec and the target it needs (already reduced by ``spec.relevant``)."""

    spec: CheckSpec
    target: ProbeTarget
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.spec, self.target)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self.spec.describe(self.target)


def check_key(target: ProbeTarget, spec: CheckSpec) -> CheckKey:
    return CheckKey(spec, spec.relevant(target))


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """One finished probe. ``inconclusive`` marks a probe that started too late to mean
    anything (lvsd itself was overloaded): it is reported and counted, but health ignores it."""

    key: CheckKey
    result: ProbeResult
    scheduled: float
    started: float
    finished: float
    inconclusive: bool = False

    @property
    def lateness(self) -> float:
        """How late the probe started against its schedule (slots full, loop busy)."""
        return self.started - self.scheduled


# Failures lvsd itself may cause: a timeout (a late or starved engine reads the answer
# late) or a local shortage (file descriptors, ports, buffers, memory), or its own bug.
_LVSD_MAY_CAUSE = ("timeout", "too many open files", "cannot assign requested address",
                   "no buffer space available", "cannot allocate memory", "check error",
                   "check setup failed")


def answered_by_the_server(result: ProbeResult) -> bool:
    """A failure the server gave (refused, reset, a wrong status or body), however late the
    probe started; not a timeout or a shortage on the director."""
    return not result.reason.startswith(_LVSD_MAY_CAUSE)


def late_bound(spec: CheckSpec) -> float:
    """A probe that started later than this after its schedule proves nothing by failing."""
    return min(spec.timeout, spec.interval / 2)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """How far behind the probe engine runs, since the previous ``load()``."""

    probes: int = 0
    inconclusive: int = 0
    late: int = 0  # probes that started later than their late bound
    max_lateness: float = 0.0
    max_lag: float = 0.0  # the longest event-loop stall seen at a wake-up

    @property
    def overloaded(self) -> bool:
        return self.late > 0 or self.inconclusive > 0

    def __add__(self, other: EngineLoad) -> EngineLoad:
        return EngineLoad(self.probes + other.probes, self.inconclusive + other.inconclusive,
                          self.late + other.late, max(self.max_lateness, other.max_lateness),
                          max(self.max_lag, other.max_lag))


ResultsCallback = Callable[[Sequence[ProbeReport]], None]


class Runner(Protocol):
    """What the daemon needs of a probe runner: ``ProbeRunner``, or ``ManualRunner`` in tests."""

    def update(self, keys: Iterable[CheckKey]) -> None:
        """Make the set of probes ``keys``; unchanged ones keep their schedule."""
        ...

    def start(self) -> None: ...

    def load(self) -> EngineLoad:
        """How late the probes ran since the previous call (each call starts a new window)."""
        ...

    async def stop(self) -> None: ...


RunnerFactory = Callable[[ResultsCallback], Runner]
"""Builds a runner that delivers its reports to the given callback."""
