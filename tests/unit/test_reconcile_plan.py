"""The planner: minimal, in-place, ownership-respecting, idempotent."""

from __future__ import annotations

from lvsd.ipvs.memory import MemoryTable
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    DestStats,
    EditDest,
    EditService,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    SetTimeouts,
    Table,
    Timeouts,
    VirtualService,
    parse_address,
)
from lvsd.reconcile import plan

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
DNS = ServiceKey.virtual(Protocol.UDP, "192.0.2.100", 53)
FOREIGN = ServiceKey.mark(8)


def dest(last_octet: int, weight: int = 1, port: int = 80) -> Dest:
    return Dest(DestKey(parse_address(f"192.0.2.{last_octet}"), port), weight=weight)


def table(*services: VirtualService) -> Table:
    return Table(services)


def applied(actual: Table, ops: list) -> Table:  # type: ignore[type-arg]
    memory = MemoryTable.from_table(actual)
    for op in ops:
        memory.execute(op)
    return memory.to_table()


def test_empty_kernel_gets_services_then_destinations_in_config_order() -> None:
    want = table(VirtualService(Service(WEB, "rr"), (dest(11), dest(12))))
    ops = plan(want, Table())
    assert ops == [AddService(Service(WEB, "rr")), AddDest(WEB, dest(11)), AddDest(WEB, dest(12))]


def test_a_weight_change_is_one_edit_not_delete_and_add() -> None:
    have = table(VirtualService(Service(WEB, "rr"), (dest(11), dest(12))))
    want = table(VirtualService(Service(WEB, "rr"), (dest(11, weight=0), dest(12))))
    assert plan(want, have, {WEB}) == [EditDest(WEB, dest(11, weight=0))]


def test_scheduler_and_persistence_changes_are_service_edits() -> None:
    have = table(VirtualService(Service(WEB, "rr"), (dest(11),)))
    changed = Service(WEB, "wrr", persistence=Persistence(600))
    want = table(VirtualService(changed, (dest(11),)))
    assert plan(want, have, {WEB}) == [EditService(changed)]


def test_counters_are_not_differences() -> None:
    busy = Dest(dest(11).key, stats=DestStats(active=5, inactive=9))
    have = table(VirtualService(Service(WEB, "rr"), (busy,)))
    want = table(VirtualService(Service(WEB, "rr"), (dest(11),)))
    assert plan(want, have, {WEB}) == []


def test_foreign_services_are_never_touched() -> None:
    foreign = VirtualService(Service(FOREIGN, "wlc"), (dest(50, port=0),))
    have = table(foreign, VirtualService(Service(DNS, "rr"), (dest(11, port=53),)))
    want = Table()
    assert plan(want, have, owned={DNS}) == [DeleteService(DNS)]


def test_removed_destination_of_owned_service_is_deleted() -> None:
    have = table(VirtualService(Service(WEB, "rr"), (dest(11), dest(12))))
    want = table(VirtualService(Service(WEB, "rr"), (dest(12),)))
    assert plan(want, have, {WEB}) == [DeleteDest(WEB, dest(11).key)]


def test_an_existing_service_named_in_desired_is_adopted_not_recreated() -> None:
    have = table(VirtualService(Service(WEB, "rr"), (dest(11),)))
    want = table(VirtualService(Service(WEB, "rr"), (dest(11), dest(12))))
    assert plan(want, have, owned=()) == [AddDest(WEB, dest(12))]


def test_timeouts_are_set_only_when_asked_and_different() -> None:
    have = Table((), Timeouts())
    assert plan(Table((), None), have) == []
    assert plan(Table((), Timeouts(900, 120, 300)), have) == []
    assert plan(Table((), Timeouts(30, 5, 60)), have) == [SetTimeouts(Timeouts(30, 5, 60))]


def test_second_plan_after_applying_the_first_is_empty() -> None:
    have = table(
        VirtualService(Service(WEB, "rr"), (dest(11), dest(13))),
        VirtualService(Service(DNS, "rr"), (dest(11, port=53),)),
    )
    want = table(VirtualService(Service(WEB, "wrr"), (dest(11, weight=3), dest(12))))
    ops = plan(want, have, {WEB, DNS})
    after = applied(have, ops)
    assert Table(after.services) == want
    assert plan(want, after, {WEB, DNS}) == []
