"""Runtime control (``lvsd.control.ControlTarget``): an operator's change to the overrides is
stored in the state file before the answer, then planned and applied; weight overrides end on
time; a reload or a probe on demand. One control request, reload or expiry at a time: the
daemon's reload takes the same ``lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from lvsd import logs
from lvsd.errors import LvsdError
from lvsd.events import EventLog
from lvsd.healthbook import HealthBook
from lvsd.kernelview import KernelView
from lvsd.model import ServiceKey
from lvsd.overrides import Change, Overrides, ServerOutcome
from lvsd.overrides import decode as decode_overrides
from lvsd.probe import ProbeResult
from lvsd.reloader import Reloader
from lvsd.snapshot import ReloadStatus
from lvsd.spec import Config, ServerRef
from lvsd.statekeeper import StateKeeper

# Its lines keep the daemon's logger name, as before the move: log filters rely on it.
log = logs.get_logger("lvsd.daemon")


class Steering:
    def __init__(self, overrides: Overrides, *, keeper: StateKeeper, health: HealthBook,
                 view: KernelView, events: EventLog,
                 replan: Callable[[Iterable[ServiceKey]], Awaitable[None]],
                 reload: Callable[[], Awaitable[object]], reloads: Reloader,
                 config: Callable[[], Config], ready: Callable[[], bool],
                 lock: asyncio.Lock) -> None:
        """``keeper`` stores the overrides in the state file; ``replan`` plans and applies the
        given services; ``reload`` reloads the config file (taking ``lock`` itself) and
        ``reloads`` says how that went."""
        self._overrides = overrides
        self._health = health
        self._view = view
        self._events = events
        self._keeper = keeper
        self._replan = replan
        self._reload = reload
        self._reloads = reloads
        self._config = config
        self._ready = ready
        self._lock = lock
        self._changed = asyncio.Event()  # the overrides changed: look at their expiry again

    def load(self, slot: Mapping[str, Any]) -> None:
        """Take the overrides in the state file's ``slot``; one it cannot read is logged and
        not applied."""
        try:
            loaded = decode_overrides(slot)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("overrides_unreadable", error=str(exc), detail="starting without overrides")
            return
        for ref, entry in loaded.items():
            self._overrides.put(ref, entry)

    def keep_configured(self, config: Config) -> None:
        """Drop the overrides of servers ``config`` no longer has."""
        if not self._overrides:
            return  # the usual case: no set of every configured server to build
        configured = {(spec.key, server.key) for spec in config.services
                      for server in spec.servers}
        for service_key, dest_key in self._overrides.keep_only(configured):
            log.info("override_dropped", service=str(service_key), server=str(dest_key),
                     detail="the server is no longer in the config")

    @property
    def ready(self) -> bool:
        return self._ready()

    @property
    def config(self) -> Config:
        return self._config()

    async def change_admin(self, make: Callable[[Config], Change]) -> list[ServerOutcome]:
        """One operator change: stored in the state file before the answer, then planned
        and applied (serialised with reloads and with each other)."""
        async with self._lock:
            change = make(self._config())
            overrides = self._overrides
            before = {ref: overrides.get(ref) for ref in change.refs}
            touched = overrides.apply(change, now=time.time())
            if touched:
                if not self._keeper.store():
                    for ref, entry in before.items():
                        overrides.put(ref, entry)
                    self._keeper.store()
                    raise LvsdError(f"cannot write the state file {self._keeper.file.path}; "
                                    f"nothing changed")
                log.info("admin_change", action=change.action.value,
                         servers=[f"{key}/{dest}" for key, dest in change.refs])
                self._publish_admin(change.action.value, change.refs)
                self._changed.set()
                await self._replan(touched)
            return [ServerOutcome(ref, overrides.get(ref), overrides.get(ref) != old,
                                  self._kernel_weight(ref)) for ref, old in before.items()]

    async def expire_overrides(self) -> None:
        async with self._lock:
            ended = self._overrides.expire(time.time())
            if not ended:
                return
            self._keeper.store()
            log.info("weight_override_expired", servers=[f"{k}/{d}" for k, d in ended])
            self._publish_admin("weight-expired", ended)
            await self._replan(service_key for service_key, _ in ended)

    async def expire_on_time(self) -> None:
        """Ends weight overrides on time (``weight … --for``); woken when overrides change."""
        while True:
            due = self._overrides.next_expiry()
            timeout = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
            await self.expire_overrides()

    async def reload_now(self) -> ReloadStatus:
        await self._reload()
        status = self._reloads.last
        assert status is not None
        return status

    async def check_now(self, ref: ServerRef) -> list[tuple[str, ProbeResult]]:
        from lvsd.checks.once import probe_now

        keys = self._health.checks_of(ref)
        results = await asyncio.gather(*(probe_now(key) for key in keys))
        return [(str(key), result) for key, result in zip(keys, results, strict=True)]

    def _publish_admin(self, action: str, refs: Iterable[ServerRef]) -> None:
        for ref in refs:
            entry = self._overrides.get(ref)
            self._events.publish("admin", {
                "action": action, "service": str(ref[0]), "server": str(ref[1]),
                "state": entry.state.value, "weight": entry.weight,
                "weight_until": entry.weight_until})

    def _kernel_weight(self, ref: ServerRef) -> int | None:
        vs = self._view.service(ref[0])
        dest = vs.dest_map().get(ref[1]) if vs is not None else None
        return None if dest is None else dest.weight
