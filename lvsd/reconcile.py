"""The planner: pure functions from (desired, actual, owned) to the operations that join them.

``plan`` is level-triggered: it looks only at the two tables, never at how they came to differ,
so one pass repairs a health change, a reload and an ``ipvsadm -C`` behind our back alike.
The daemon's two planning paths are ``full_plan`` (every service, against a fresh dump) and
``dirty_plan`` (the services whose health changed, against lvsd's view of the kernel).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import assert_never

from lvsd.consistent import NO_HASHING, Hashing, canonical_order, dest_ops
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
from lvsd.pacing import Steps, finish
from lvsd.spec import Config, ServerRef, ServerSpec, ServiceSpec
from lvsd.weight import NO_STANDING, Effective, Role, Standing, effective


def plan(desired: Table, actual: Table, owned: Iterable[ServiceKey] = (),
         hashing: Hashing = NO_HASHING, seen: dict[ServerRef, int] | None = None) -> list[Op]:
    """Operations that turn the owned part of ``actual`` into ``desired``: ``plan_steps`` at
    once."""
    return finish(plan_steps(desired, actual, owned, hashing, seen))


def plan_steps(desired: Table, actual: Table, owned: Iterable[ServiceKey] = (),
               hashing: Hashing = NO_HASHING,
               seen: dict[ServerRef, int] | None = None) -> Steps[list[Op]]:
    """Operations that turn the owned part of ``actual`` into ``desired``, a step per service
    (``lvsd.pacing``).

    Every service in ``desired`` is managed (adopted if it already exists). A service only in
    ``actual`` is deleted when it is in ``owned``, and left alone otherwise. Changed attributes
    are edits in place, never delete + add, so established connections and counters survive.
    Order: destination deletes, service deletes, service adds and edits, destination adds and
    edits; within a service, destinations follow the desired order.

    The consistent-hash services in ``hashing`` also get the kernel's destination order and
    weight history right (``lvsd.consistent.dest_ops``), which may delete and re-add
    destinations; the non-zero weights their destinations have now go into ``seen``.
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
        yield None
        have = actual_by_key.get(want.key)
        if want.key in hashing:
            if have is None:
                service_writes.append(AddService(want.service))
            elif have.service != want.service:
                service_writes.append(EditService(want.service))
            hashed = dest_ops(want, have, hashing)
            dest_deletes.extend(hashed.deletes)
            dest_writes.extend(hashed.writes)
            if seen is not None:
                seen.update(hashed.seen)
            continue
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
StandingOf = Callable[[ServiceSpec, ServerSpec], Standing]


def dr_checked(config: Config) -> list[ServerRef]:
    """The (service, server)s with a check that runs through the DR path, in config order.

    Each gets a one-server fwmark service (its mark from ``lvsd.marks.ProbeMarks``) so that a
    probe socket marked with it is forwarded by IPVS to exactly that server, addressed to the
    VIP."""
    return finish(dr_checked_steps(config))


def dr_checked_steps(config: Config) -> Steps[list[ServerRef]]:
    """``dr_checked``, a step per service (``lvsd.pacing``)."""
    refs: list[ServerRef] = []
    for spec in config.services:
        yield None
        refs.extend((spec.key, server.key) for server in spec.servers
                    if any(check.dr_path for check in server.checks))
    return refs


def probe_service(ref: ServerRef, mark: int) -> VirtualService:
    service_key, dest_key = ref
    probe = Service(ServiceKey.mark(mark, service_key.family), "rr")
    return VirtualService(probe, (Dest(dest_key, weight=1, forward=Forward.ROUTE),))


def worth_of(spec: ServiceSpec, health: HealthOf,
             standing: StandingOf | None = None) -> dict[DestKey, Effective]:
    """What each server of the service is worth (``lvsd.weight``)."""
    return {
        server.key: effective(
            server.dest.weight,
            healthy=health(spec, server) is Status.UP if server.checks else True,
            standing=standing(spec, server) if standing is not None else NO_STANDING,
            disabled=server.disabled,
        )
        for server in spec.servers
    }


def meets_quorum(spec: ServiceSpec, health: HealthOf,
                 standing: StandingOf | None = None) -> bool:
    """Whether the serving servers' configured weights add up to the service's quorum (the
    healthy weight ``desired_service`` compares with it)."""
    worth = worth_of(spec, health, standing)
    return sum(s.dest.weight for s in spec.servers if worth[s.key].serving) >= spec.quorum


def desired_service(
    spec: ServiceSpec, health: HealthOf, draining: Sequence[Dest] = (),
    standing: StandingOf | None = None,
) -> tuple[VirtualService, ServiceDecision]:
    worth = worth_of(spec, health, standing)
    serving = [s for s in spec.servers if worth[s.key].serving]
    healthy_weight = sum(s.dest.weight for s in serving)
    below_quorum = healthy_weight < spec.quorum
    sorry_active = below_quorum and spec.sorry_server is not None
    fail_open_active = not serving and spec.fail_open and not sorry_active
    if fail_open_active:
        serving = [s for s in spec.servers if worth[s.key].role is Role.DOWN]
    if sorry_active:
        serving = []
    in_rotation = {s.key for s in serving}

    dests: list[Dest] = []
    for server in spec.servers:
        role = worth[server.key].role
        if server.key in in_rotation:
            weight = worth[server.key].weight if role is Role.SERVING else server.dest.weight
            dests.append(server.dest.with_weight(weight))
        elif (role is Role.DRAINED or (role is not Role.OUT and spec.on_failure == "weight0")
              or spec.consistent_hash):  # mh: membership must not depend on this director
            dests.append(server.dest.with_weight(0))
    if sorry_active and spec.sorry_server is not None:
        dests.append(spec.sorry_server)
    configured = {d.key for d in dests}
    dests.extend(d.with_weight(0) for d in draining if d.key not in configured)
    decision = ServiceDecision(healthy_weight, below_quorum, sorry_active, fail_open_active)
    listed = canonical_order(dests) if spec.consistent_hash else tuple(dests)
    return VirtualService(spec.service, listed), decision


