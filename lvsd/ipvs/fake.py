"""An in-memory ``IpvsBackend`` for unit tests of pure logic; never a stand-in for the kernel
in a test that claims kernel behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from lvsd.errors import IpvsError
from lvsd.ipvs.backend import KernelInfo
from lvsd.ipvs.channel import WINDOW
from lvsd.ipvs.memory import MemoryDaemons, MemoryTable
from lvsd.ipvs.reasons import reason
from lvsd.model import Op, SyncDaemon, SyncOp, Table


class FakeIpvs:
    """An ``IpvsBackend`` over a ``MemoryTable``; ``fail`` can veto chosen ops with an errno,
    and ``dump_error`` / ``apply_error`` make the next calls raise, to test recovery. Errors
    have the kernel backend's form (operation, target, errno, reason)."""

    def __init__(self, table: Table | None = None) -> None:
        self.table = MemoryTable.from_table(table or Table())
        self.applied: list[Op] = []
        self.dumps = 0
        self.fail: Callable[[Op], int | None] = lambda op: None
        self.dump_error: Exception | None = None
        self.apply_error: Exception | None = None
        self.sync = MemoryDaemons()
        self.sync_applied: list[SyncOp] = []
        self.daemons_error: Exception | None = None

    async def dump(self) -> Table:
        self.dumps += 1
        if self.dump_error is not None:
            raise self.dump_error
        return self.table.to_table()

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        if self.apply_error is not None:
            raise self.apply_error
        errors: list[IpvsError] = []
        for index, op in enumerate(ops):
            if index and index % WINDOW == 0:
                await asyncio.sleep(0)  # as the kernel backend does between its windows
            code = self.fail(op)
            try:
                if code is not None:
                    raise IpvsError.of(op, code, reason(op, code))
                self.table.execute(op)
                self.applied.append(op)
            except IpvsError as exc:
                errors.append(exc)
        return errors

    async def daemons(self) -> tuple[SyncDaemon, ...]:
        if self.daemons_error is not None:
            raise self.daemons_error
        return self.sync.daemons()

    async def apply_sync(self, ops: Sequence[SyncOp]) -> list[IpvsError]:
        errors: list[IpvsError] = []
        for op in ops:
            try:
                self.sync.execute(op)
                self.sync_applied.append(op)
            except IpvsError as exc:
                errors.append(exc)
        return errors

    async def info(self) -> KernelInfo:
        return KernelInfo("1.2.1", 4096)

    async def close(self) -> None:
        return None
