"""The planner: pure functions from (desired, actual, owned) to the operations that join them.

``plan`` is level-triggered: it looks only at the two tables, never at how they came to differ,
so one pass repairs a health change, a reload and an ``ipvsadm -C`` behind our back alike.
The daemon's two planning paths are ``full_plan`` (every service, against a fresh dump) and
``dirty_plan`` (the services whose health changed, against lvsd's view of the kernel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, assert_never

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
    """Why a service's destinations are what they are: for logs, /status and metrics; and
    which servers serve, so that a pass over a few servers of it (``server_plan``) can carry
    the rest over."""

    healthy_weight: int
    below_quorum: bool
    sorry_active: bool
    fail_open_active: bool
    serving: frozenset[DestKey] = frozenset()


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


def worth_of_server(spec: ServiceSpec, server: ServerSpec, health: HealthOf,
                    standing: StandingOf | None = None) -> Effective:
    """What one server of the service is worth (``lvsd.weight``)."""
    return effective(
        server.dest.weight,
        healthy=health(spec, server) is Status.UP if server.checks else True,
        standing=standing(spec, server) if standing is not None else NO_STANDING,
        disabled=server.disabled,
    )


def worth_of(spec: ServiceSpec, health: HealthOf,
             standing: StandingOf | None = None) -> dict[DestKey, Effective]:
    """What each server of the service is worth (``lvsd.weight``)."""
    return {server.key: worth_of_server(spec, server, health, standing)
            for server in spec.servers}


def meets_quorum(spec: ServiceSpec, health: HealthOf,
                 standing: StandingOf | None = None) -> bool:
    """Whether the serving servers' configured weights add up to the service's quorum (the
    healthy weight ``desired_service`` compares with it)."""
    worth = worth_of(spec, health, standing)
    return sum(s.dest.weight for s in spec.servers if worth[s.key].serving) >= spec.quorum


def placed(spec: ServiceSpec, server: ServerSpec, worth: Effective,
           in_rotation: bool) -> Dest | None:
    """The server's destination in the kernel table (None: not in it)."""
    if in_rotation:
        return server.dest.with_weight(
            worth.weight if worth.role is Role.SERVING else server.dest.weight)
    if (worth.role is Role.DRAINED or (worth.role is not Role.OUT and spec.on_failure == "weight0")
            or spec.consistent_hash):  # mh: membership must not depend on this director
        return server.dest.with_weight(0)
    return None


def desired_service(
    spec: ServiceSpec, health: HealthOf, draining: Sequence[Dest] = (),
    standing: StandingOf | None = None,
) -> tuple[VirtualService, ServiceDecision]:
    worth = [worth_of_server(spec, server, health, standing) for server in spec.servers]
    serving: list[DestKey] = []
    healthy_weight = 0
    for server, w in zip(spec.servers, worth, strict=True):
        if w.role is Role.SERVING:
            serving.append(server.key)
            healthy_weight += server.dest.weight
    below_quorum = healthy_weight < spec.quorum
    sorry_active = below_quorum and spec.sorry_server is not None
    fail_open_active = not serving and spec.fail_open and not sorry_active

    dests: list[Dest] = []
    for server, w in zip(spec.servers, worth, strict=True):
        if sorry_active:
            in_rotation = False
        elif fail_open_active:
            in_rotation = w.role is Role.DOWN
        else:
            in_rotation = w.role is Role.SERVING
        if (dest := placed(spec, server, w, in_rotation)) is not None:
            dests.append(dest)
    if sorry_active and spec.sorry_server is not None:
        dests.append(spec.sorry_server)
    if draining:
        configured = {d.key for d in dests}
        dests.extend(d.with_weight(0) for d in draining if d.key not in configured)
    decision = ServiceDecision(healthy_weight, below_quorum, sorry_active, fail_open_active,
                               frozenset(serving))
    listed = canonical_order(dests) if spec.consistent_hash else tuple(dests)
    return VirtualService(spec.service, listed), decision


