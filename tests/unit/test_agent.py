"""The agent-check protocol (HAProxy's): reading the line, parsing it, merging answers, the
agents' book, and the probe against a loopback agent."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lvsd.agents import NO_CHANGE, AgentChange, Agents
from lvsd.checks import parse_agent
from lvsd.checks.agent import MAX_LINE, answer_line, describe, merged, parse_answer
from lvsd.config import loads
from lvsd.probe import ProbeReport, ProbeResult
from lvsd.weight import AgentCommand, AgentReport

UP, DRAIN, DOWN = AgentCommand.UP, AgentCommand.DRAIN, AgentCommand.DOWN

# bytes received so far, at end of file?, what they amount to
LINES = [
    (b"75%\n", False, (True, "75%")),
    (b"75%\r\n", False, (True, "75%")),
    (b"drain\r", False, (True, "drain")),
    (b"up\x00junk", False, (True, "up")),
    (b"75", False, None),  # more may come
    (b"75", True, (True, "75")),  # a clean close ends the line
    (b"", True, (False, "closed without an answer")),
    (b"\n", False, (True, "")),
    (b"  up  \n", False, (True, "up")),
    (b"\xff\xfeup\x07\n", False, (True, "??up?")),
    (b"x" * MAX_LINE, False, None),
    (b"x" * (MAX_LINE + 1), False, (False, f"no end of line in the first {MAX_LINE} bytes")),
    (b"x" * (MAX_LINE + 1), True, (False, f"no end of line in the first {MAX_LINE} bytes")),
    (b"x" * (MAX_LINE - 1) + b"\n", False, (True, "x" * (MAX_LINE - 1))),
    (b"50%\n" + b"y" * 10_000, False, (True, "50%")),
    (b"first\nsecond\n", False, (True, "first")),
]


@pytest.mark.parametrize(("data", "eof", "expected"), LINES, ids=[repr(c[0][:20]) + str(c[1])
                                                                   for c in LINES])
def test_the_answer_is_the_first_line_bounded(data: bytes, eof: bool,
                                              expected: tuple[bool, str] | None) -> None:
    assert answer_line(data, eof=eof) == expected


# an answer line, the report it makes
ANSWERS = [
    ("75%", AgentReport(75, None)),
    ("0%", AgentReport(0, None)),
    ("100%", AgentReport(100, None)),
    ("250%", AgentReport(250, None)),
    ("drain", AgentReport(None, DRAIN)),
    ("DRAIN", AgentReport(None, DRAIN)),
    ("Maint", AgentReport(None, DOWN)),
    ("down", AgentReport(None, DOWN)),
    ("stopped", AgentReport(None, DOWN)),
    ("fail", AgentReport(None, DOWN)),
    ("up", AgentReport(None, UP)),
    ("Ready", AgentReport(None, UP)),
    ("75% drain", AgentReport(75, DRAIN)),
    ("75%,drain", AgentReport(75, DRAIN)),
    ("up\t50%", AgentReport(50, UP)),
    ("  , 60% ,, ", AgentReport(60, None)),
    ("down#disk full", AgentReport(None, DOWN)),
    ("down # maint drain 10%", AgentReport(None, DOWN)),  # after '#' is a description
    ("# 10% down", AgentReport(None, None)),
    ("up drain", AgentReport(None, DRAIN)),  # the strongest command of a line wins
    ("drain down up", AgentReport(None, DOWN)),
    ("10% 20%", AgentReport(20, None)),  # the last percentage
    ("maxconn:30 75%", AgentReport(75, None)),
    ("", AgentReport(None, None)),
    ("hello world", AgentReport(None, None)),
    ("75", AgentReport(None, None)),
    ("75.5%", AgentReport(None, None)),
    ("-5%", AgentReport(None, None)),
    ("%", AgentReport(None, None)),
    ("75%%", AgentReport(None, None)),
    ("1234567%", AgentReport(None, None)),  # more digits than any weight needs
    ("upx drainy", AgentReport(None, None)),
    ("???up?", AgentReport(None, None)),
]


@pytest.mark.parametrize(("line", "expected"), ANSWERS, ids=[c[0] or "empty" for c in ANSWERS])
def test_an_answer_line_makes_its_report(line: str, expected: AgentReport) -> None:
    assert parse_answer(line) == expected


@pytest.mark.parametrize(("previous", "answer", "expected"), [
    (None, AgentReport(75, None), AgentReport(75, None)),
    (AgentReport(75, None), AgentReport(None, DRAIN), AgentReport(75, DRAIN)),
    (AgentReport(75, DRAIN), AgentReport(50, None), AgentReport(50, DRAIN)),  # still drained
    (AgentReport(75, DRAIN), AgentReport(None, UP), AgentReport(75, UP)),
    (AgentReport(None, DOWN), AgentReport(None, None), AgentReport(None, DOWN)),
    (AgentReport(None, DOWN), AgentReport(100, UP), AgentReport(100, UP)),
])
def test_what_a_line_does_not_say_stays_as_it_was(previous: AgentReport | None,
                                                  answer: AgentReport,
                                                  expected: AgentReport) -> None:
    assert merged(previous, answer) == expected


def test_describe_names_the_report() -> None:
    assert describe(None) == "no answer"
    assert describe(AgentReport(75, DRAIN)) == "75% drain"
    assert describe(AgentReport(None, None)) == "nothing said"


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "port"),
    ({"port": 0}, "port"),
    ({"port": 10000, "rise": 2}, "an agent has no rise"),
    ({"port": 10000, "connect_port": 5}, "an agent has no connect_port"),
    ({"port": 10000, "dr_path": True}, "an agent has no dr_path"),
    ({"port": 10000, "send": ""}, "send is empty"),
    ({"port": 10000, "type": "tcp"}, "agent"),
    ({"port": 10000, "path": "/"}, "path"),
])
def test_an_agent_spec_takes_only_its_own_fields(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_agent(raw)


def test_the_agent_is_asked_on_its_own_port_of_the_real_server() -> None:
    spec = parse_agent({"port": 10000})
    target = spec.target(ipaddress.ip_address("192.0.2.11"), 80,
                         vip=ipaddress.ip_address("192.0.2.100"), vport=80)
    assert (str(target.address), target.port) == ("192.0.2.11", 10000)
    other = parse_agent({"port": 10000, "connect_ip": "198.51.100.1"})
    assert str(other.target(ipaddress.ip_address("192.0.2.11"), 80).address) == "198.51.100.1"


# --- the agents' book ----------------------------------------------------------------------

CONFIG = """
[daemon]
state_dir = "/tmp/lvsd-agent-test"

