"""The contract every IPVS table backend keeps: the kernel over netlink, or the in-memory fake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lvsd.errors import IpvsError
from lvsd.model import Op, Table


@dataclass(frozen=True, slots=True)
class KernelInfo:
    version: str  # "1.2.1"
    conn_table_size: int


class IpvsBackend(Protocol):
    async def dump(self) -> Table:
        """The whole table in kernel order, with 64-bit stats, connection counts and timeouts."""
        ...

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        """Execute ``ops`` in order. A failed op does not stop the rest: its error is returned."""
        ...

    async def info(self) -> KernelInfo: ...

    async def close(self) -> None: ...
