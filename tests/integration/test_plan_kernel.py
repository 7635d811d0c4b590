"""The planner's property on the real kernel: for random desired and actual tables,
applying plan(desired, actual, owned) makes the kernel equal desired on the services lvsd
manages, leaves the foreign ones untouched, and the next plan is empty."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, assume, given, settings

from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.model import DeleteService, ServiceKey, Table
from lvsd.reconcile import plan
from tests.unit.test_reconcile_properties import part, scenarios


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
async def test_plan_applied_to_the_kernel_reaches_desired_and_spares_foreign(
        ipvs: NetlinkIpvs, kernel_schedulers: Sequence[str],
        scenario: tuple[Table, Table, set[ServiceKey]]) -> None:
    desired, actual, owned = scenario
    assume(all(vs.service.scheduler in kernel_schedulers
               for vs in (*desired.services, *actual.services)))
    current = await ipvs.dump()
    assert await ipvs.apply([DeleteService(vs.key) for vs in current.services]) == []
    assert await ipvs.apply(plan(actual, Table())) == []
    before = await ipvs.dump()

    errors = await ipvs.apply(plan(desired, before, owned))
    assert errors == []
    after = await ipvs.dump()
    desired_keys = {vs.key for vs in desired.services}
    assert part(after, desired_keys) == Table(desired.services)
    foreign = {vs.key for vs in actual.services} - owned - desired_keys
    assert part(after, foreign) == part(before, foreign)
    assert not ((owned - desired_keys) & {vs.key for vs in after.services})
    if desired.timeouts is not None:
        assert after.timeouts == desired.timeouts
    assert plan(desired, after, owned | desired_keys) == []
