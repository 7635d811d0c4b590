"""The VIP announcer (``lvsd.announce``) across the daemon's life: started, reconfigured or
retired with each config's ``[announce]``, poked when health may have moved, stopped first
on the way out. Each change goes into the event stream (type ``announcement``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from lvsd.announce import AnnouncementChange, Announcer, Listener, VipHealth, vip_health
from lvsd.events import EventLog
from lvsd.healthbook import HealthBook
from lvsd.routes import Routes
from lvsd.snapshot import AnnounceStatus
from lvsd.spec import AnnounceSettings, Config


class Announcement:
    def __init__(self, routes: Routes, *, config: Callable[[], Config], health: HealthBook,
                 events: EventLog, spawn: Callable[[Coroutine[Any, Any, None]], None],
                 changed: Callable[[], None]) -> None:
        """``config``: the config in force; ``spawn`` runs the announcer; ``changed`` is
        called when what the status shows of it changed."""
        self.routes = routes
        self.announcer: Announcer | None = None  # with [announce]
        # Told of every VIP announced or withdrawn (the event stream may add itself).
        self.listeners: list[Listener] = [self._announcement_changed]
        self._config = config
        self._health = health
        self._events = events
        self._spawn = spawn
        self._changed = changed

    async def configure(self, settings: AnnounceSettings | None) -> None:
        """Start, reconfigure or retire the announcer for ``settings`` (``[announce]``)."""
        announcer = self.announcer
        if announcer is not None and settings is not None:
            await announcer.reconfigure(settings)
        elif announcer is not None:
            self.announcer = None
            await announcer.stop(withdraw=True)
        elif settings is not None:
            announcer = Announcer(settings, self.routes, self._vip_health,
                                  resync_interval=self._config().daemon.resync_interval)
            announcer.listeners = self.listeners
            self.announcer = announcer
            self._spawn(announcer.serve())
        self._changed()

    def poke(self) -> None:
        if self.announcer is not None:
            self.announcer.poke()

    def status(self) -> AnnounceStatus | None:
        return self.announcer.status() if self.announcer else None

    async def stop(self) -> None:
        if self.announcer is not None:
            await self.announcer.stop()

    def _vip_health(self) -> list[VipHealth]:
        config = self._config()
        settings = config.announce
        if settings is None:
            return []
        health = self._health
        return vip_health(settings, config.services,
                          lambda spec, server: health.status((spec.key, server.key)),
                          lambda spec, server: health.probed((spec.key, server.key)))

    def _announcement_changed(self, change: AnnouncementChange) -> None:
        self._events.publish("announcement", {"vip": str(change.vip),
                                              "announced": change.announced,
                                              "reason": change.reason})
        self._changed()
