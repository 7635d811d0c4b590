"""The contract every IPVS table backend keeps: the kernel over netlink, or the in-memory fake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lvsd.errors import IpvsError
from lvsd.model import Op, SyncDaemon, SyncOp, Table


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


@runtime_checkable
class SyncBackend(Protocol):
    """The kernel's connection-sync daemons of the same namespace (NEW/DEL/GET_DAEMON)."""

    async def daemons(self) -> tuple[SyncDaemon, ...]:
        """The running thread sets, master first; raises ``IpvsError`` when unreadable."""
        ...

    async def apply_sync(self, ops: Sequence[SyncOp]) -> list[IpvsError]:
        """Start and stop daemons in order; a failed op does not stop the rest. Each error's
        ``name`` is the op's (``start_sync_daemon``)."""
        ...
