"""The config property on the real kernel: for random configs check-config accepts, the
desired table programs without an error and the kernel reports it back as planned, and
ipvsadm-restore reads lvsd's save file of it and builds the same table."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from lvsd.config import loads
from lvsd.health import Status
from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.ipvsadm.save import format_table
from lvsd.model import DeleteService, Table
from lvsd.reconcile import desired, plan
from tests.integration.conftest import Namespace
from tests.unit.test_config_properties import configs, every, to_toml


async def emptied(ipvs: NetlinkIpvs) -> None:
    current = await ipvs.dump()
    assert await ipvs.apply([DeleteService(vs.key) for vs in current.services]) == []


def services_of(table: Table) -> dict[Any, Any]:
    return {vs.key: (vs.service, set(vs.dests)) for vs in table.services}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=configs(edges=False))
async def test_accepted_configs_program_and_restore_with_ipvsadm(
        ipvs: NetlinkIpvs, netns: Namespace, kernel_schedulers: Sequence[str],
        case: tuple[dict[str, Any], list[str]]) -> None:
    raw, _ = case
    config = loads(to_toml(raw))
    assume(all(spec.service.scheduler in kernel_schedulers for spec in config.services))
    table, _ = desired(config, every(Status.UP))
    await emptied(ipvs)
    assert await ipvs.apply(plan(table, Table())) == []
    programmed = await ipvs.dump()
    assert services_of(programmed) == services_of(table)

    await emptied(ipvs)
    restored = subprocess.run(["ip", "netns", "exec", netns, "ipvsadm-restore"],
                              input=format_table(table), text=True, capture_output=True,
                              timeout=120, check=False)
    assert (restored.returncode, restored.stderr) == (0, ""), format_table(table)
    assert services_of(await ipvs.dump()) == services_of(table)