def desired(
    config: Config,
    health: HealthOf,
    draining: Mapping[ServiceKey, Sequence[Dest]] | None = None,
    marks: Mapping[ServerRef, int] | None = None,
    standing: StandingOf | None = None,
) -> tuple[Table, dict[ServiceKey, ServiceDecision]]:
    """The table lvsd wants: ``desired_steps`` at once."""
    return finish(desired_steps(config, health, draining, marks, standing))


def desired_steps(
    config: Config,
    health: HealthOf,
    draining: Mapping[ServiceKey, Sequence[Dest]] | None = None,
    marks: Mapping[ServerRef, int] | None = None,
    standing: StandingOf | None = None,
) -> Steps[tuple[Table, dict[ServiceKey, ServiceDecision]]]:
    """The table lvsd wants, a step per service (``lvsd.pacing``): every configured service,
    each server at its effective weight while serving, out of rotation (weight 0 or absent,
    per service) otherwise, plus the servers being drained (weight 0) and the per-server
    fwmark services of DR-path checks (``marks``)."""
    draining = draining or {}
    services: list[VirtualService] = []
    decisions: dict[ServiceKey, ServiceDecision] = {}
    for spec in config.services:
        yield None
        vs, decisions[spec.key] = desired_service(spec, health, draining.get(spec.key, ()),
                                                  standing)
        services.append(vs)
    services.extend(probe_service(ref, mark) for ref, mark in (marks or {}).items())
    return Table(tuple(services), config.timeouts), decisions


# --- the daemon's two planning paths ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """The ops of one pass, why each planned service is as it is, and (full passes) every
    service lvsd wants, which it owns from now on."""

    ops: list[Op]
    decisions: dict[ServiceKey, ServiceDecision]
    wanted: frozenset[ServiceKey] | None = None
    present: frozenset[ServiceKey] = field(default_factory=frozenset)
    seen: dict[ServerRef, int] = field(default_factory=dict)  # consistent-hash weights now


def full_plan(want: Table, decisions: dict[ServiceKey, ServiceDecision], actual: Table,
              owned: Collection[ServiceKey], hashing: Hashing = NO_HASHING) -> Plan:
    """Every service: ``want`` (from ``desired``) against a fresh dump."""
    return finish(full_plan_steps(want, decisions, actual, owned, hashing))


def full_plan_steps(want: Table, decisions: dict[ServiceKey, ServiceDecision], actual: Table,
                    owned: Collection[ServiceKey],
                    hashing: Hashing = NO_HASHING) -> Steps[Plan]:
    """``full_plan``, a step per service (``lvsd.pacing``)."""
    seen: dict[ServerRef, int] = {}
    ops = yield from plan_steps(want, actual, owned, hashing, seen)
    return Plan(ops, decisions, frozenset(vs.key for vs in want.services),
                frozenset(vs.key for vs in actual.services), seen)


def dirty_plan(
    specs: Iterable[ServiceSpec],
    health: HealthOf,
    draining: Mapping[ServiceKey, Sequence[Dest]],
    view: Callable[[ServiceKey], VirtualService | None],
    owned: Collection[ServiceKey],
    standing: StandingOf | None = None,
    hashing: Hashing = NO_HASHING,
) -> Plan:
    """Only ``specs`` (the services whose health changed), each against lvsd's ``view``
    of it: O(servers of those services), whatever the size of the table."""
    ops: list[Op] = []
    decisions: dict[ServiceKey, ServiceDecision] = {}
    seen: dict[ServerRef, int] = {}
    for spec in specs:
        want, decisions[spec.key] = desired_service(spec, health, draining.get(spec.key, ()),
                                                    standing)
        have = view(spec.key)
        ops.extend(plan(Table((want,)), Table(() if have is None else (have,)), owned,
                        hashing, seen))
    return Plan(ops, decisions, seen=seen)


def service_of(op: Op) -> ServiceKey | None:
    """The service an op changes (None for the table-wide timeouts)."""
    match op:
        case AddService(service) | EditService(service):
            return service.key
        case DeleteService(key):
            return key
        case AddDest(key) | EditDest(key) | DeleteDest(key):
            return key
        case SetTimeouts():
            return None
        case _:
            assert_never(op)


def below_quorum(services: Iterable[ServiceSpec],
                 decisions: Mapping[ServiceKey, ServiceDecision]) -> list[str]:
    """The names of the services whose last decision found them below their quorum."""
    return [spec.name for spec in services
            if (decision := decisions.get(spec.key)) is not None and decision.below_quorum]


def owned_after(
    owned: Collection[ServiceKey], done: Plan, failed: Collection[Op]
) -> set[ServiceKey]:
    """lvsd owns what it wants and what it created; it stops owning what it deleted and, after
    a full pass, what is gone from the kernel."""
    deleted = {op.key for op in done.ops if isinstance(op, DeleteService) and op not in failed}
    if done.wanted is None:
        return set(owned) - deleted
    return ((set(owned) | done.wanted) - deleted) & (done.present | done.wanted)
