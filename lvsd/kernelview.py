"""lvsd's view of the kernel table between dumps, and whether the kernel is in sync with it.

A health event is planned against the view (a ``MemoryTable`` kept up to date with every op
the kernel accepted), not against a fresh 10,000-destination dump. A pass that fails (a dump
or an apply that raised, or an op the kernel refused) marks the kernel out of sync and asks
for one retry, after a delay that doubles with each consecutive failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from lvsd.errors import IpvsError
from lvsd.ipvs.backend import IpvsBackend
from lvsd.ipvs.memory import MemoryTable
from lvsd.model import Dest, DestKey, Op, ServiceKey, Table, VirtualService
from lvsd.pacing import Pacer, Steps, finish, paced
from lvsd.snapshot import SyncStatus

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


class KernelView:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.table = MemoryTable()
        self.stale = True  # unknown until the next dump
        self.dumped_at = 0.0
        self.failures = 0
        self.failed_passes = 0
        self.last_error: str | None = None
        self._in_sync = False

    async def refresh(self, backend: IpvsBackend, pacer: Pacer | None = None) -> Table:
        """Dump the kernel; the view becomes the dump (built in slices, ``lvsd.pacing``).
        Raises what the backend raises."""
        actual = await backend.dump()
        self.table = await paced(MemoryTable.from_table_steps(actual), pacer)
        self.stale = False
        self.dumped_at = self._clock()
        return actual

    def service(self, key: ServiceKey) -> VirtualService | None:
        entry = self.table.entries.get(key)
        return None if entry is None else VirtualService(entry.service, entry.listed())

    def dest(self, key: ServiceKey, dest_key: DestKey) -> Dest | None:
        entry = self.table.entries.get(key)
        return None if entry is None else entry.dests.get(dest_key)

    def has_service(self, key: ServiceKey) -> bool:
        return key in self.table.entries

    def applied(self, ops: Sequence[Op], errors: Sequence[IpvsError]) -> None:
        """Follow what the kernel accepted: ``applied_steps`` at once."""
        finish(self.applied_steps(ops, errors))

    def applied_steps(self, ops: Sequence[Op], errors: Sequence[IpvsError]) -> Steps[None]:
        """Follow what the kernel accepted, a step per few hundred ops (``lvsd.pacing``). An
        error that names no op leaves the view unknown."""
        failed = {id(error.op) for error in errors}
        if any(error.op is None for error in errors):
            self.stale = True
            return
        for index, op in enumerate(ops):
            if index % 256 == 255:
                yield None
            if id(op) in failed:
                continue
            try:
                self.table.execute(op)
            except IpvsError:
                self.stale = True  # the kernel took what the view says it would refuse
                return

    def succeeded(self) -> None:
        self.failures = 0
        self.last_error = None
        self._in_sync = True

    def failed(self, error: str, *, unknown: bool) -> float:
        """Record a failed pass; the delay before the retry. ``unknown``: the kernel table
        may differ from the view in ways lvsd cannot tell (the next pass dumps it)."""
        self.failures += 1
        self.failed_passes += 1
        self.last_error = error
        self._in_sync = False
        if unknown:
            self.stale = True
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(self.failures - 1, 16))

    def status(self) -> SyncStatus:
        return SyncStatus(self._in_sync, self.failures, self.failed_passes, self.last_error,
                          self.dumped_at)
