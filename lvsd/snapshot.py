"""What the daemon knows at one moment, as plain frozen data for /status, /metrics and the page.

``build_snapshot`` makes one from the owners' read-only views; readers never see half an
update and never touch the daemon's mutable state. Times are wall-clock seconds since the epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from lvsd.model import Address, Dest, DestKey, Service, ServiceKey, Table, VirtualService

if TYPE_CHECKING:
    from lvsd.consistent import MhTableStatus
    from lvsd.health import HealthState, Status
    from lvsd.overrides import Override
    from lvsd.probe import CheckKey
    from lvsd.reconcile import ServiceDecision
    from lvsd.spec import Config, QuorumRule, ServerRef
    from lvsd.splitbrain.book import VipStatus

Health = Literal["up", "down", "unknown", "unchecked"]
Role = Literal["real", "sorry", "draining"]


@dataclass(frozen=True, slots=True)
class LastProbe:
    ok: bool
    reason: str
    latency: float  # seconds
    at: float  # wall time the probe finished


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What a server's agent last said (``lvsd.checks.agent``)."""

    answering: bool  # False: no answer (yet, or ``fall`` failures in a row): health alone
    state: str  # "75% drain", "up", "no answer"
    line: str = ""  # the agent's last line, as it sent it
    percent: int | None = None
    command: str | None = None  # "up", "drain", "down"
    since: float | None = None  # when ``state`` became what it is
    error: str | None = None  # why the last probe failed, if it did


@dataclass(frozen=True, slots=True)
class ServerStatus:
    key: DestKey
    role: Role
    configured_weight: int  # 0 for a server being drained
    kernel: Dest | None  # the live destination with its counters; None when not in the kernel
    health: Health
    disabled: bool = False
    check_type: str | None = None
    last_probe: LastProbe | None = None
    health_since: float | None = None  # when ``health`` last changed
    drain_deadline: float | None = None  # set while being drained
    health_reason: str | None = None  # why ``health`` is what it is, from the deciding check
    admin: Override | None = None  # what an operator set with ``lvsd ctl``; None: nothing
    slow_start_until: float | None = None  # set while ramping up after coming back
    slow_start_share: float | None = None  # the share of its weight the ramp gives it now
    agent: AgentStatus | None = None  # set when the server has an agent

    @property
    def kernel_weight(self) -> int | None:
        return None if self.kernel is None else self.kernel.weight


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    key: ServiceKey
    name: str
    kernel: Service | None  # the live service with its counters; None when not in the kernel
    servers: tuple[ServerStatus, ...]
    quorum: int
    healthy_weight: int
    below_quorum: bool
    sorry_active: bool
    fail_open_active: bool


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    ok: bool
    at: float
    error: str | None = None  # why the last reload failed (the old config keeps running)
    problems: tuple[str, ...] = ()  # every problem of a rejected config


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Is the kernel table what lvsd last planned? For /status and the metrics."""

    in_sync: bool = False
    consecutive_failures: int = 0  # failed passes in a row
    failed_passes: int = 0  # since start
    last_error: str | None = None  # why the last pass failed
    dumped_at: float = 0.0  # wall time of the last dump, 0 before the first


@dataclass(frozen=True, slots=True)
class ProbingStatus:
    """How late the probe engine ran over its last window: lvsd's own lateness, not the
    servers'. While ``overloaded``, failures of probes started late are ``inconclusive``:
    counted, never held against their servers."""

    overloaded: bool = False
    window: float = 0.0  # seconds the figures cover; 0 before the first window closed
    probes: int = 0
    late: int = 0  # started later than their late bound (their timeout, or half the interval)
    inconclusive: int = 0
    max_lateness: float = 0.0  # seconds
    max_loop_stall: float = 0.0  # seconds: the longest event-loop stall the runner saw


@dataclass(frozen=True, slots=True)
class VipAnnouncement:
    """One VIP of ``[announce]``: is its route in lvsd's table, and why."""

    vip: Address
    rule: QuorumRule
    announced: bool  # lvsd's decision
    in_kernel: bool  # the route was in the table at the last pass
    reason: str
    since: float | None  # wall time of the last change


@dataclass(frozen=True, slots=True)
class AnnounceStatus:
    table: int
    protocol: int
    hold_down: float
    withdraw_on_stop: bool
    vips: tuple[VipAnnouncement, ...]
    last_error: str | None = None  # why the last pass failed to make the table match


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: tuple[ServiceStatus, ...]
    foreign: tuple[VirtualService, ...]  # in the kernel, not lvsd's: exported, never changed
    taken_at: float
    ready: bool  # config loaded and the first reconcile done
    config_source: str
    last_reload: ReloadStatus | None = None
    kernel_version: str = ""
    sync: SyncStatus = SyncStatus()
    probing: ProbingStatus = ProbingStatus()
    mh_tables: tuple[MhTableStatus, ...] = ()  # the consistent-hash services
    vips: tuple[VipStatus, ...] = ()  # the VIPs this director holds, and their conflicts
    # The director pair: {"role": …, "sync_daemons": …}, JSON-ready, from their owners.
    director: Mapping[str, object] | None = None
    announce: AnnounceStatus | None = None  # with [announce]


EMPTY_SNAPSHOT = Snapshot((), (), 0.0, False, "")


class HealthView(Protocol):
    """What a snapshot reads of the health book."""

    def checks_of(self, ref: ServerRef) -> tuple[CheckKey, ...]: ...

    def state(self, key: CheckKey) -> HealthState: ...

    def status(self, ref: ServerRef) -> Status: ...

    def last_probe(self, key: CheckKey) -> LastProbe | None: ...


