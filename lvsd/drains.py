"""Draining: a server that leaves the config stays at weight 0 until it is idle.

The shape of kube-proxy's ``GracefulTerminationManager``: a removed destination is kept at
weight 0 until ActiveConn + InactConn is 0 or ``drain_timeout`` passes, then the planner
deletes it. UDP has no connection to wait for: it goes at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from lvsd import logs
from lvsd.model import Dest, DestKey, Protocol, ServiceKey, Table
from lvsd.pacing import Steps, finish
from lvsd.spec import Config

log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Drain:
    dest: Dest
    deadline: float  # monotonic
    deadline_wall: float  # the same moment, wall clock, for /status


class Drains:
    def __init__(self) -> None:
        self._by_service: dict[ServiceKey, dict[DestKey, Drain]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_service)

    def services(self) -> list[ServiceKey]:
        return list(self._by_service)

    def of(self, service: ServiceKey) -> Sequence[Drain]:
        return tuple(self._by_service.get(service, {}).values())

    def dests(self) -> Mapping[ServiceKey, Sequence[Dest]]:
        return {svc: [d.dest for d in drains.values()] for svc, drains in self._by_service.items()}

    def dests_of(self, service: ServiceKey) -> Sequence[Dest]:
        return [d.dest for d in self._by_service.get(service, {}).values()]

    def start(self, service: ServiceKey, dest: Dest, timeout: float, *, now: float,
              wall: float) -> None:
        self._by_service.setdefault(service, {})[dest.key] = Drain(dest, now + timeout,
                                                                  wall + timeout)
        log.info("drain_start", service=str(service), server=str(dest.key),
                 active=dest.stats.active, inactive=dest.stats.inactive)

    def start_unconfigured(self, config: Config, actual: Table, managed: Collection[ServiceKey],
                           timeout: float, *, now: float, wall: float) -> None:
        """Drain the servers in the kernel that ``config`` no longer names, in services that
        were ``managed`` before and still are."""
        self.start_all(finish(unconfigured_steps(config, actual, managed)), timeout,
                       now=now, wall=wall)

    def start_all(self, dests: Sequence[tuple[ServiceKey, Dest]], timeout: float, *,
                  now: float, wall: float) -> None:
        for service, dest in dests:
            self.start(service, dest, timeout, now=now, wall=wall)

    def expire(self, actual: Table, config: Config, *, now: float) -> None:
        """End the drains that are over: idle, timed out, UDP, gone, or back in the config."""
        if not self._by_service:
            return
        kernel = actual.by_key()
        specs = {spec.key: spec for spec in config.services if spec.key in self._by_service}
        for service in list(self._by_service):
            vs = kernel.get(service)
            live = vs.dest_map() if vs else {}
            spec = specs.get(service)
            wanted = {server.key for server in spec.servers} if spec else set()
            drains = self._by_service[service]
            for key, drain in list(drains.items()):
                reason = _over(service, key, live.get(key), wanted, drain, now)
                if reason is not None:
                    del drains[key]
                    log.info("drain_end", service=str(service), server=str(key), reason=reason)
            if not drains:
                del self._by_service[service]


def _over(service: ServiceKey, key: DestKey, dest: Dest | None, configured: Collection[DestKey],
          drain: Drain, now: float) -> str | None:
    if key in configured:
        return "back in config"
    if dest is None:
        return "gone"
    if service.protocol is Protocol.UDP:
        return "udp"
    if dest.stats.active + dest.stats.inactive == 0:
        return "idle"
    if now >= drain.deadline:
        return "drain_timeout"
    return None


def unconfigured_steps(config: Config, actual: Table,
                       managed: Collection[ServiceKey]) -> Steps[list[tuple[ServiceKey, Dest]]]:
    """The servers in the kernel that ``config`` no longer names, in services that were
    ``managed`` before and still are (to drain), a step per service (``lvsd.pacing``)."""
    kernel = actual.by_key()
    found: list[tuple[ServiceKey, Dest]] = []
    for spec in config.services:
        yield None
        vs = kernel.get(spec.key)
        if spec.key not in managed or vs is None:
            continue
        keep = {s.key for s in spec.servers}
        if spec.sorry_server is not None:
            keep.add(spec.sorry_server.key)
        found.extend((spec.key, dest) for dest in vs.dests if dest.key not in keep)
    return found
