"""The planner's property on the real kernel: for random desired and actual tables,
applying plan(desired, actual, owned) makes the kernel equal desired on the services lvsd
manages, leaves the foreign ones untouched, and the next plan is empty."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, assume, given, settings

from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.model import Address, DeleteService, ServiceKey, Table
from lvsd.reconcile import plan
from tests.unit.test_reconcile_properties import part, scenarios


def kernel_accepts(address: Address) -> bool:
    """The kernel refuses multicast, broadcast, unspecified, v4-mapped and link-local
    destinations, and turns local ones into LOCALNODE forwarding: the property is about
    planning, so those are left to the netlink tests."""
    special = (address.is_multicast or address.is_unspecified or address.is_loopback
               or address.is_link_local or address.is_reserved)
    if isinstance(address, IPv6Address):
        return not (special or address.ipv4_mapped is not None)
    return not (special or address == IPv4Address("255.255.255.255"))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])  # assume(): kernel-valid only
@given(scenario=scenarios())
async def test_plan_applied_to_the_kernel_reaches_desired_and_spares_foreign(
        ipvs: NetlinkIpvs, kernel_schedulers: Sequence[str],
        scenario: tuple[Table, Table, set[ServiceKey]]) -> None:
    desired, actual, owned = scenario
    services = (*desired.services, *actual.services)
    assume(all(vs.service.scheduler in kernel_schedulers for vs in services))
    assume(all(kernel_accepts(d.key.address) for vs in services for d in vs.dests))
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
