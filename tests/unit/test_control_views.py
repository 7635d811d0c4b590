"""``lvsd ctl status`` and ``lvsd ctl events`` against a daemon on the in-memory backend,
over a real unix socket: in process through the client's own functions, and as the
``lvsd ctl`` command in a child process (pipes, Ctrl-C, exit codes)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lvsd import control_views
from lvsd.checks.manual import ManualRunner
from lvsd.cli import build_parser
from lvsd.cli_ctl import ControlClient
from lvsd.cli_ctlview import follow_events, show_status, status_path
from lvsd.config import load
from lvsd.control import ControlServer, create_control_app, start_control
from lvsd.control_views import view_routes
from lvsd.daemon import Daemon
from lvsd.events import MAX_SUBSCRIBERS
from lvsd.ipvs.fake import FakeIpvs
from lvsd.ipvsadm.listing import format_listing
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
RS1 = DestKey(parse_address("192.0.2.11"), 80)
RS2 = DestKey(parse_address("192.0.2.12"), 80)


def config_text(state_dir: Path) -> str:
    return f"""
[daemon]
state_dir = "{state_dir}"
reconcile_delay = 0

[[services]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "rr"
check = {{ type = "http", path = "/", rise = 1, fall = 1 }}
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
scheduler = "wrr"
[[services.real_servers]]
address = "192.0.2.11"
weight = 5
"""


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.config_path = tmp_path / "lvsd.toml"
        self.config_path.write_text(config_text(tmp_path / "state"))
        self.socket = tmp_path / "run" / "lvsd.sock"
        self.backend = FakeIpvs()
        self.daemon = Daemon(load(self.config_path), self.backend, config_path=self.config_path,
                             runner=ManualRunner)
        self.server: ControlServer | None = None

    async def start(self) -> None:
        await self.daemon.start()
        app = create_control_app(self.daemon.steering, None,
                                 routes=view_routes(self.daemon.status, self.daemon.events))
        self.server = await start_control(app, self.socket, None)

    def feed(self, server: DestKey, ok: bool) -> None:
        runner = self.daemon.runner
        assert isinstance(runner, ManualRunner)
        runner.report(self.daemon.health.checks_of((WEB, server))[0], ok)

    async def call(self, method: str, path: str,
                   body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        async with ControlClient(self.socket) as client:
            return await client.call(method, path, body)

    def ctl(self, *words: str) -> Any:
        return build_parser().parse_args(["ctl", "--socket", str(self.socket), *words])

    async def spawn(self, *words: str) -> asyncio.subprocess.Process:
        """``lvsd ctl`` in a child process, its output a pipe."""
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lvsd", "ctl", "--socket", str(self.socket), *words,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    made = Lab(tmp_path)
    await made.start()
    made.feed(RS1, True)
    made.feed(RS2, True)
    await made.daemon.reconcile(full=False)
    yield made
    await made.daemon.stop()  # first, as lvsd does: it ends the event streams
    if made.server is not None:
        await made.server.close()


async def test_status_is_ipvsadm_stats_with_the_health_lvsd_sees(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.feed(RS2, False)
    await lab.daemon.reconcile(full=False)
    capsys.readouterr()
    assert await show_status(lab.ctl("status")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()[1:]
    expected = format_listing(lab.backend.table.to_table(), stats=True).splitlines()
    assert [line[:len(want)] for line, want in zip(lines, expected, strict=True)] == expected
    lvsd_columns = {line.split()[1]: line[len(want):].split()
                    for line, want in zip(lines, expected, strict=True)
                    if line.startswith("  -> 192.0.2.1")}
    # Health, since and latency (two words each), weight configured and in the kernel.
    down = lvsd_columns["192.0.2.12:80"]
    assert (down[0], down[3:7]) == ("down", ["1.0", "ms", "10", "0"])
    assert lvsd_columns["192.0.2.11:80"][0] == "up"
    assert lvsd_columns["192.0.2.11:8080"][0] == "unchecked"
    assert " ".join(down[7:]) == "- 1 consecutive failure, last: refused"
    assert "\x1b[" not in out, "no colour when not on a terminal"


async def test_status_of_one_service_carries_that_service_alone(lab: Lab) -> None:
    status, document = await lab.call("GET", status_path("api"))
    assert status == 200
    assert [s["name"] for s in document["services"]] == ["api"]
    status, document = await lab.call("GET", status_path("tcp:192.0.2.100:80"))
    assert [s["name"] for s in document["services"]] == ["web"]
    assert document["services"][0]["servers"][0]["health_reason"] == "first probe passed"


@pytest.mark.parametrize(("path", "code", "message"), [
    (status_path("nope"), 404, "service: no service 'nope' in the config"),
    ("/status?servce=web", 400, "query.servce: unknown parameter (known: service)"),
    ("/events?from=3", 400, "query.from: unknown parameter (known: none)"),
])
async def test_a_bad_view_request_says_what_is_wrong(lab: Lab, path: str, code: int,
                                                     message: str) -> None:
    status, answer = await lab.call("GET", path)
    assert (status, answer["error"][:len(message)]) == (code, message)


async def test_status_of_an_unknown_service_exits_2_and_says_so(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert await show_status(lab.ctl("status", "nope")) == 2
    assert "no service 'nope' in the config" in capsys.readouterr().err


async def test_status_json_is_the_status_document(lab: Lab,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert await show_status(lab.ctl("status", "--json", "web")) == 0
    document = json.loads(capsys.readouterr().out)
    server = document["services"][0]["servers"][0]
    assert (server["server"], server["health"], server["kernel_weight"]) == (
        "192.0.2.11:80", "up", 10)


async def test_watch_redraws_until_ctrl_c_and_then_exits_0(lab: Lab) -> None:
    process = await lab.spawn("status", "web", "--watch", "--interval", "0.5")
    assert process.stdout is not None and process.stderr is not None
    frames = 0
    async with asyncio.timeout(60):
        while frames < 2:
            line = await process.stdout.readline()
            assert line, await process.stderr.read()
            frames += line.startswith(b"Prot LocalAddress:Port")
    process.send_signal(signal.SIGINT)
    rest, errors = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, errors
    assert b"Traceback" not in errors and b"\x1b[" not in rest


async def test_events_follows_100_health_changes_in_order_with_none_missing(lab: Lab) -> None:
    process = await lab.spawn("events")
    assert process.stdout is not None
    greeting = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
    assert greeting["type"] == "subscribed"
    for _ in range(50):
        for ok in (False, True):
            lab.feed(RS2, ok)
            await lab.daemon.reconcile(full=False)
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while len(events) < 200:
            events.append(json.loads(await process.stdout.readline()))
    process.send_signal(signal.SIGINT)
    _, errors = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, errors
    first = greeting["after_seq"] + 1
    assert [e["seq"] for e in events] == list(range(first, first + 200)), "none missing"
    assert [(e["type"], e.get("status"), e.get("weight")) for e in events] == [
        ("health", "down", None), ("table", None, 0), ("health", "up", None), ("table", None, 10),
    ] * 50, "each health change, then the table change it caused, in order"


async def test_events_count_stops_after_that_many_events(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    follower = asyncio.create_task(follow_events(lab.ctl("events", "--count", "2")))
    while lab.daemon.events.subscribers == 0:
        await asyncio.sleep(0.01)
    lab.feed(RS2, False)
    await lab.daemon.reconcile(full=False)
    assert await asyncio.wait_for(follower, 10) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{")]  # the rest is the daemon's log
    assert [e["type"] for e in out] == ["subscribed", "health", "table"]


async def test_the_stream_ends_with_a_closed_line_when_lvsd_stops(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    follower = asyncio.create_task(follow_events(lab.ctl("events")))
    while lab.daemon.events.subscribers == 0:
        await asyncio.sleep(0.01)
    await lab.daemon.stop()
    assert await asyncio.wait_for(follower, 10) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("{")]
    assert json.loads(lines[-1]) == {"type": "closed", "reason": "lvsd is stopping"}
    assert "the event stream ended: lvsd stopped" in captured.err


async def test_followers_are_limited_and_one_that_went_away_is_let_go(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_views, "IDLE_CHECK", 0.05)
    async with ControlClient(lab.socket) as client:
        opened = []
        for _ in range(MAX_SUBSCRIBERS):
            stream = client.open("GET", "/events")
            response = await stream.__aenter__()
            await response.content.readline()
            opened.append(stream)
        status, answer = await client.call("GET", "/events")
        assert status == 503
        assert answer["error"] == (f"events: {MAX_SUBSCRIBERS} event streams are open already "
                                   f"(at most {MAX_SUBSCRIBERS})")
        for stream in opened:
            await stream.__aexit__(None, None, None)
    async with asyncio.timeout(10):
        while lab.daemon.events.subscribers:
            await asyncio.sleep(0.02)
