"""The health book: which probes decide each configured server, and what they last said.

A server may have several checks; it is up only while every one of them is up (keepalived
allows several checkers per real server). Services that share a real server and a check share
one probe (one ``CheckKey``) and its rise/fall state. A reload migrates that state by check
spec and server identity (the ``CheckKey`` equality: the spec and the target the server and
its stable probe mark give), never by a position in the config (keepalived's
``migrate_checkers``). Inconclusive reports (the probe started too late to mean anything)
change nothing.

Nothing here imports a checker: ``spec.target`` and ``spec.relevant`` are the spec's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvsd.health import HealthState, Status, initial, observe
from lvsd.model import Dest, DestKey, ServiceKey, Table
from lvsd.pacing import Steps, finish
from lvsd.probe import CheckKey, ProbeReport, check_key
from lvsd.snapshot import LastProbe
from lvsd.spec import Config, ServerRef

if TYPE_CHECKING:
    from lvsd.checks.base import CheckSpec


CARRY_SLICE = 1024  # probes whose state a stage carries over between two yields


@dataclass(slots=True)
class StagedBook:
    """A health book built for a new config, not in use yet (``HealthBook.commit``)."""

    states: dict[CheckKey, HealthState]
    servers_of: dict[CheckKey, tuple[ServerRef, ...]]
    checks_of: dict[ServerRef, tuple[CheckKey, ...]]
    made: dict[tuple[ServerRef, int], tuple[CheckSpec, int, CheckKey]]
    last: dict[CheckKey, LastProbe]
    not_up: int


@dataclass(frozen=True, slots=True)
class ServerChange:
    """A server whose combined status moved with one report."""

    ref: ServerRef
    previous: Status
    status: Status


@dataclass(frozen=True, slots=True)
class Observed:
    """One report taken in: the probe's state before and after, and the servers it moved."""

    key: CheckKey
    previous: HealthState
    state: HealthState
    servers: tuple[ServerChange, ...]


def combined(statuses: Iterable[Status]) -> Status:
    """Up only when every check is up; down when any is down; unknown otherwise."""
    result = Status.UP
    for status in statuses:
        if status is Status.DOWN:
            return Status.DOWN
        if status is Status.UNKNOWN:
            result = Status.UNKNOWN
    return result


def serving_in(actual: Table) -> Callable[[ServerRef], bool]:
    """Whether the kernel table ``actual`` sends a server traffic (weight > 0)."""
    kernel = actual.by_key()
    live: dict[ServiceKey, dict[DestKey, Dest]] = {}  # one map per service, not per server

    def serving(ref: ServerRef) -> bool:
        service, server = ref
        if service not in live:
            vs = kernel.get(service)
            live[service] = vs.dest_map() if vs is not None else {}
        dest = live[service].get(server)
        return dest is not None and dest.weight > 0

    return serving


