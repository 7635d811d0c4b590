"""An in-memory IPVS table that changes as the kernel's does and refuses what the kernel refuses.

The daemon keeps one as its view of the kernel between full dumps (a health event is planned
against it, not against a fresh 10,000-destination dump); the fake backend is built on it. It
keeps the kernel's error codes (EEXIST, ESRCH for a missing service, ENOENT for a missing
destination or scheduler) and the kernel backend's words (``lvsd.ipvs.reasons``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import assert_never

from lvsd.errors import IpvsError
from lvsd.ipvs.reasons import reason, sync_error
from lvsd.model import (
    KERNEL_DEFAULT_TIMEOUTS,
    SCHEDULERS,
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
    SetTimeouts,
    StartSyncDaemon,
    StopSyncDaemon,
    SyncDaemon,
    SyncOp,
    SyncState,
    Table,
    Timeouts,
    VirtualService,
)
from lvsd.pacing import Steps, finish

FROM_TABLE_SLICE = 50  # services (of up to hundreds of servers each) between two yields


@dataclass
class _Entry:
    service: Service
    dests: dict[DestKey, Dest] = field(default_factory=dict)  # oldest first

    def listed(self) -> tuple[Dest, ...]:
        """In the kernel's order: it adds each destination at the head of the list, and
        ``mh`` builds its table from that order."""
        return tuple(reversed(self.dests.values()))


class MemoryTable:
    """Services in insertion order; destinations keyed by identity and listed newest first,
    as the kernel lists them."""

    def __init__(self) -> None:
        self.entries: dict[ServiceKey, _Entry] = {}
        self.timeouts: Timeouts = KERNEL_DEFAULT_TIMEOUTS

    @classmethod
    def from_table(cls, table: Table) -> MemoryTable:
        return finish(cls.from_table_steps(table))

    @classmethod
    def from_table_steps(cls, table: Table) -> Steps[MemoryTable]:
        """``from_table``, a step per ``FROM_TABLE_SLICE`` services (``lvsd.pacing``)."""
        fake = cls()
        for index, vs in enumerate(table.services, 1):
            fake.entries[vs.key] = _Entry(vs.service, {d.key: d for d in reversed(vs.dests)})
            if index % FROM_TABLE_SLICE == 0:
                yield None
        if table.timeouts is not None:
            fake.timeouts = table.timeouts
        return fake

    def to_table(self) -> Table:
        return Table(
            tuple(
                VirtualService(e.service, e.listed()) for e in self.entries.values()
            ),
            self.timeouts,
        )

    def execute(self, op: Op) -> None:
        """Apply one op, or raise the ``IpvsError`` the kernel would (same errno, same words)."""
        match op:
            case AddService(service):
                self._check_scheduler(op, service)
                if service.key in self.entries:
                    raise _error(op, errno.EEXIST)
                self.entries[service.key] = _Entry(service)
            case EditService(service):
                self._check_scheduler(op, service)
                entry = self._entry(op, service.key)
                entry.service = replace(service, stats=entry.service.stats)
            case DeleteService(key):
                self._entry(op, key)
                del self.entries[key]
            case AddDest(key, dest):
                entry = self._entry(op, key)
                if dest.key in entry.dests:
                    raise _error(op, errno.EEXIST)
                entry.dests[dest.key] = dest
            case EditDest(key, dest):
                entry = self._entry(op, key)
                old = entry.dests.get(dest.key)
                if old is None:
                    raise _error(op, errno.ENOENT)
                entry.dests[dest.key] = replace(dest, stats=old.stats)
            case DeleteDest(key, dest_key):
                entry = self._entry(op, key)
                if dest_key not in entry.dests:
                    raise _error(op, errno.ENOENT)
                del entry.dests[dest_key]
            case SetTimeouts(timeouts):
                self.timeouts = Timeouts(
                    timeouts.tcp or self.timeouts.tcp,
                    timeouts.tcpfin or self.timeouts.tcpfin,
                    timeouts.udp or self.timeouts.udp,
                )
            case _:
                assert_never(op)

    def _entry(self, op: Op, key: ServiceKey) -> _Entry:
        entry = self.entries.get(key)
        if entry is None:
            raise _error(op, errno.ESRCH)
        return entry

    @staticmethod
    def _check_scheduler(op: Op, service: Service) -> None:
        if service.scheduler not in SCHEDULERS:
            raise _error(op, errno.ENOENT)


def _error(op: Op, code: int) -> IpvsError:
    return IpvsError.of(op, code, reason(op, code))


class MemoryDaemons:
    """The sync daemons of one namespace as the kernel keeps them: one master and one backup
    at most (EEXIST), none to stop (ESRCH), an unknown interface (ENODEV); ``interfaces``
    None accepts any name, ``mixed_family`` makes every start fail as the kernel does when
    the namespace has destinations of both families (EINVAL)."""

    def __init__(self, interfaces: frozenset[str] | None = None) -> None:
        self.running: dict[SyncState, SyncDaemon] = {}
        self.interfaces = interfaces
        self.mixed_family = False

    def daemons(self) -> tuple[SyncDaemon, ...]:
        return tuple(self.running[s] for s in sorted(self.running))

    def execute(self, op: SyncOp) -> None:
        match op:
            case StartSyncDaemon(daemon):
                if daemon.state in self.running:
                    raise sync_error(op, errno.EEXIST)
                if self.interfaces is not None and daemon.interface not in self.interfaces:
                    raise sync_error(op, errno.ENODEV)
                if self.mixed_family:
                    raise sync_error(op, errno.EINVAL)
                size = daemon.maxlen if daemon.maxlen is not None else 1472
                self.running[daemon.state] = replace(daemon, maxlen=size)
            case StopSyncDaemon(state):
                if self.running.pop(state, None) is None:
                    raise sync_error(op, errno.ESRCH)
            case _:
                assert_never(op)
