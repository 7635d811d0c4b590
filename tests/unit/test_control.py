"""The control API over a real unix socket, in front of a daemon on the in-memory backend.

Requests go through ``lvsd ctl``'s own client; the kernel is the fake backend, so these pin
validation, the overrides owner's persistence, SO_PEERCRED refusal and serialisation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lvsd.checks.manual import ManualRunner
from lvsd.cli_ctl import ControlClient
from lvsd.config import load
from lvsd.control import (
    ControlServer,
    create_control_app,
    start_control,
)
from lvsd.daemon import Daemon
from lvsd.ipvs.fake import FakeIpvs
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
API = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 8080)
RS1 = DestKey(parse_address("192.0.2.11"), 80)
RS2 = DestKey(parse_address("192.0.2.12"), 80)
RS1_API = DestKey(parse_address("192.0.2.11"), 8080)


def config_text(state_dir: Path, extra: str = "") -> str:
    return f"""
[daemon]
state_dir = "{state_dir}"
reconcile_delay = 0
{extra}

[[services]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "rr"
[[services.real_servers]]
address = "192.0.2.11"
weight = 10
[[services.real_servers]]
address = "192.0.2.12"
weight = 10

[[services]]
name = "api"
address = "192.0.2.100"
port = 8080
scheduler = "rr"
[[services.real_servers]]
address = "192.0.2.11"
weight = 5
"""


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "lvsd.toml"
        self.config_path.write_text(config_text(tmp_path / "state"))
        self.socket = tmp_path / "run" / "lvsd.sock"
        self.backend = FakeIpvs()
        self.daemon: Daemon | None = None
        self.server: ControlServer | None = None

    async def start(self, gid: int | None = None) -> Daemon:
        self.daemon = Daemon(load(self.config_path), self.backend,
                             config_path=self.config_path, runner=ManualRunner)
        await self.daemon.start()
        self.server = await start_control(create_control_app(self.daemon, gid), self.socket,
                                          gid)
        return self.daemon

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon = None

    async def call(self, path: str, body: dict[str, Any] | None = None,
                   method: str = "POST") -> tuple[int, dict[str, Any]]:
        async with ControlClient(self.socket) as client:
            return await client.call(method, path, body)

    def weights(self, key: ServiceKey = WEB) -> dict[str, int]:
        entry = self.backend.table.entries.get(key)
        return {} if entry is None else {str(k): d.weight for k, d in entry.dests.items()}

    def state_overrides(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.tmp_path / "state" / "state.json").read_text())
        overrides: dict[str, Any] = data["overrides"]
        return overrides


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    made = Setup(tmp_path)
    yield made
    await made.stop()


async def test_drain_sets_weight_zero_keeps_the_server_and_answers_with_the_kernel_weight(
        setup: Setup) -> None:
    await setup.start()
    status, answer = await setup.call("/admin", {"action": "drain", "service": "web",
                                                 "server": "192.0.2.11:80"})
    assert status == 200, answer
    assert answer["servers"] == [{
        "service": "web", "service_key": str(WEB), "server": "192.0.2.11:80", "changed": True,
        "admin": {"state": "drained", "weight": None, "weight_until": None},
        "kernel_weight": 0}]
    assert setup.weights() == {"192.0.2.11:80": 0, "192.0.2.12:80": 10}
    status, answer = await setup.call("/admin", {"action": "undrain", "service": "web",
                                                 "server": "192.0.2.11"})
    assert status == 200, answer
    assert setup.weights() == {"192.0.2.11:80": 10, "192.0.2.12:80": 10}
    assert setup.state_overrides()["servers"] == []
