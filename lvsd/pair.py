"""The director-pair owner: the role (``lvsd.role``), the sync daemons (``lvsd.syncd``) and
the keepalived track file (``lvsd.trackfile``), behind the few calls the daemon makes.

The daemon calls ``start`` before its first pass, ``resync`` on every full pass, ``configure``
after a reload, ``after_pass`` with the services' decisions, and ``stop``. A role change
reconciles the sync daemons at once (``follow-role``); whoever wants the changes themselves
(the event stream) subscribes with ``on_role_change``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from lvsd.ipvs.backend import SyncBackend
from lvsd.metrics import DaemonMetrics
from lvsd.role import ROLE_VALUES, RoleChange, RoleWatcher
from lvsd.spec import Config, role_addresses
from lvsd.syncd import SyncDaemons
from lvsd.trackfile import TrackFile


class DirectorPair:
    def __init__(self, config: Config, backend: SyncBackend | None,
                 metrics: DaemonMetrics) -> None:
        self.metrics = metrics
        self.role = RoleWatcher(role_addresses(config), notify_fifo=config.role.notify_fifo,
                                instance=config.role.instance)
        self.sync = SyncDaemons(backend, config.sync, on_error=metrics.sync_error)
        self.track = TrackFile(config.role.track_file)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.role.subscribe(self._role_changed)

    def on_role_change(self, callback: Callable[[RoleChange], object]) -> None:
        """``callback(change)`` on the daemon's loop after every change of role."""
        self.role.subscribe(callback)

    async def start(self) -> None:
        """Before the first pass. Only ``follow-role`` needs the role for it (which sync daemon
        to run): the other modes start watching after the first pass (``watch``), so the
        seconds pyroute2's import takes on a slow machine never delay readiness."""
        if self.sync.settings.mode == "follow-role":
            await self.role.start()
        await self.resync()

    def watch(self) -> None:
        """After the first pass: follow the role from now on (if ``start`` did not already)."""
        self.role.watch()

    def stop(self) -> None:
        """The sync daemons keep running, like the table: lvsd's end is no failover."""
        self.role.stop()
        for task in self._tasks:
            task.cancel()

    def configure(self, config: Config) -> None:
        self.sync.configure(config.sync)
        self.track.configure(config.role.track_file)
        self.role.configure(role_addresses(config), config.role.notify_fifo,
                            config.role.instance)

    async def resync(self) -> None:
        """Bring the sync daemons to what the mode wants for the current role."""
        async with self._lock:
            await self.sync.reconcile(self.role.role)
        status = self.sync.status
        self.metrics.sync_daemons([(d.state.label, "lvsd" if d.state in status.owned
                                    else "external") for d in status.running])

    def after_pass(self, below_quorum: list[str]) -> None:
        self.track.update(below_quorum)

    def _role_changed(self, change: RoleChange) -> None:
        self.metrics.role(change.role, ROLE_VALUES[change.role])
        task = asyncio.get_running_loop().create_task(self.resync())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> Mapping[str, Any]:
        return {"role": self.role.to_json(), "sync_daemons": self.sync.status.to_json()}
