"""An in-memory ``IpvsBackend`` for unit tests of pure logic; never a stand-in for the kernel
in a test that claims kernel behaviour."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence

from lvsd.errors import IpvsError
from lvsd.ipvs.backend import KernelInfo
from lvsd.ipvs.memory import MemoryTable
from lvsd.model import Op, Table


class FakeIpvs:
    """An ``IpvsBackend`` over a ``MemoryTable``; ``fail`` can veto chosen ops to test recovery."""

    def __init__(self, table: Table | None = None) -> None:
        self.table = MemoryTable.from_table(table or Table())
        self.applied: list[Op] = []
        self.dumps = 0
        self.fail: Callable[[Op], int | None] = lambda op: None

    async def dump(self) -> Table:
        self.dumps += 1
        return self.table.to_table()

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        errors: list[IpvsError] = []
        for op in ops:
            code = self.fail(op)
            try:
                if code is not None:
                    raise IpvsError(type(op).__name__, str(op), code, errno.errorcode.get(code, ""))
                self.table.execute(op)
                self.applied.append(op)
            except IpvsError as exc:
                errors.append(exc)
        return errors

    async def info(self) -> KernelInfo:
        return KernelInfo("1.2.1", 4096)

    async def close(self) -> None:
        return None
