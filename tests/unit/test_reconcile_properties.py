"""Planner properties over random tables: apply(plan) reaches desired on the owned part,
never touches the foreign part, and the next plan is empty. The same property runs against
the real kernel in tests/integration/test_plan_kernel.py."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.ipvs.memory import MemoryTable
from lvsd.model import (
    AddService,
    DeleteDest,
    DeleteService,
    Op,
    ServiceKey,
    Table,
    VirtualService,
)
from lvsd.reconcile import plan
from tests.strategies import service_keys, tables

KEY_POOL = st.lists(service_keys(), min_size=1, max_size=6, unique=True)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Table, Table, set[ServiceKey]]:
    """(desired, actual, owned) that overlap: actual holds changed copies of desired services
    (weights, attributes, missing and extra destinations) beside services of its own."""
    pool = draw(KEY_POOL)
    keys = st.sampled_from(pool)
    desired = draw(tables(keys=keys, with_timeouts=True))
    other = draw(tables(keys=keys, with_timeouts=True))
    services: dict[ServiceKey, VirtualService] = {vs.key: vs for vs in other.services}
    for vs in desired.services:
        if draw(st.booleans()):
            kept = [d for d in vs.dests if draw(st.booleans())]
            changed = [d.with_weight(draw(st.integers(0, 65535))) if draw(st.booleans()) else d
                       for d in kept]
            extra = services[vs.key].dests if vs.key in services else ()
            taken = {d.key for d in changed}
            service = vs.service
            if draw(st.booleans()):
                service = replace(service, scheduler=draw(st.sampled_from(("rr", "wlc", "sh"))),
                                  sched_flags=0)
            services[vs.key] = VirtualService(
                service, tuple(changed) + tuple(d for d in extra if d.key not in taken))
    actual = Table(tuple(services.values()), other.timeouts)
    owned = {k for k in services if draw(st.booleans())}
    return desired, actual, owned


def part(table: Table, keys: set[ServiceKey]) -> Table:
    """The services of ``table`` named by ``keys``, timeouts aside."""
    return Table(table.only(keys).services)


def run(actual: Table, ops: list[Op]) -> Table:
    memory = MemoryTable.from_table(actual)
    for op in ops:
        memory.execute(op)  # raises if the kernel would refuse an op
    return memory.to_table()


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_plan_reaches_desired_spares_foreign_and_is_idempotent(
        scenario: tuple[Table, Table, set[ServiceKey]]) -> None:
    desired, actual, owned = scenario
    ops = plan(desired, actual, owned)
    after = run(actual, ops)
    desired_keys = {vs.key for vs in desired.services}

    assert part(after, desired_keys) == Table(desired.services)
    foreign = {vs.key for vs in actual.services} - owned - desired_keys
    assert part(after, foreign) == part(actual, foreign)
    gone = (owned - desired_keys) & {vs.key for vs in actual.services}
    assert not gone & {vs.key for vs in after.services}
    if desired.timeouts is not None:
        assert after.timeouts == desired.timeouts
    assert plan(desired, after, owned | desired_keys) == []


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_plan_edits_in_place_rather_than_recreating(
        scenario: tuple[Table, Table, set[ServiceKey]]) -> None:
    desired, actual, owned = scenario
    ops = plan(desired, actual, owned)
    present = {vs.key for vs in actual.services}
    assert not any(isinstance(op, AddService) and op.service.key in present for op in ops)
    deleted = {op.key for op in ops if isinstance(op, DeleteService)}
    assert deleted <= owned
    for op in ops:
        if isinstance(op, DeleteDest):
            want = desired.by_key().get(op.service)
            assert want is None or op.dest not in want.dest_map()
