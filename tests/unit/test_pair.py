"""The director-pair owner's start: the role is waited for only where the first pass needs it."""

from __future__ import annotations

import pytest

from lvsd.config import loads
from lvsd.ipvs.memory import MemoryDaemons
from lvsd.metrics import DaemonMetrics
from lvsd.pair import DirectorPair

SERVICE = """
[[services]]
name = "web"
address = "192.0.2.100"
port = 80
real_servers = [{ address = "192.0.2.11" }]
"""


class RecordingRole:
    """Stands in for the rtnetlink watcher: records whether it was waited for or only started."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.role = "unknown"

    async def start(self) -> None:
        self.calls.append("start, waiting for the first dump")

    def watch(self) -> None:
        self.calls.append("watch")


def pair_with(sync: str) -> tuple[DirectorPair, RecordingRole]:
    config = loads(sync + SERVICE)
    pair = DirectorPair(config, MemoryDaemons(), DaemonMetrics())
    role = RecordingRole()
    pair.role = role  # type: ignore[assignment]
    return pair, role


@pytest.mark.parametrize("sync", ["", '[sync]\nmode = "off"\n',
                                  '[sync]\nmode = "both"\ninterface = "eth0"\n',
                                  '[sync]\nmode = "external"\n'])
async def test_a_mode_that_does_not_follow_the_role_starts_watching_only_after_the_first_pass(
        sync: str) -> None:
    pair, role = pair_with(sync)
    await pair.start()
    assert role.calls == []
    pair.watch()
    assert role.calls == ["watch"]


async def test_follow_role_waits_for_the_role_before_the_first_pass() -> None:
    pair, role = pair_with('[sync]\nmode = "follow-role"\ninterface = "eth0"\n')
    await pair.start()
    assert role.calls == ["start, waiting for the first dump"]
