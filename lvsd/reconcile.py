"""The planner: pure functions from (desired, actual, owned) to the operations that join them.

``plan`` is level-triggered: it looks only at the two tables, never at how they came to differ,
so one pass repairs a health change, a reload and an ``ipvsadm -C`` behind our back alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lvsd.health import Status
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Forward,
    Op,
    Service,
    ServiceKey,
    SetTimeouts,
    Table,
    VirtualService,
)
from lvsd.spec import Config, ServerSpec, ServiceSpec


def plan(desired: Table, actual: Table, owned: Iterable[ServiceKey] = ()) -> list[Op]:
    """Operations that turn the owned part of ``actual`` into ``desired``.

    Every service in ``desired`` is managed (adopted if it already exists). A service only in
    ``actual`` is deleted when it is in ``owned``, and left alone otherwise. Changed attributes
    are edits in place, never delete + add, so established connections and counters survive.
    Order: destination deletes, service deletes, service adds and edits, destination adds and
    edits; within a service, destinations follow the desired order.
    """
    actual_by_key = actual.by_key()
    desired_keys = {vs.key for vs in desired.services}
    owned_keys = set(owned)

    dest_deletes: list[Op] = []
    service_deletes: list[Op] = []
    service_writes: list[Op] = []
    dest_writes: list[Op] = []

    for vs in actual.services:
        if vs.key not in desired_keys and vs.key in owned_keys:
            service_deletes.append(DeleteService(vs.key))

    for want in desired.services:
        have = actual_by_key.get(want.key)
        if have is None:
            service_writes.append(AddService(want.service))
            dest_writes.extend(AddDest(want.key, d) for d in want.dests)
            continue
        if have.service != want.service:
            service_writes.append(EditService(want.service))
        have_dests = have.dest_map()
        want_keys = {d.key for d in want.dests}
        dest_deletes.extend(
            DeleteDest(want.key, d.key) for d in have.dests if d.key not in want_keys
        )
        for dest in want.dests:
            current = have_dests.get(dest.key)
            if current is None:
                dest_writes.append(AddDest(want.key, dest))
            elif current != dest:
                dest_writes.append(EditDest(want.key, dest))

    ops: list[Op] = [*dest_deletes, *service_deletes, *service_writes, *dest_writes]
    if desired.timeouts is not None and desired.timeouts != actual.timeouts:
        ops.append(SetTimeouts(desired.timeouts))
    return ops


# --- desired state: config + health -> the table lvsd wants ----------------------------------


@dataclass(frozen=True, slots=True)
class ServiceDecision:
    """Why a service's destinations are what they are: for logs, /status and metrics."""

    healthy_weight: int
    below_quorum: bool
    sorry_active: bool
    fail_open_active: bool


HealthOf = Callable[[ServiceSpec, ServerSpec], Status]


def dr_probe_marks(config: Config) -> dict[tuple[ServiceKey, DestKey], int]:
    """The fwmark of each (service, server) whose check runs through the DR path.

    Each gets a one-server fwmark service so that a probe socket marked with it is forwarded by
    IPVS to exactly that server, addressed to the VIP. Marks are numbered in config order.
    """
    marks: dict[tuple[ServiceKey, DestKey], int] = {}
    mark = config.daemon.dr_check_mark_base
    for spec in config.services:
        for server in spec.servers:
            if server.check is not None and server.check.dr_path:
                marks[(spec.key, server.key)] = mark
                mark += 1
    return marks


def desired_service(
    spec: ServiceSpec, health: HealthOf, draining: Sequence[Dest] = ()
) -> tuple[VirtualService, ServiceDecision]:
    status = {
        server.key: Status.UP if server.check is None else health(spec, server)
        for server in spec.servers
    }
    serving = [s for s in spec.servers if not s.disabled and status[s.key] is Status.UP]
    healthy_weight = sum(s.dest.weight for s in serving)
    below_quorum = healthy_weight < spec.quorum
    sorry_active = below_quorum and spec.sorry_server is not None
    fail_open_active = not serving and spec.fail_open and not sorry_active
    if fail_open_active:
        serving = [s for s in spec.servers if not s.disabled]
    if sorry_active:
        serving = []
    in_rotation = {s.key for s in serving}

    dests: list[Dest] = []
    for server in spec.servers:
        if server.key in in_rotation:
            dests.append(server.dest)
        elif server.disabled or spec.on_failure == "weight0":
            dests.append(server.dest.with_weight(0))
    if sorry_active and spec.sorry_server is not None:
        dests.append(spec.sorry_server)
    configured = {d.key for d in dests}
    dests.extend(d.with_weight(0) for d in draining if d.key not in configured)
    decision = ServiceDecision(healthy_weight, below_quorum, sorry_active, fail_open_active)
    return VirtualService(spec.service, tuple(dests)), decision


def desired(
    config: Config,
    health: HealthOf,
    draining: Mapping[ServiceKey, Sequence[Dest]] | None = None,
) -> tuple[Table, dict[ServiceKey, ServiceDecision]]:
    """The table lvsd wants: every configured service, each server at its configured weight
    while healthy, out of rotation (weight 0 or absent, per service) otherwise, plus the
    servers being drained (weight 0) and the per-server fwmark services of DR-path checks."""
    draining = draining or {}
    services: list[VirtualService] = []
    decisions: dict[ServiceKey, ServiceDecision] = {}
    for spec in config.services:
        vs, decisions[spec.key] = desired_service(spec, health, draining.get(spec.key, ()))
        services.append(vs)
    for (service_key, dest_key), mark in dr_probe_marks(config).items():
        probe_key = ServiceKey.mark(mark, service_key.family)
        probe = Service(probe_key, "rr")
        services.append(VirtualService(probe, (Dest(dest_key, weight=1, forward=Forward.ROUTE),)))
    return Table(tuple(services), config.timeouts), decisions