class AgentView(Protocol):
    def status(self, ref: ServerRef) -> AgentStatus | None: ...


class RampView(Protocol):
    def ramp(self, ref: ServerRef) -> tuple[float, float] | None:
        """(wall time the ramp ends, the share now) while the server ramps."""
        ...


class Draining(Protocol):
    """A server being drained, as a snapshot reads it."""

    @property
    def dest(self) -> Dest: ...

    @property
    def deadline_wall(self) -> float: ...


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    ready: bool
    last_reload: ReloadStatus | None
    kernel_version: str
    sync: SyncStatus
    probing: ProbingStatus = ProbingStatus()
    announce: AnnounceStatus | None = None


def build_snapshot(
    *,
    config: Config,
    kernel: Table,
    health: HealthView,
    draining: Callable[[ServiceKey], Sequence[Draining]],
    decisions: Mapping[ServiceKey, ServiceDecision],
    probe_services: Collection[ServiceKey],
    status: DaemonStatus,
    admin: Callable[[ServerRef], Override] | None = None,
    agents: AgentView | None = None,
    ramps: RampView | None = None,
) -> Snapshot:
    """The snapshot of ``config`` over ``kernel`` (lvsd's view of it); ``probe_services`` are
    lvsd's own DR-probe services, shown neither as configured nor as foreign."""
    live_services = kernel.by_key()
    services: list[ServiceStatus] = []
    for spec in config.services:
        vs = live_services.get(spec.key)
        live = vs.dest_map() if vs is not None else {}
        servers = [_server_status(health, (spec.key, server.key), server.dest, server.disabled,
                                  live.get(server.key), admin)
                   for server in spec.servers]
        if agents is not None or ramps is not None:
            servers = [_standing_status(status, (spec.key, status.key), agents, ramps)
                       for status in servers]
        if spec.sorry_server is not None:
            sorry = spec.sorry_server
            servers.append(ServerStatus(sorry.key, "sorry", sorry.weight, live.get(sorry.key),
                                        "unchecked"))
        servers.extend(
            ServerStatus(drain.dest.key, "draining", 0, live.get(drain.dest.key), "unchecked",
                         drain_deadline=drain.deadline_wall)
            for drain in draining(spec.key)
        )
        decision = decisions.get(spec.key)
        services.append(ServiceStatus(
            spec.key, spec.name, vs.service if vs else None, tuple(servers), spec.quorum,
            decision.healthy_weight if decision else 0,
            decision.below_quorum if decision else False,
            decision.sorry_active if decision else False,
            decision.fail_open_active if decision else False,
        ))
    configured = {spec.key for spec in config.services}
    foreign = tuple(vs for vs in kernel.services
                    if vs.key not in configured and vs.key not in probe_services)
    return Snapshot(tuple(services), foreign, status.sync.dumped_at, status.ready,
                    config.source, status.last_reload, status.kernel_version, status.sync,
                    status.probing, announce=status.announce)


def _server_status(health: HealthView, ref: ServerRef, dest: Dest, disabled: bool,
                   live: Dest | None,
                   admin: Callable[[ServerRef], Override] | None) -> ServerStatus:
    override = None if admin is None else admin(ref)
    if override is not None and override.empty:
        override = None
    keys = health.checks_of(ref)
    if not keys:
        return ServerStatus(dest.key, "real", dest.weight, live, "unchecked", disabled,
                            admin=override)
    states = [(key, health.state(key)) for key in keys]
    # What explains the server's status: the first check that is not up, else the latest.
    deciding = next((pair for pair in states if not pair[1].up),
                    max(states, key=lambda pair: pair[1].since))
    return ServerStatus(
        dest.key, "real", dest.weight, live, health.status(ref).value, disabled,
        ", ".join(key.spec.type for key in keys), health.last_probe(deciding[0]),
        deciding[1].since, health_reason=deciding[1].reason, admin=override,
    )


def _standing_status(status: ServerStatus, ref: ServerRef, agents: AgentView | None,
                     ramps: RampView | None) -> ServerStatus:
    agent = agents.status(ref) if agents is not None else None
    ramp = ramps.ramp(ref) if ramps is not None else None
    if agent is None and ramp is None:
        return status
    if ramp is None:
        return dataclasses.replace(status, agent=agent)
    return dataclasses.replace(status, agent=agent, slow_start_until=ramp[0],
                               slow_start_share=round(ramp[1], 4))


def shows_the_same(built: Table, dumped: Table) -> bool:
    """Whether a snapshot built over ``built`` shows ``dumped`` as well: the same services
    and destinations in the same order, counters included (``==`` on the model leaves the
    counters out)."""
    if built.timeouts != dumped.timeouts or len(built.services) != len(dumped.services):
        return False
    for old, new in zip(built.services, dumped.services, strict=True):
        if (old.service != new.service or old.service.stats != new.service.stats
                or len(old.dests) != len(new.dests)):
            return False
        for old_dest, new_dest in zip(old.dests, new.dests, strict=True):
            if old_dest != new_dest or old_dest.stats != new_dest.stats:
                return False
    return True


class SnapshotSource(Protocol):
    """What the HTTP API reads: the latest snapshot, refreshed from the kernel when stale;
    ``ready`` without building one (/readyz is polled, a snapshot at 10,000 servers is not
    free)."""

    @property
    def ready(self) -> bool: ...

    def snapshot(self) -> Snapshot: ...

    def fresh_snapshot(self, max_age: float) -> Awaitable[Snapshot]: ...
