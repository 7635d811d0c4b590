"""Director pairs in the kernel (issue 12): the pair lab, its flow harness, IPVS connection sync.

One lab (client, router, d1, d2, three DR real servers, keepalived -P moving the VIP) is shared
by the module; each test puts the directors back as it found them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.pairlab import (
    ECHO_PORT,
    REAL_SERVERS,
    VIP,
    FlowHarness,
    PairLab,
    pair_lab,
)


@pytest.fixture(scope="module")
def lab() -> Iterator[PairLab]:
    with pair_lab() as lab:
        lab.start_keepalived()
        yield lab


def program_by_hand(lab: PairLab, *, sync: bool) -> None:
    rules = f"-A -t {VIP}:{ECHO_PORT} -s rr\n" + "".join(
        f"-a -t {VIP}:{ECHO_PORT} -r {rs}:{ECHO_PORT} -g -w 1\n" for rs in REAL_SERVERS)
    for director in lab.directors:
        director.ns.run("ipvsadm", "-C")
        director.ns.run("ipvsadm", "-R", stdin=rules)
        for state in ("master", "backup"):
            director.ns.run("ipvsadm", "--stop-daemon", state, check=False)
            if sync:
                director.ns.run("ipvsadm", "--start-daemon", state, "--mcast-interface", "eth0",
                                "--syncid", "1")
    lab.sync_sysctls()


@pytest.mark.parametrize("sync", [True, False])
async def test_smoke_ipvsadm_pair_keeps_flows_with_sync_and_loses_them_without(
        lab: PairLab, sync: bool) -> None:
    program_by_hand(lab, sync=sync)
    await lab.wait_master(lab.d1)
    flows = FlowHarness(lab, 20)
    await flows.open()
    await flows.wait_echoed(10, 10)  # > 2 s: the sync buffers went out
    lab.die_silently(lab.d1)
    try:
        report = await flows.finish(run_for=4.0)
    finally:
        lab.revive(lab.d1)
    print(report)
    if sync:
        assert report.lost == [], report
    else:
        assert len(report.lost) > 15, report
    await lab.wait_master(lab.d1)
