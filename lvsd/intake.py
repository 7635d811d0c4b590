"""Probe reports in: each batch from the runner goes to the agents or the health book, and what
changed becomes metrics, log lines, events, hooks, slow-start ramps and the services to plan
again. Also the per-server readings a pass plans with (health, and the standing besides it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsd import logs
from lvsd.agents import Agents, StagedAgents
from lvsd.checks.agent import describe
from lvsd.dirt import Dirty
from lvsd.events import EventLog, health_fields
from lvsd.health import Status
from lvsd.healthbook import HealthBook, Observed, ServerChange, StagedBook
from lvsd.hooks import run_hook
from lvsd.metrics import DaemonMetrics
from lvsd.model import ServiceKey
from lvsd.overrides import Overrides
from lvsd.pacing import Pacer, paced
from lvsd.probe import CheckKey, ProbeReport
from lvsd.reconcile import StandingOf
from lvsd.slowstart import Ramps, StagedRamps
from lvsd.spec import Config, ServerRef, ServerSpec, ServiceSpec
from lvsd.weight import NO_ADMIN, NO_STANDING, Standing

# Its lines keep the daemon's logger name, as before the move: log filters rely on it.
log = logs.get_logger("lvsd.daemon")


@dataclass(frozen=True, slots=True)
class StagedProbes:
    """The probe owners' state for a new config, not in use yet (``ProbeIntake.commit``)."""

    book: StagedBook
    agents: StagedAgents
    ramps: StagedRamps


class ProbeIntake:
    def __init__(self, health: HealthBook, agents: Agents, ramps: Ramps, overrides: Overrides, *,
                 metrics: DaemonMetrics, events: EventLog, dirty: Dirty,
                 spec: Callable[[ServiceKey], ServiceSpec | None],
                 spawn: Callable[[Coroutine[Any, Any, None]], None],
                 changed: Callable[[], None], probed: Callable[[], None]) -> None:
        """``dirty`` takes the servers whose health or agent's report moved; ``changed`` is
        called once
        for a batch that changed any, ``probed`` (first) for one that changed any or gave a
        check its first result; ``spawn`` runs an ``on_change`` hook."""
        self._health = health
        self._agents = agents
        self._ramps = ramps
        self._overrides = overrides
        self._metrics = metrics
        self._events = events
        self._dirty = dirty
        self._spec = spec
        self._spawn = spawn
        self._changed = changed
        self._probed = probed

    async def rebuild(self, config: Config, marks: Mapping[ServerRef, int],
                      serving: Callable[[ServerRef], bool]) -> Iterable[CheckKey]:
        """The health book, the agents and the ramps for ``config`` (what did not change
        keeps its state), built in slices (``lvsd.pacing``); the checks to probe."""
        return self.commit(await self.stage(config, marks, serving))

    async def stage(self, config: Config, marks: Mapping[ServerRef, int],
                    serving: Callable[[ServerRef], bool],
                    pacer: Pacer | None = None) -> StagedProbes:
        """The health book, agents and ramps for ``config``, built to the side in slices;
        those in use change only at ``commit``, and reports taken in meanwhile carry over."""
        pacer = pacer or Pacer()
        return StagedProbes(
            await paced(self._health.stage_steps(config, marks, serving, now=time.time()),
                        pacer),
            await paced(self._agents.stage_steps(config), pacer),
            await paced(self._ramps.stage_steps(config, serving), pacer))

    def commit(self, staged: StagedProbes) -> Iterable[CheckKey]:
        """Put ``staged`` in use, at once; the checks to probe."""
        self._health.commit(staged.book)
        self._agents.commit(staged.agents)
        self._ramps.commit(staged.ramps)
        return (self._health.keys() | self._agents.keys() if self._agents
                else self._health.keys())

    def health_of(self, spec: ServiceSpec, server: ServerSpec) -> Status:
        return self._health.status((spec.key, server.key))

    def standings(self) -> StandingOf | None:
        """``standing``, or None while no server has any: no override, no agent, no ramp
        (a full pass then asks for none of 10,000)."""
        return self.standing if self._overrides or self._agents or self._ramps else None

    def standing(self, spec: ServiceSpec, server: ServerSpec) -> Standing:
        """Everything besides health that moves this server's weight, from its owners: the
        operator's override, the agent's report and the slow-start ramp."""
        ref = (spec.key, server.key)
        admin = self._overrides.admin(ref)
        agent = self._agents.report(ref) if self._agents else None
        ramp = self._ramps.share(ref) if self._ramps else 1.0
        if admin is NO_ADMIN and agent is None and ramp >= 1.0:
            return NO_STANDING
        return Standing(admin, agent, ramp)

    def on_results(self, reports: Sequence[ProbeReport]) -> None:
        """The runner's callback: take a batch of reports into the health book."""
        now = time.time()
        changed = first_results = False
        metrics = self._metrics
        for report in reports:
            spec, result = report.key.spec, report.result
            # Inconclusive reports too: the most overloaded probes are the latest.
            metrics.probe(spec.type, result.ok, result.latency, report.lateness,
                          report.inconclusive)
            if (moved := self._agents.observe(report, now=now)) is not None:
                for service_key, dest_key in moved.refs:
                    changed = True
                    log.info("agent_change", service=str(service_key), server=str(dest_key),
                             agent=describe(self._agents.report((service_key, dest_key))),
                             reason=result.reason)
                    if moved.came_back:
                        self._ramps.begin((service_key, dest_key))
                    self._dirty.add_server((service_key, dest_key))
                continue
            seen = self._health.observe(report, now=now)
            if seen is None:
                continue
            if seen.previous.last is None:
                first_results = True
            for change in seen.servers:
                changed = True
                service_key, dest_key = change.ref
                service = self._spec(service_key)
                metrics.transition(spec.type, change.status.value)
                log_health_change(service.name if service else str(service_key), change, seen)
                self._events.health_changed(str(service_key),
                                            service.name if service else None, change, seen)
                if service is not None and service.on_change:
                    self._spawn(run_hook(service, dest_key, change.status, result.reason))
                if change.status is Status.UP:
                    self._ramps.begin(change.ref)
                self._dirty.add_server((service_key, dest_key))
        if changed or first_results:
            self._probed()
        if changed:
            self._changed()


def log_health_change(service: str, change: ServerChange, seen: Observed) -> None:
    log.info("health_change", service=service, **health_fields(change, seen))