[[services]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "wrr"
agent = { port = 10000, fall = 2 }
[[services.real_servers]]
address = "192.0.2.11"
[[services.real_servers]]
address = "192.0.2.12"
agent = { port = 10001 }

[[services]]
name = "web-tls"
address = "192.0.2.100"
port = 443
scheduler = "wrr"
agent = { port = 10000, fall = 2 }
[[services.real_servers]]
address = "192.0.2.11"
"""


def book() -> tuple[Agents, list[tuple[object, object]]]:
    config = loads(CONFIG)
    agents = Agents()
    agents.rebuild(config)
    refs = [(spec.key, server.key) for spec in config.services for server in spec.servers]
    return agents, refs  # type: ignore[return-value]


def say(agents: Agents, port: int, ok: bool, reason: str, *,
        inconclusive: bool = False) -> AgentChange | None:
    key = next(key for key in tuple(agents.keys()) if key.target.port == port)
    report = ProbeReport(key, ProbeResult(ok, reason), 0.0, 0.0, 0.0, inconclusive)
    return agents.observe(report, now=100.0)


def test_services_sharing_a_real_server_and_agent_share_one_probe() -> None:
    agents, refs = book()
    assert len(agents) == 2
    moved = say(agents, 10000, True, "50%")
    assert moved is not None and set(moved.refs) == {refs[0], refs[2]}
    assert agents.report(refs[0]) == agents.report(refs[2]) == AgentReport(50, None)
    assert agents.report(refs[1]) is None


def test_a_dead_agent_is_forgotten_after_fall_failures_and_never_worse() -> None:
    agents, refs = book()
    say(agents, 10000, True, "down")
    assert agents.report(refs[0]) == AgentReport(None, DOWN)
    assert say(agents, 10000, False, "refused") == NO_CHANGE
    assert agents.report(refs[0]) == AgentReport(None, DOWN), "one failure is below fall"
    assert say(agents, 10000, False, "refused", inconclusive=True) == NO_CHANGE
    moved = say(agents, 10000, False, "timeout (answer)")
    assert moved is not None and refs[0] in moved.refs and moved.came_back
    assert agents.report(refs[0]) is None
    status = agents.status(refs[0])
    assert status is not None and not status.answering and status.error == "timeout (answer)"


def test_an_unchanged_answer_moves_nothing_and_a_report_not_of_an_agent_is_not_taken() -> None:
    agents, refs = book()
    assert say(agents, 10000, True, "75%") == AgentChange((refs[0], refs[2]))
    assert say(agents, 10000, True, "75% maxconn:10") == NO_CHANGE
    from lvsd.checks import parse_check
    from lvsd.probe import check_key
    spec = parse_check({"type": "tcp"})
    other = check_key(spec.target(ipaddress.ip_address("192.0.2.11"), 80), spec)
    assert agents.observe(ProbeReport(other, ProbeResult(True), 0, 0, 0), now=0) is None


@pytest.mark.parametrize(("before", "after", "back"), [
    ("drain", "up", True), ("down", "ready", True), ("down", "drain", False),
    ("50%", "up", False), ("up", "down", False), ("drain", "25%", False),
])
def test_a_server_the_agent_lets_back_in_comes_back(before: str, after: str,
                                                    back: bool) -> None:
    agents, _ = book()
    say(agents, 10000, True, before)
    moved = say(agents, 10000, True, after)
    assert moved is not None and moved.came_back is back


def test_a_reload_keeps_what_an_unchanged_agent_said() -> None:
    agents, refs = book()
    say(agents, 10000, True, "drain")
    say(agents, 10001, True, "25%")
    agents.rebuild(loads(CONFIG.replace("port = 10001", "port = 10002")))
    assert agents.report(refs[0]) == AgentReport(None, DRAIN)
    assert agents.report(refs[1]) is None  # a new agent: not heard yet


# --- the probe against a loopback agent -----------------------------------------------------

async def agent_server(answer: bytes, *, close: bool = True) -> tuple[asyncio.Server, int,
                                                                     list[bytes]]:
    heard: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heard.append(await asyncio.wait_for(reader.read(100), 0.2))
        except TimeoutError:
            heard.append(b"")
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, family=socket.AF_INET)
    return server, server.sockets[0].getsockname()[1], heard


@pytest.mark.parametrize(("answer", "send", "expected"), [
    (b"75% drain\r\n", "ping\n", ProbeResult(True, "75% drain")),
    (b"up", None, ProbeResult(True, "up")),
    (b"", None, ProbeResult(False, "closed without an answer")),
])
async def test_the_probe_reads_the_agents_line(answer: bytes, send: str | None,
                                               expected: ProbeResult) -> None:
    server, port, heard = await agent_server(answer)
    async with server:
        spec = parse_agent({"port": port} | ({"send": send} if send else {}))
        result = await spec.prober().probe(spec.target(ipaddress.ip_address("127.0.0.1"), 80))
    assert (result.ok, result.reason) == (expected.ok, expected.reason)
    assert heard == [send.encode() if send else b""]


async def test_the_probe_of_a_dead_agent_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = parse_agent({"port": port})
    result = await spec.prober().probe(spec.target(ipaddress.ip_address("127.0.0.1"), 80))
    assert not result.ok and result.reason == "refused"


# --- through the daemon ---------------------------------------------------------------------

async def agent_daemon(tmp_path: Path, extra: str = "") -> tuple[Any, Any]:
    from lvsd.checks.manual import ManualRunner
    from lvsd.config import load
    from lvsd.daemon import Daemon
    from lvsd.ipvs.fake import FakeIpvs
    from lvsd.model import DestKey, Protocol, ServiceKey, parse_address

    web = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
    rs1 = DestKey(parse_address("192.0.2.11"), 80)
    path = tmp_path / "lvsd.toml"
    path.write_text(f"""
[daemon]
state_dir = "{tmp_path / 'state'}"
reconcile_delay = 0
[[services]]
address = "192.0.2.100"
port = 80
scheduler = "wrr"
on_failure = "remove"
agent = {{ port = 10000, fall = 1 }}
{extra}
[[services.real_servers]]
address = "192.0.2.11"
weight = 10
""")
    backend = FakeIpvs()
    daemon = Daemon(load(path), backend, config_path=path, runner=ManualRunner)
    await daemon.start()
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    [key] = daemon.agents.keys()
    assert key in runner.keys, "the agent is probed by the daemon's runner"

    async def answered(ok: bool, line: str) -> int | None:
        runner.report(key, ok, line)
        await daemon.reconcile(full=False)
        entry = backend.table.entries[web]
        return entry.dests[rs1].weight if rs1 in entry.dests else None

    return daemon, answered


async def test_the_agents_answers_move_the_kernel_weight_and_its_silence_does_not(
        tmp_path: Path) -> None:
    daemon, answered = await agent_daemon(tmp_path)
    assert await answered(True, "") == 10
    assert await answered(True, "50%") == 5
    assert await answered(True, "drain") == 0
    assert await answered(True, "up") == 5
    assert await answered(True, "down # disk full") is None
    status = daemon.status.snapshot().services[0].servers[0].agent
    assert status is not None and status.command == "down" and status.line == "down # disk full"
    assert await answered(False, "refused") == 10, "a dead agent: the health check alone"


async def test_a_server_its_agent_lets_back_in_slow_starts(tmp_path: Path) -> None:
    daemon, answered = await agent_daemon(tmp_path, 'slow_start = "10s"')
    assert await answered(True, "100%") == 10, "an agent's first answer is no comeback"
    assert await answered(True, "drain") == 0
    assert await answered(True, "up") == 1
    spec = daemon.config.services[0]
    assert daemon.ramps.ramp((spec.key, spec.servers[0].key)) is not None


def test_a_servers_agent_overrides_its_services_field_by_field() -> None:
    config = loads(CONFIG)
    first, second = config.services[0].servers
    assert first.agent is not None and (first.agent.port, first.agent.fall) == (10000, 2)
    assert second.agent is not None and (second.agent.port, second.agent.fall) == (10001, 2)


@pytest.mark.parametrize(("agent", "place", "message"), [
    ('{ port = 70000 }', "services[0] \"web\" (tcp:192.0.2.100:80).agent.port",
     "must be at most 65535"),
    ('{ prot = 1 }', "services[0] \"web\" (tcp:192.0.2.100:80).agent", "unknown key 'prot'"),
    ('{ port = 1, interval = "soon" }', "services[0] \"web\" (tcp:192.0.2.100:80).agent"
     ".interval", "not a duration"),
    ('{ port = 1, rise = 2 }', "services[0] \"web\" (tcp:192.0.2.100:80).agent",
     "an agent has no rise"),
    ('"10000"', "services[0] \"web\" (tcp:192.0.2.100:80).agent", "a table"),
])
def test_a_bad_agent_says_where_and_what(agent: str, place: str, message: str) -> None:
    from lvsd.errors import ConfigError
    text = CONFIG.replace("agent = { port = 10000, fall = 2 }", f"agent = {agent}", 1)
    with pytest.raises(ConfigError) as caught:
        loads(text)
    assert any(p.where == place and message in p.message for p in caught.value.problems), \
        [str(p) for p in caught.value.problems]
