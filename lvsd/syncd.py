"""The kernel's IPVS connection-sync daemons, reconciled level-triggered.

``plan`` is pure: from the ``[sync]`` settings, the director's role, the daemons the kernel
runs and the states lvsd started, it returns the ops that make the kernel run what is wanted.
``SyncDaemons`` owns the rest: it asks the kernel (GET_DAEMON) at every pass, applies the plan,
remembers which daemons it started, and keeps what /status and the metrics show. A kernel
refusal (EEXIST, ESRCH, ENODEV, EINVAL for mixed-family destinations) is logged, counted and
retried at the next pass; it never stops lvsd.

Ownership, like services: at start a running daemon that is exactly what the config wants is
taken as lvsd's (a restarted lvsd finds its own); any other is someone else's and left alone,
unless it holds a state lvsd's mode wants, in which case lvsd restarts it with its own
parameters (the kernel runs one daemon per state). ``external`` touches nothing; ``off`` stops
only what lvsd started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lvsd import logs
from lvsd.errors import IpvsError
from lvsd.ipvs.backend import SyncBackend
from lvsd.model import StartSyncDaemon, StopSyncDaemon, SyncDaemon, SyncOp, SyncState
from lvsd.spec import SyncSettings

log = logs.get_logger(__name__)

Role = Literal["master", "backup", "unknown"]


def wanted(settings: SyncSettings, role: Role) -> dict[SyncState, SyncDaemon]:
    """The daemons ``settings`` wants running for a director of ``role``: an unknown role
    runs the backup (it receives; it cannot lose what it never had)."""
    match settings.mode:
        case "both":
            return {state: settings.daemon(state) for state in SyncState}
        case "follow-role":
            state = SyncState.MASTER if role == "master" else SyncState.BACKUP
            return {state: settings.daemon(state)}
        case "off" | "external":
            return {}


@dataclass(frozen=True, slots=True)
class SyncPlan:
    ops: tuple[SyncOp, ...]
    owned: frozenset[SyncState]  # what lvsd owns once the ops are done


def plan(settings: SyncSettings, role: Role, running: Sequence[SyncDaemon],
         owned: frozenset[SyncState]) -> SyncPlan:
    """The ops that bring the kernel's daemons to what ``settings`` wants for ``role``.

    Starts come first and stops last, so a swap (follow-role) starts the wanted daemon before
    it stops the other, as keepalived does on reload; a daemon with the wrong parameters is
    stopped just before its replacement starts (the kernel runs one per state).
    """
    if settings.mode == "external":
        return SyncPlan((), frozenset())
    want = wanted(settings, role)
    actual = {daemon.state: daemon for daemon in running}
    starts: list[SyncOp] = []
    stops: list[SyncOp] = []
    now_owned = set(owned & actual.keys())
    for state, daemon in want.items():
        current = actual.get(state)
        if current is not None and daemon.satisfied_by(current):
            now_owned.add(state)
            continue
        if current is not None:
            starts.append(StopSyncDaemon(state))
        starts.append(StartSyncDaemon(daemon))
        now_owned.add(state)
    for state in sorted(owned & actual.keys() - want.keys()):
        stops.append(StopSyncDaemon(state))
        now_owned.discard(state)
    return SyncPlan(tuple(starts + stops), frozenset(now_owned))


def adopted(settings: SyncSettings, role: Role, running: Sequence[SyncDaemon]
            ) -> frozenset[SyncState]:
    """The daemons found at start that lvsd takes as its own: exactly what it wants."""
    if settings.mode == "external":
        return frozenset()
    want = wanted(settings, role)
    return frozenset(d.state for d in running if d.state in want
                     and want[d.state].satisfied_by(d))


@dataclass
class SyncDaemonStatus:
    """What /status and the metrics show of the sync daemons."""

    mode: str
    running: tuple[SyncDaemon, ...] = ()
    owned: frozenset[SyncState] = frozenset()
    errors: dict[tuple[str, int], int] = field(default_factory=dict)  # (op name, errno)
    last_error: str | None = None
    checked_at: float = 0.0  # epoch seconds of the last GET_DAEMON that answered

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "daemons": [daemon_json(d, d.state in self.owned) for d in self.running],
            "errors": sum(self.errors.values()),
            "last_error": self.last_error,
            "checked_at": self.checked_at or None,
        }


def daemon_json(daemon: SyncDaemon, owned: bool) -> dict[str, object]:
    return {"state": daemon.state.label, "interface": daemon.interface,
            "syncid": daemon.syncid, "group": str(daemon.group), "port": daemon.port,
            "ttl": daemon.ttl, "maxlen": daemon.maxlen,
            "owner": "lvsd" if owned else "external"}


class SyncDaemons:
    """The owner of the sync daemons: ``reconcile(role)`` at start, on every resync, on a role
    change and after a reload; ``status`` for /status and the metrics."""

    def __init__(self, backend: SyncBackend | None, settings: SyncSettings, *,
                 on_error: Callable[[str, int], None] | None = None) -> None:
        self.backend = backend
        self._on_error = on_error
        self.settings = settings
        self.owned: frozenset[SyncState] = frozenset()
        self.status = SyncDaemonStatus(settings.mode)
        self._started = False

    def configure(self, settings: SyncSettings) -> None:
        """A reloaded ``[sync]``: the next ``reconcile`` applies it."""
        self.settings = settings
        self.status.mode = settings.mode

    async def reconcile(self, role: Role) -> tuple[SyncOp, ...]:
        """One pass; never raises. The ops it applied (refused ones included)."""
        if self.backend is None:
            return ()
        try:
            running = await self.backend.daemons()
        except Exception as exc:  # an unreadable kernel: counted, the next pass retries
            self._failed("get_sync_daemons", getattr(exc, "errno", 0), str(exc))
            return ()
        if not self._started:
            self._started = True
            self.owned = adopted(self.settings, role, running)
            foreign = [d for d in running if d.state not in self.owned]
            for daemon in foreign:
                log.info("sync_daemon_found", daemon=str(daemon), owner="external")
        done = plan(self.settings, role, running, self.owned)
        errors: list[IpvsError] = []
        if done.ops:
            errors = await self.backend.apply_sync(done.ops)
        failed_starts = {e.target for e in errors if e.operation == "start sync daemon"}
        owned = set(done.owned)
        for op in done.ops:
            if isinstance(op, StartSyncDaemon) and op.target in failed_starts:
                owned.discard(op.state)
        self.owned = frozenset(owned)
        for op in done.ops:
            if not any(e.target == op.target and e.operation == op.operation for e in errors):
                log.info("sync_daemon_change", op=op.name, daemon=op.target, role=role)
        for error in errors:
            self._failed(error.name, error.errno, str(error))
        if done.ops:
            try:
                running = await self.backend.daemons()
            except Exception as exc:
                self._failed("get_sync_daemons", getattr(exc, "errno", 0), str(exc))
                return done.ops
        self.status.running = tuple(running)
        self.status.owned = self.owned
        self.status.checked_at = time.time()
        return done.ops

    def _failed(self, name: str, code: int, text: str) -> None:
        key = (name, code or 0)
        self.status.errors[key] = self.status.errors.get(key, 0) + 1
        self.status.last_error = text
        log.error("sync_daemon_failed", op=name, errno=code, error=text)
        if self._on_error is not None:
            self._on_error(name, code or 0)

    def error_counts(self) -> Mapping[tuple[str, int], int]:
        return dict(self.status.errors)
