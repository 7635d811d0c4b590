"""The seeds' direct-routing lab, driven by lvsd's netlink backend against the real kernel."""

from __future__ import annotations

from ipaddress import ip_address
from typing import TYPE_CHECKING

import pytest

from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.model import (
    AddDest,
    AddService,
    Dest,
    DestKey,
    EditDest,
    Forward,
    Protocol,
    Service,
    ServiceKey,
)

if TYPE_CHECKING:
    from conftest import DrLab


@pytest.mark.parametrize("dr_lab", [2, 3], indirect=True)
async def test_rr_alternates_between_real_servers_and_weight_zero_sends_new_connections_elsewhere(
    dr_lab: DrLab,
) -> None:
    key = ServiceKey.virtual(Protocol.TCP, dr_lab.vip, dr_lab.port)
    servers = dr_lab.real_servers
    dests = [Dest(DestKey(ip_address(s.address), dr_lab.port), weight=1, forward=Forward.ROUTE)
             for s in servers]
    rounds = 3
    async with NetlinkIpvs(dr_lab.director) as ipvs:
        ops = [AddService(Service(key, "rr")), *(AddDest(key, d) for d in dests)]
        assert await ipvs.apply(ops) == []

        answers = await dr_lab.fetch(rounds * len(servers))

        # Round robin: every server in turn, in the same order each round.
        first_round = answers[: len(servers)]
        assert sorted(first_round) == sorted(s.label for s in servers), answers
        assert answers == first_round * rounds

        drained = servers[0]
        assert await ipvs.apply([EditDest(key, dests[0].with_weight(0))]) == []

        answers = await dr_lab.fetch(rounds * (len(servers) - 1))

        assert drained.label not in answers, answers
        assert sorted(answers) == sorted([s.label for s in servers[1:]] * rounds), answers
        table = await ipvs.dump()
        vs = table.by_key().get(key)
        assert vs is not None
        by_address = {str(d.key.address): d for d in vs.dests}
        # The weight was changed in place: the drained server still owns its earlier connections.
        assert by_address[drained.address].weight == 0
        stats = by_address[drained.address].stats
        assert stats.active + stats.inactive == rounds
        for other in servers[1:]:
            stats = by_address[other.address].stats
            assert stats.active + stats.inactive == 2 * rounds
