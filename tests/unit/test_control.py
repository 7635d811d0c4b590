"""The control API over a real unix socket, in front of a daemon on the in-memory backend.

Requests go through ``lvsd ctl``'s own client; the kernel is the fake backend, so these pin
validation, the overrides owner's persistence, SO_PEERCRED refusal and serialisation.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lvsd.checks.manual import ManualRunner
from lvsd.cli_ctl import ControlClient, Unreachable
from lvsd.config import load
from lvsd.control import (
    ControlServer,
    ControlSocketError,
    Peer,
    create_control_app,
    refusal,
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
        self.server = await start_control(create_control_app(self.daemon.steering, gid),
                                          self.socket, gid)
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


async def test_host_drains_that_address_in_every_service(setup: Setup) -> None:
    await setup.start()
    status, answer = await setup.call("/admin", {"action": "drain", "host": "192.0.2.11"})
    assert status == 200, answer
    assert {(s["service"], s["server"]) for s in answer["servers"]} == {
        ("web", "192.0.2.11:80"), ("api", "192.0.2.11:8080")}
    assert setup.weights(WEB) == {"192.0.2.11:80": 0, "192.0.2.12:80": 10}
    assert setup.weights(API) == {"192.0.2.11:8080": 0}


async def test_disable_takes_the_server_out_and_enable_puts_it_back(setup: Setup) -> None:
    await setup.start()
    status, answer = await setup.call("/admin", {"action": "disable",
                                                 "service": "tcp:192.0.2.100:80",
                                                 "server": "192.0.2.12:80"})
    assert status == 200, answer
    assert answer["servers"][0]["kernel_weight"] is None
    assert setup.weights() == {"192.0.2.11:80": 10}
    await setup.call("/admin", {"action": "enable", "service": "web", "server": "192.0.2.12"})
    assert setup.weights() == {"192.0.2.11:80": 10, "192.0.2.12:80": 10}


async def test_a_weight_override_replaces_the_configured_weight_until_cleared(
        setup: Setup) -> None:
    await setup.start()
    status, answer = await setup.call("/admin", {"action": "weight", "service": "web",
                                                 "server": "192.0.2.12", "weight": 3})
    assert status == 200 and answer["servers"][0]["kernel_weight"] == 3, answer
    assert setup.weights()["192.0.2.12:80"] == 3
    await setup.call("/admin", {"action": "clear-weight", "service": "web",
                                "server": "192.0.2.12"})
    assert setup.weights()["192.0.2.12:80"] == 10


async def test_a_weight_override_for_a_while_ends_by_itself(setup: Setup) -> None:
    await setup.start()
    status, answer = await setup.call("/admin", {"action": "weight", "service": "web",
                                                 "server": "192.0.2.12", "weight": 3,
                                                 "for": "300ms"})
    assert status == 200, answer
    assert answer["servers"][0]["admin"]["weight_until"] is not None
    assert setup.weights()["192.0.2.12:80"] == 3
    for _ in range(100):
        if setup.weights()["192.0.2.12:80"] == 10:
            break
        await asyncio.sleep(0.05)
    assert setup.weights()["192.0.2.12:80"] == 10
    assert setup.state_overrides()["servers"] == []


BAD_REQUESTS = [
    (b"{not json", 400, "body: not JSON"),
    (b"[1, 2]", 400, "body: expected a JSON object, got list"),
    ({"action": "drain", "service": "web", "server": "192.0.2.11", "colour": "red"}, 400,
     "body.colour: unknown field"),
    ({"action": "explode", "service": "web", "server": "192.0.2.11"}, 400,
     "action: 'explode' is not one of"),
    ({"action": "drain", "service": "nope", "server": "192.0.2.11"}, 404,
     "service: no service 'nope' in the config"),
    ({"action": "drain", "service": "web", "server": "192.0.2.99"}, 404,
     "server: 192.0.2.99 is not a real server of web"),
    ({"action": "drain", "service": "web", "server": "192.0.2.11:81"}, 404,
     "server: 192.0.2.11:81 is not a real server of web"),
    ({"action": "drain", "service": "web", "server": "not-an-address"}, 400,
     "server: not an address or address:port"),
    ({"action": "drain", "service": "web"}, 400, "server: give service and server, or host"),
    ({"action": "drain", "host": "192.0.2.11", "service": "web"}, 400,
     "host: give either host or service and server"),
    ({"action": "drain", "host": "192.0.2.77"}, 404,
     "host: 192.0.2.77 is not a real server of any service"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": 65536}, 400,
     "weight: weight 65536 is out of range 0..65535"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": -1}, 400,
     "weight: weight -1 is out of range 0..65535"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": "5"}, 400,
     "body.weight: expected int, got str"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": True}, 400,
     "body.weight: expected int, got bool"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11"}, 400, "weight: missing"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": 5,
      "for": "forever"}, 400, "for: not a duration: 'forever'"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": 5,
      "for": 0}, 400, "for: 0 is not a duration between 0 and"),
    ({"action": "weight", "service": "web", "server": "192.0.2.11", "weight": 5,
      "for": "9999h"}, 400, "for: '9999h' is not a duration between 0 and"),
    ({"action": "drain", "service": "web", "server": "192.0.2.11", "weight": 5}, 400,
     "weight: only for the weight action, not drain"),
]


@pytest.mark.parametrize(("body", "status", "error"), BAD_REQUESTS,
                         ids=[error.split(":")[0] + f"-{i}"
                              for i, (_, _, error) in enumerate(BAD_REQUESTS)])
async def test_a_bad_request_says_what_is_wrong_and_changes_nothing(
        setup: Setup, body: bytes | dict[str, Any], status: int, error: str) -> None:
    await setup.start()
    state_before = (setup.tmp_path / "state" / "state.json").read_text()
    applied_before = list(setup.backend.applied)
    async with ControlClient(setup.socket) as client:
        if isinstance(body, bytes):
            got, answer = await client.call("POST", "/admin", data=body)
        else:
            got, answer = await client.call("POST", "/admin", body)
    assert (got, answer["error"][:len(error)]) == (status, error), answer
    assert (setup.tmp_path / "state" / "state.json").read_text() == state_before
    assert setup.backend.applied == applied_before


async def test_overrides_survive_a_restart_without_a_clean_stop(setup: Setup) -> None:
    daemon = await setup.start()
    await setup.call("/admin", {"action": "drain", "service": "web", "server": "192.0.2.11"})
    await setup.call("/admin", {"action": "weight", "service": "api", "server": "192.0.2.11",
                                "weight": 2})
    assert setup.server is not None
    await setup.server.close()  # the daemon is never stopped: as after kill -9
    setup.server, setup.daemon = None, None
    del daemon
    setup.backend.table.entries[WEB].dests.clear()  # and the kernel forgot the servers
    again = await setup.start()
    assert setup.weights(WEB) == {"192.0.2.11:80": 0, "192.0.2.12:80": 10}
    assert setup.weights(API) == {"192.0.2.11:8080": 2}
    status = {s.key: s.admin for s in again.status.snapshot().services[0].servers}
    assert status[RS1] is not None and status[RS1].state.value == "drained"


async def test_a_reload_keeps_overrides_and_drops_those_of_servers_it_removes(
        setup: Setup) -> None:
    daemon = await setup.start()
    await setup.call("/admin", {"action": "drain", "host": "192.0.2.11"})
    text = setup.config_path.read_text()
    without_api = text[:text.index('[[services]]\nname = "api"')]
    setup.config_path.write_text(without_api)
    assert await daemon.reload()
    assert setup.weights(WEB)["192.0.2.11:80"] == 0, "the drain outlived the reload"
    servers = setup.state_overrides()["servers"]
    assert [(s["server"], s["state"]) for s in servers] == [(["192.0.2.11", 80], "drained")]


async def test_ten_concurrent_requests_are_applied_one_at_a_time(setup: Setup) -> None:
    await setup.start()

    async def weight(n: int) -> dict[str, Any]:
        status, answer = await setup.call("/admin", {"action": "weight", "service": "web",
                                                     "server": "192.0.2.12", "weight": n})
        assert status == 200, answer
        return answer

    async def flip(n: int) -> dict[str, Any]:
        action = "drain" if n % 2 else "undrain"
        status, answer = await setup.call("/admin", {"action": action, "host": "192.0.2.11"})
        assert status == 200, answer
        return answer

    answers = await asyncio.gather(*(weight(n) if n < 5 else flip(n) for n in range(1, 11)))
    for n, answer in zip(range(1, 11), answers, strict=True):
        if n < 5:  # each reports the weight it set: nothing ran in between
            assert answer["servers"][0]["kernel_weight"] == n
        else:
            drained = n % 2 == 1
            assert [s["kernel_weight"] for s in answer["servers"]] == (
                [0, 0] if drained else [10, 5])
    assert setup.daemon is not None
    final = setup.daemon.overrides
    rs2 = final.get((WEB, RS2)).weight
    assert rs2 is not None and setup.weights(WEB)["192.0.2.12:80"] == rs2
    drained = final.get((WEB, RS1)).state.value == "drained"
    assert setup.weights(WEB)["192.0.2.11:80"] == (0 if drained else 10)
    assert setup.weights(API)["192.0.2.11:8080"] == (0 if drained else 5)


# --- who may ask ---------------------------------------------------------------------------


def test_root_and_members_of_the_control_group_may_ask_others_not() -> None:
    def no_groups(pid: int) -> set[int]:
        return set()

    assert refusal(Peer(1, 0, 0), None, no_groups) is None
    assert refusal(Peer(1, 1000, 4242), 4242, no_groups) is None
    assert refusal(Peer(1, 1000, 100), 4242, lambda pid: {4242}) is None
    why = refusal(Peer(7, 1000, 100), 4242, no_groups)
    assert why is not None and "uid 1000 (pid 7)" in why and "group 4242" in why
    assert refusal(Peer(7, 1000, 100), None, lambda pid: {4242}) is not None


CALLER = """
import os, socket, sys
os.setgroups([])
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[2]))
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = b'{"action": "drain", "service": "web", "server": "192.0.2.11"}'
s.sendall(b"POST /v1/admin HTTP/1.1\\r\\nHost: lvsd\\r\\nContent-Type: application/json\\r\\n"
          b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s" % (len(body), body))
print(s.makefile("rb").read().decode())
"""


def as_user(socket_path: Path, uid: int, gid: int) -> str:
    return subprocess.run([sys.executable, "-c", CALLER, str(socket_path), str(uid), str(gid)],
                          capture_output=True, text=True, check=True, timeout=60).stdout


async def test_a_caller_neither_root_nor_in_the_group_is_refused_whatever_the_file_mode(
        tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the unit tests run as root (tests/bootstrap.sh): setuid needs it"
    made = Setup(tmp_path)
    made.socket = Path(tempfile.mkdtemp(prefix="lvsd-ctl-", dir="/tmp")) / "lvsd.sock"
    made.socket.parent.chmod(0o755)
    try:
        await made.start(gid=4242)
        assert made.socket.stat().st_mode & 0o777 == 0o660
        assert made.socket.stat().st_gid == 4242
        made.socket.chmod(0o666)  # a careless chmod: the credentials still decide
        refused = await asyncio.to_thread(as_user, made.socket, 65534, 65534)
        assert refused.startswith("HTTP/1.1 403"), refused
        assert "uid 65534" in refused and "may not control lvsd" in refused
        assert made.weights()["192.0.2.11:80"] == 10
        allowed = await asyncio.to_thread(as_user, made.socket, 65534, 4242)
        assert allowed.startswith("HTTP/1.1 200"), allowed
        assert made.weights()["192.0.2.11:80"] == 0
    finally:
        await made.stop()


async def test_the_socket_is_root_only_by_default(setup: Setup) -> None:
    await setup.start()
    assert setup.socket.stat().st_mode & 0o777 == 0o600


# --- the socket file ---------------------------------------------------------------------


async def test_a_stale_socket_is_replaced_and_the_file_removed_at_stop(setup: Setup) -> None:
    setup.socket.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(setup.socket))
    stale.close()  # bound, never listening: what a killed daemon leaves
    await setup.start()
    status, _ = await setup.call("/version", method="GET")
    assert status == 200
    await setup.stop()
    assert not setup.socket.exists()


async def test_a_second_daemon_refuses_a_socket_another_one_answers_on(setup: Setup) -> None:
    daemon = await setup.start()
    with pytest.raises(ControlSocketError, match="another lvsd answers on it"):
        await start_control(create_control_app(daemon.steering), setup.socket, None)
    status, _ = await setup.call("/version", method="GET")
    assert status == 200, "the first daemon's socket is untouched"


async def test_a_path_that_is_not_a_socket_is_left_alone(setup: Setup) -> None:
    setup.socket.parent.mkdir(parents=True)
    setup.socket.write_text("precious")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        await setup.start()
    assert setup.socket.read_text() == "precious"


# --- the client ----------------------------------------------------------------------------


async def test_the_client_says_when_no_daemon_listens(tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match=r"no control socket at .*is lvsd running"):
        async with ControlClient(tmp_path / "missing.sock") as client:
            await client.call("GET", "/version")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(Unreachable, match="lvsd is not running: nobody answers"):
        async with ControlClient(tmp_path / "stale.sock") as client:
            await client.call("GET", "/version")


async def test_check_runs_the_servers_probe_now_and_reports_it(setup: Setup) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    text = setup.config_path.read_text().replace(
        'address = "192.0.2.11"\nweight = 10\n',
        'address = "192.0.2.11"\nweight = 10\n'
        f'check = {{ type = "tcp", connect_ip = "127.0.0.1", connect_port = {port} }}\n', 1)
    setup.config_path.write_text(text)
    try:
        await setup.start()
        status, answer = await setup.call("/check", {"service": "web", "server": "192.0.2.11"})
        assert status == 200, answer
        assert answer["ok"] is True and answer["checks"][0]["check"].startswith("tcp ")
        listening.close()
        status, answer = await setup.call("/check", {"service": "web", "server": "192.0.2.11"})
        assert status == 200 and answer["ok"] is False, answer
        assert answer["checks"][0]["reason"], answer
        status, answer = await setup.call("/check", {"service": "web", "server": "192.0.2.12"})
        assert (status, answer["error"]) == (409, "server: 192.0.2.12:80 has no checks in web")
    finally:
        listening.close()


async def test_status_shows_each_servers_admin_block(setup: Setup) -> None:
    from lvsd.api import status_document

    daemon = await setup.start()
    await setup.call("/admin", {"action": "weight", "service": "web", "server": "192.0.2.12",
                                "weight": 4, "for": "1h"})
    servers = status_document(daemon.status.snapshot(), 0.0)["services"][0]["servers"]
    admin = {s["server"]: s["admin"] for s in servers}
    assert admin["192.0.2.11:80"] == {"state": "enabled", "weight": None, "weight_until": None}
    assert admin["192.0.2.12:80"]["weight"] == 4 and admin["192.0.2.12:80"]["weight_until"]


async def test_metrics_carry_the_admin_state_and_weight_of_overridden_servers(
        setup: Setup) -> None:
    daemon = await setup.start()
    await setup.call("/admin", {"action": "drain", "service": "web", "server": "192.0.2.11"})
    await setup.call("/admin", {"action": "weight", "service": "api", "server": "192.0.2.11",
                                "weight": 2})
    text = daemon.metrics.exposition(daemon.status.snapshot()).decode()
    rows = [line for line in text.splitlines() if line.startswith("lvsd_backend_admin_state{")]
    web = 'local_address="192.0.2.100",local_port="80",proto="TCP",local_mark=""'
    api = 'local_address="192.0.2.100",local_port="8080",proto="TCP",local_mark=""'
    assert sorted(rows) == sorted([
        f'lvsd_backend_admin_state{{{web},remote_address="192.0.2.11",remote_port="80",'
        f'state="drained"}} 1',
        f'lvsd_backend_admin_state{{{api},remote_address="192.0.2.11",remote_port="8080",'
        f'state="enabled"}} 1'])
    assert (f'lvsd_backend_weight_override{{{api},remote_address="192.0.2.11",'
            f'remote_port="8080"}} 2') in text.splitlines()
