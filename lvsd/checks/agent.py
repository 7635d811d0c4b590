"""Agent: HAProxy's agent-check protocol, a weight source beside the health checks.

lvsd connects to ``port`` on the real server (or ``connect_ip``), sends ``send`` if set, and
reads one line: words separated by spaces, tabs or commas, in any case, such as ``75%``,
``drain``, ``maint``, ``down``, ``up``, ``ready``; ``#`` starts a description that is only
shown. Unknown words (``maxconn:30``, garbage) are ignored, the last percentage counts, and
within one line the strongest command wins (down, then drain, then up). As in HAProxy, what a
line does not say stays as the previous answer left it (``merged``): after ``drain``, only
``up`` or ``ready`` brings the server back.

The probe answers a different question from a health check: ``ok`` means the agent answered,
and ``reason`` carries its line for ``lvsd.agents`` to parse. An agent that does not answer
never takes a server out; after ``fall`` failed probes in a row lvsd forgets its answer and
the health check alone decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from lvsd.checks.base import CheckSpec, Count, Prober, RunningProbe, Text, os_error_reason
from lvsd.checks.sockets import SocketProbe, Verdict, run_to_end
from lvsd.checks.target import ProbeTarget
from lvsd.model import Address
from lvsd.probe import ProbeResult
from lvsd.weight import AgentCommand, AgentReport

MAX_LINE = 512  # bytes: an answer without an end of line by then is not an agent's
MAX_PERCENT_DIGITS = 6

_COMMANDS = {
    "up": AgentCommand.UP, "ready": AgentCommand.UP,
    "drain": AgentCommand.DRAIN,
    "down": AgentCommand.DOWN, "maint": AgentCommand.DOWN, "stopped": AgentCommand.DOWN,
    "fail": AgentCommand.DOWN,
}
_STRENGTH = {AgentCommand.UP: 0, AgentCommand.DRAIN: 1, AgentCommand.DOWN: 2}
_WORDS = re.compile(r"[ \t,]+")
_PERCENT = re.compile(rf"(\d{{1,{MAX_PERCENT_DIGITS}}})%")
_LINE_END = re.compile(rb"[\r\n\x00]")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\t]")


class AgentCheck(CheckSpec):
    """``agent = { port = 10000, interval = "2s", timeout = "1s", send = "..." }``."""

    type: Literal["agent"] = "agent"
    port: Count = Field(ge=1, le=65535)
    send: Text | None = None

    @model_validator(mode="after")
    def _only_agent_fields(self) -> AgentCheck:
        for name, why in (
            ("rise", "its first answer applies"),
            ("connect_port", "the agent's port is port"),
            ("dr_path", "the agent is asked on the real server's own address"),
        ):
            if name in self.model_fields_set:
                raise ValueError(f"an agent has no {name}: {why}")
        if self.send == "":
            raise ValueError("send is empty: leave it out to send nothing")
        return self

    def prober(self) -> Prober:
        return AgentProber(self)

    def target(self, rs_address: Address, rs_port: int, **context: Any) -> ProbeTarget:
        """The agent's port on the real server (or on ``connect_ip``), never the DR path."""
        return super().target(rs_address, self.port, **context)


# --- the protocol, pure ----------------------------------------------------------------------

def answer_line(data: bytes, *, eof: bool) -> Verdict | None:
    """What the bytes an agent sent so far amount to: its line (up to CR, LF or NUL; the
    whole of it at a clean close), a failure, or None while more may come. The text is
    ASCII with anything unprintable shown as ``?``."""
    end = _LINE_END.search(data, 0, MAX_LINE + 1)
    if end is not None:
        return True, _text(data[:end.start()])
    if len(data) > MAX_LINE:
        return False, f"no end of line in the first {MAX_LINE} bytes"
    if eof:
        return (True, _text(data)) if data else (False, "closed without an answer")
    return None


def _text(line: bytes) -> str:
    return _UNPRINTABLE.sub("?", line.decode("ascii", "replace")).strip()


def parse_answer(line: str) -> AgentReport:
    """The report one answer line makes; words it does not know change nothing."""
    percent: int | None = None
    command: AgentCommand | None = None
    for word in _WORDS.split(line.partition("#")[0].lower()):
        if (found := _COMMANDS.get(word)) is not None:
            if command is None or _STRENGTH[found] > _STRENGTH[command]:
                command = found
        elif (match := _PERCENT.fullmatch(word)) is not None:
            percent = int(match.group(1))
    return AgentReport(percent, command)


def merged(previous: AgentReport | None, answer: AgentReport) -> AgentReport:
    """The agent's standing after ``answer``: what the line did not say stays as it was."""
    if previous is None:
        return answer
    return AgentReport(answer.percent if answer.percent is not None else previous.percent,
                       answer.command if answer.command is not None else previous.command)


def describe(report: AgentReport | None) -> str:
    """``75% drain`` / ``up`` / ``no answer``: for logs and /status."""
    if report is None:
        return "no answer"
    words = [f"{report.percent}%"] if report.percent is not None else []
    if report.command is not None:
        words.append(report.command.value)
    return " ".join(words) or "nothing said"


# --- the probe ---------------------------------------------------------------------------------

class _LineExchange:
    """Sends ``request`` and reads the agent's line (``sockets.Exchange``)."""

    __slots__ = ("received_bytes", "request")

    stage = "answer"

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received_bytes = bytearray()

    def connected(self) -> Verdict | None:
        return None

    def received(self, data: bytes) -> Verdict | None:
        self.received_bytes += data[:MAX_LINE + 1 - len(self.received_bytes)]
        return answer_line(bytes(self.received_bytes), eof=False)

    def closed(self, error: OSError | None) -> Verdict:
        if error is not None:
            return False, os_error_reason(error)
        verdict = answer_line(bytes(self.received_bytes), eof=True)
        assert verdict is not None
        return verdict


class AgentProber(Prober):
    def __init__(self, spec: AgentCheck) -> None:
        self.request = spec.send.encode() if spec.send is not None else b""

    def start(self, target: ProbeTarget, done: Callable[[ProbeResult], None]) -> RunningProbe:
        return SocketProbe(target, _LineExchange(self.request), done)

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        return await run_to_end(lambda done: SocketProbe(target, _LineExchange(self.request),
                                                         done))