def server_plan(
    spec: ServiceSpec, changed: Iterable[ServerSpec], previous: ServiceDecision,
    health: HealthOf, have: Callable[[DestKey], Dest | None],
    standing: StandingOf | None = None,
) -> tuple[list[Op], ServiceDecision] | None:
    """The ops for the ``changed`` servers of a service planned whole before (``previous``,
    its decision then), each against the kernel's ``have``: O(changed servers), whatever the
    size of the service. None where the change may move other servers too (a sorry server or
    fail-open in force before or after, consistent hashing): plan the service whole."""
    if spec.consistent_hash or previous.sorry_active or previous.fail_open_active:
        return None
    placements: list[tuple[ServerSpec, Effective]] = []
    joined: list[DestKey] = []
    left: list[DestKey] = []
    healthy_weight = previous.healthy_weight
    for server in changed:
        worth = worth_of_server(spec, server, health, standing)
        placements.append((server, worth))
        was = server.key in previous.serving
        if worth.serving and not was:
            joined.append(server.key)
            healthy_weight += server.dest.weight
        elif was and not worth.serving:
            left.append(server.key)
            healthy_weight -= server.dest.weight
    serving = (previous.serving.difference(left).union(joined) if joined or left
               else previous.serving)
    below_quorum = healthy_weight < spec.quorum
    if (below_quorum and spec.sorry_server is not None) or (not serving and spec.fail_open):
        return None
    ops: list[Op] = []
    for server, worth in placements:
        want = placed(spec, server, worth, worth.serving)
        current = have(server.key)
        if want is None:
            if current is not None:
                ops.append(DeleteDest(spec.key, server.key))
        elif current is None:
            ops.append(AddDest(spec.key, want))
        elif current != want:
            ops.append(EditDest(spec.key, want))
    return ops, ServiceDecision(healthy_weight, below_quorum, False, False, serving)


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


class ViewOf(Protocol):
    """lvsd's view of the kernel table (``lvsd.kernelview.KernelView``)."""

    def service(self, key: ServiceKey) -> VirtualService | None: ...

    def dest(self, key: ServiceKey, dest_key: DestKey) -> Dest | None: ...

    def has_service(self, key: ServiceKey) -> bool: ...


def dirty_plan(
    specs: Iterable[ServiceSpec],
    health: HealthOf,
    draining: Mapping[ServiceKey, Sequence[Dest]],
    view: ViewOf,
    owned: Collection[ServiceKey],
    standing: StandingOf | None = None,
    hashing: Hashing = NO_HASHING,
    servers: Mapping[ServiceKey, Collection[ServerSpec]] | None = None,
    previous: Mapping[ServiceKey, ServiceDecision] | None = None,
) -> Plan:
    """``specs`` (the services whose health changed) against lvsd's ``view`` of them.

    A service whose changed servers are all in ``servers`` and that has a ``previous``
    decision is planned for those servers only (``server_plan``), else whole: O(changed
    servers), or O(servers of the changed services), whatever the size of the table."""
    ops: list[Op] = []
    decisions: dict[ServiceKey, ServiceDecision] = {}
    seen: dict[ServerRef, int] = {}
    for spec in specs:
        changed = servers.get(spec.key) if servers is not None else None
        last = previous.get(spec.key) if previous is not None else None
        if (changed is not None and last is not None and spec.key not in hashing
                and not draining.get(spec.key) and view.has_service(spec.key)):
            partial = server_plan(spec, changed, last, health,
                                  functools.partial(view.dest, spec.key), standing)
            if partial is not None:
                ops.extend(partial[0])
                decisions[spec.key] = partial[1]
                continue
        want, decisions[spec.key] = desired_service(spec, health, draining.get(spec.key, ()),
                                                    standing)
        have = view.service(spec.key)
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
