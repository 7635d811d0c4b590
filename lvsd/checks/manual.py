"""A ``Runner`` that runs nothing: tests and benchmarks hand it results to deliver.

It keeps the set of probes the daemon asked for, and delivers reports through the same
callback a ``ProbeRunner`` would, in batches, so a test drives the daemon only through its
public contract.
"""

from __future__ import annotations

from collections.abc import Iterable

from lvsd.probe import (
    CheckKey,
    EngineLoad,
    ProbeReport,
    ProbeResult,
    ResultsCallback,
    Runner,
    late_bound,
)


class ManualRunner:
    """Pass the class itself as the daemon's ``runner`` factory."""

    def __init__(self, on_results: ResultsCallback) -> None:
        self._on_results = on_results
        self.keys: frozenset[CheckKey] = frozenset()
        self.updates = 0
        self.running = False
        self._load = EngineLoad()

    def update(self, keys: Iterable[CheckKey]) -> None:
        self.keys = frozenset(keys)
        self.updates += 1

    def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def load(self) -> EngineLoad:
        """What the delivered reports say of lateness, as a ``ProbeRunner`` counts it."""
        load, self._load = self._load, EngineLoad()
        return load

    def deliver(self, reports: Iterable[ProbeReport]) -> None:
        """Hand ``reports`` to the daemon as one batch."""
        batch = tuple(reports)
        for report in batch:
            self._load += EngineLoad(1, int(report.inconclusive),
                                     int(report.lateness > late_bound(report.key.spec)),
                                     max(report.lateness, 0.0))
        self._on_results(batch)

    def report(self, key: CheckKey, ok: bool, reason: str = "", *, times: int = 1,
               latency: float = 0.001, at: float = 0.0, inconclusive: bool = False,
               lateness: float = 0.0) -> None:
        """``times`` results of ``key``, each delivered as its own batch; each started
        ``lateness`` seconds after its schedule."""
        result = ProbeResult(ok, reason if reason or ok else "refused", latency)
        start = at + lateness
        for _ in range(times):
            self.deliver((ProbeReport(key, result, at, start, start + latency, inconclusive),))

    def report_all(self, ok: bool, reason: str = "", *, at: float = 0.0) -> None:
        """One result for every probe, in one batch."""
        result = ProbeResult(ok, reason, 0.0)
        self.deliver(ProbeReport(key, result, at, at, at) for key in self.keys)


def _conforms(runner: ManualRunner) -> Runner:
    return runner
