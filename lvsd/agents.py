"""The agents' book: which agent probe speaks for each configured server, and what it said.

An agent (``lvsd.checks.agent``) is probed by the same runner as the health checks; its
reports come here instead of to the health book. Services that share a real server and an
agent spec share one probe. A reload keeps the answer of every agent whose spec and target
did not change. An agent that fails ``fall`` probes in a row reports nothing (``report`` is
None): the server then stands on its health checks alone, never taken out by the agent's
silence. Inconclusive reports (lvsd itself ran late) change nothing.
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import dataclass

from lvsd.checks.agent import describe, merged, parse_answer
from lvsd.pacing import Steps, finish
from lvsd.probe import CheckKey, ProbeReport, check_key
from lvsd.snapshot import AgentStatus
from lvsd.spec import Config, ServerRef
from lvsd.weight import AgentCommand, AgentReport

_HELD_OUT = (AgentCommand.DRAIN, AgentCommand.DOWN)


def holds_out(report: AgentReport | None) -> bool:
    return report is not None and report.command in _HELD_OUT


@dataclass(frozen=True, slots=True)
class AgentChange:
    """The servers one report moved; ``came_back``: the agent had held them out (drain,
    down) and no longer does, so they ramp like a server whose health came back."""

    refs: tuple[ServerRef, ...]
    came_back: bool = False


NO_CHANGE = AgentChange(())


@dataclass(frozen=True, slots=True)
class _Heard:
    report: AgentReport | None = None
    line: str = ""  # the last line the agent answered
    since: float = 0.0  # wall time ``report`` became what it is
    fails: int = 0  # failed probes in a row
    error: str = ""  # why the last probe failed


@dataclass(frozen=True, slots=True)
class StagedAgents:
    """The agent probes of a new config, not in use yet (``Agents.commit``)."""

    key_of: dict[ServerRef, CheckKey]
    servers_of: dict[CheckKey, tuple[ServerRef, ...]]


class Agents:
    def __init__(self) -> None:
        self._key_of: dict[ServerRef, CheckKey] = {}
        self._servers_of: dict[CheckKey, tuple[ServerRef, ...]] = {}
        self._heard: dict[CheckKey, _Heard] = {}
        self.observed = 0  # answers taken in: a snapshot built at another count is out of date

    def rebuild(self, config: Config) -> None:
        """The agent probes of ``config``; one whose key is unchanged keeps what it heard."""
        self.commit(finish(self.stage_steps(config)))

    def stage_steps(self, config: Config) -> Steps[StagedAgents]:
        """The agent probes of ``config``, built to the side a step per service
        (``lvsd.pacing``); ``commit`` puts them in use."""
        key_of: dict[ServerRef, CheckKey] = {}
        servers_of: dict[CheckKey, list[ServerRef]] = {}
        for spec in config.services:
            yield None
            svc = spec.key
            for server in spec.servers:
                if server.agent is None:
                    continue
                target = server.agent.target(server.key.address, server.key.port,
                                             vip=svc.address, vport=svc.port)
                key = check_key(target, server.agent)
                key_of[(svc, server.key)] = key
                servers_of.setdefault(key, []).append((svc, server.key))
        return StagedAgents(key_of, {key: tuple(refs) for key, refs in servers_of.items()})

    def commit(self, staged: StagedAgents) -> None:
        self._key_of = staged.key_of
        self._servers_of = staged.servers_of
        self._heard = {key: self._heard.get(key, _Heard()) for key in staged.servers_of}

    def __len__(self) -> int:
        return len(self._servers_of)

    def keys(self) -> KeysView[CheckKey]:
        return self._servers_of.keys()

    def report(self, ref: ServerRef) -> AgentReport | None:
        key = self._key_of.get(ref)
        return None if key is None else self._heard[key].report

    def status(self, ref: ServerRef) -> AgentStatus | None:
        key = self._key_of.get(ref)
        if key is None:
            return None
        heard = self._heard[key]
        report = heard.report
        return AgentStatus(
            answering=report is not None, state=describe(report), line=heard.line,
            percent=report.percent if report is not None else None,
            command=report.command.value if report and report.command else None,
            since=heard.since or None, error=heard.error or None)

    def observe(self, report: ProbeReport, *, now: float) -> AgentChange | None:
        """Take one report in: None if it is not an agent's, else the servers whose agent
        report it changed."""
        refs = self._servers_of.get(report.key)
        if refs is None:
            return None
        if report.inconclusive:
            return NO_CHANGE
        self.observed += 1
        before = self._heard[report.key]
        result = report.result
        if result.ok:
            heard = _Heard(merged(before.report, parse_answer(result.reason)), result.reason,
                           before.since)
        else:
            fails = before.fails + 1
            gone = fails >= report.key.spec.fall
            heard = _Heard(None if gone else before.report, before.line, before.since, fails,
                           result.reason)
        if heard.report != before.report:
            heard = _Heard(heard.report, heard.line, now, heard.fails, heard.error)
            self._heard[report.key] = heard
            return AgentChange(refs, holds_out(before.report) and not holds_out(heard.report))
        self._heard[report.key] = heard
        return NO_CHANGE