class HealthBook:
    def __init__(self) -> None:
        self._states: dict[CheckKey, HealthState] = {}
        self._servers_of: dict[CheckKey, tuple[ServerRef, ...]] = {}
        self._checks_of: dict[ServerRef, tuple[CheckKey, ...]] = {}
        self._last: dict[CheckKey, LastProbe] = {}
        self._made: dict[tuple[ServerRef, int], tuple[CheckSpec, int, CheckKey]] = {}
        self._not_up = 0
        self._moved: set[CheckKey] | None = None  # probes that reported since a stage began
        self.observed = 0  # reports taken in: a snapshot built at another count is out of date

    # --- building -------------------------------------------------------------------------

    def rebuild(self, config: Config, marks: Mapping[ServerRef, int],
                serving: Callable[[ServerRef], bool], *, now: float) -> None:
        """The probes of ``config``; a probe that existed keeps its state. A new probe of a
        server the kernel already ``serving`` starts up (a restart must not flap it)."""
        finish(self.rebuild_steps(config, marks, serving, now=now))

    def rebuild_steps(self, config: Config, marks: Mapping[ServerRef, int],
                      serving: Callable[[ServerRef], bool], *, now: float) -> Steps[None]:
        """``rebuild`` as steps (``lvsd.pacing``): ``stage_steps``, then ``commit``."""
        self.commit((yield from self.stage_steps(config, marks, serving, now=now)))

    def stage_steps(self, config: Config, marks: Mapping[ServerRef, int],
                    serving: Callable[[ServerRef], bool], *, now: float) -> Steps[StagedBook]:
        """The book for ``config``, built to the side in steps (``lvsd.pacing``): it yields
        after each service while it builds the keys, and every ``CARRY_SLICE`` probes while
        it carries their states over. The book in use stays as it is: reports taken in
        meanwhile count against the old probes, and ``commit`` carries them over too.

        A server whose check and mark are unchanged keeps its ``CheckKey`` object: building
        10,000 keys again on a reload, and matching them by equality, held the event loop
        for about half a second."""
        self._moved = set()
        servers_of: dict[CheckKey, list[ServerRef]] = {}
        checks_of: dict[ServerRef, tuple[CheckKey, ...]] = {}
        made: dict[tuple[ServerRef, int], tuple[CheckSpec, int, CheckKey]] = {}
        same_spec: dict[tuple[int, int], bool] = {}  # servers of a service share spec objects
        for spec in config.services:
            svc = spec.key
            for server in spec.servers:
                if not server.checks:
                    continue
                ref = (svc, server.key)
                keys: list[CheckKey] = []
                for index, check in enumerate(server.checks):
                    mark = marks.get(ref, 0) if check.dr_path else 0
                    before = self._made.get((ref, index))
                    key = None
                    if before is not None and before[1] == mark:
                        pair = (id(before[0]), id(check))
                        if pair not in same_spec:
                            same_spec[pair] = before[0] == check
                        if same_spec[pair]:
                            key = before[2]
                    if key is None:
                        target = check.target(
                            server.key.address,
                            server.key.port,
                            vip=svc.address,
                            vport=svc.port,
                            protocol=None if svc.is_fwmark else svc.protocol,
                            dr_mark=mark,
                        )
                        key = check_key(target, check)
                    made[(ref, index)] = (check, mark, key)
                    servers_of.setdefault(key, []).append(ref)
                    keys.append(key)
                checks_of[ref] = tuple(keys)
            yield
        states: dict[CheckKey, HealthState] = {}
        frozen: dict[CheckKey, tuple[ServerRef, ...]] = {}
        last: dict[CheckKey, LastProbe] = {}
        not_up = 0
        for count, (key, refs) in enumerate(servers_of.items(), 1):
            state = self._states.get(key)
            if state is None:
                state = initial(assume_up=any(serving(ref) for ref in refs), now=now)
            states[key] = state
            frozen[key] = tuple(refs)
            if (probe := self._last.get(key)) is not None:
                last[key] = probe
            not_up += state.status is not Status.UP
            if count % CARRY_SLICE == 0:
                yield
        return StagedBook(states, frozen, checks_of, made, last, not_up)

    def commit(self, staged: StagedBook) -> None:
        """Put a staged book in use, with what the probes reported since it was staged."""
        for key in self._moved or ():
            if key in staged.states:
                before = staged.states[key]
                state = staged.states[key] = self._states[key]
                staged.not_up += ((state.status is not Status.UP)
                                  - (before.status is not Status.UP))
                if (probe := self._last.get(key)) is not None:
                    staged.last[key] = probe
        self._moved = None
        self._states = staged.states
        self._servers_of = staged.servers_of
        self._checks_of = staged.checks_of
        self._made = staged.made
        self._last = staged.last
        self._not_up = staged.not_up

    # --- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._states)

    def keys(self) -> KeysView[CheckKey]:
        return self._states.keys()

    def checks_of(self, ref: ServerRef) -> tuple[CheckKey, ...]:
        return self._checks_of.get(ref, ())

    def state(self, key: CheckKey) -> HealthState:
        return self._states[key]

    def last_probe(self, key: CheckKey) -> LastProbe | None:
        return self._last.get(key)

    def status(self, ref: ServerRef) -> Status:
        """The server's status: up when it has no check or every check is up."""
        keys = self._checks_of.get(ref, ())
        if len(keys) == 1:
            return self._states[keys[0]].status
        return combined(self._states[key].status for key in keys)

    def probed(self, ref: ServerRef) -> bool:
        """Whether every check of the server has reported a result (inconclusive ones do not
        count): the server has had its first round."""
        return all(self._states[key].last is not None for key in self._checks_of.get(ref, ()))

    @property
    def not_up(self) -> int:
        """Probes whose status is not up."""
        return self._not_up

    def all_up(self) -> bool:
        return self._not_up == 0

    # --- taking reports -------------------------------------------------------------------

    def observe(self, report: ProbeReport, *, now: float) -> Observed | None:
        """Take one report in; None when it changes nothing (inconclusive, or a probe that a
        reload removed, finishing late)."""
        key = report.key
        previous = self._states.get(key)
        if previous is None or report.inconclusive:
            return None
        result, spec = report.result, key.spec
        self.observed += 1
        self._last[key] = LastProbe(result.ok, result.reason, result.latency, now)
        refs = self._servers_of[key]
        before = [self.status(ref) for ref in refs]
        state = observe(previous, result, spec.rise, spec.fall, now=now)
        self._states[key] = state
        if self._moved is not None:
            self._moved.add(key)
        if not state.changed:
            return Observed(key, previous, state, ())
        self._not_up += (previous.status is Status.UP) - (state.status is Status.UP)
        changes = []
        for ref, was in zip(refs, before, strict=True):
            status = self.status(ref)
            if status is not was:
                changes.append(ServerChange(ref, was, status))
        return Observed(key, previous, state, tuple(changes))
