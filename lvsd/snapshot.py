"""What the daemon knows at one moment, as plain frozen data for /status, /metrics and the page.

The daemon builds a ``Snapshot`` after each kernel dump; readers never see half an update and
never touch the daemon's mutable state. Times are wall-clock seconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol

from lvsd.model import Dest, DestKey, Service, ServiceKey, VirtualService

Health = Literal["up", "down", "unknown", "unchecked"]
Role = Literal["real", "sorry", "draining", "dr-probe"]


@dataclass(frozen=True, slots=True)
class LastProbe:
    ok: bool
    reason: str
    latency: float  # seconds
    at: float  # wall time the probe finished


@dataclass(frozen=True, slots=True)
class ServerStatus:
    key: DestKey
    role: Role
    configured_weight: int  # 0 for a server being drained
    kernel: Dest | None  # the live destination with its counters; None when not in the kernel
    health: Health
    disabled: bool = False
    check_type: str | None = None
    last_probe: LastProbe | None = None
    health_since: float | None = None  # when ``health`` last changed
    drain_deadline: float | None = None  # set while being drained

    @property
    def kernel_weight(self) -> int | None:
        return None if self.kernel is None else self.kernel.weight


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    key: ServiceKey
    name: str
    kernel: Service | None  # the live service with its counters; None when not in the kernel
    servers: tuple[ServerStatus, ...]
    quorum: int
    healthy_weight: int
    below_quorum: bool
    sorry_active: bool
    fail_open_active: bool


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    ok: bool
    at: float
    error: str | None = None  # why the last reload failed (the old config keeps running)


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Is the kernel table what lvsd last planned? For /status and the metrics."""

    in_sync: bool = False
    consecutive_failures: int = 0  # failed passes in a row
    failed_passes: int = 0  # since start
    last_error: str | None = None  # why the last pass failed
    dumped_at: float = 0.0  # wall time of the last dump, 0 before the first


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: tuple[ServiceStatus, ...]
    foreign: tuple[VirtualService, ...]  # in the kernel, not lvsd's: exported, never changed
    taken_at: float
    ready: bool  # config loaded and the first reconcile done
    config_source: str
    last_reload: ReloadStatus | None = None
    kernel_version: str = ""
    sync: SyncStatus = SyncStatus()


EMPTY_SNAPSHOT = Snapshot((), (), 0.0, False, "")


class SnapshotSource(Protocol):
    """What the HTTP API reads: the latest snapshot, refreshed from the kernel when stale."""

    def snapshot(self) -> Snapshot: ...

    def fresh_snapshot(self, max_age: float) -> Awaitable[Snapshot]: ...
