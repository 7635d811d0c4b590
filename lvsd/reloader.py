"""A reload's first half and its outcome: read and check the new config off the event loop
(any failure keeps the old one running), and record how each reload went, for /status, the
metrics, the event stream, the log and systemd. The daemon does the swap and the migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from lvsd import logs
from lvsd.config import load
from lvsd.errors import ConfigError, LvsdError
from lvsd.events import EventLog
from lvsd.metrics import DaemonMetrics
from lvsd.model import ServiceKey
from lvsd.reloading import keep_restart_only, refuses_emptying
from lvsd.snapshot import ReloadStatus
from lvsd.spec import Config
from lvsd.systemd import Notifier

# Its lines keep the daemon's logger name, as before the move: log filters rely on it.
log = logs.get_logger("lvsd.daemon")


class Reloader:
    def __init__(self, config_path: Path | None, *, metrics: DaemonMetrics, events: EventLog,
                 notifier: Notifier) -> None:
        self.config_path = config_path
        self.last: ReloadStatus | None = None
        self._metrics = metrics
        self._events = events
        self._notifier = notifier

    async def prepare(self, current: Config,
                      owned: Collection[ServiceKey]) -> tuple[Config, Sequence[str]]:
        """The config to swap in, and the restart-only settings it changed that keep their
        values until the next start. Raises whatever makes the reload fail."""
        if self.config_path is None:
            raise LvsdError("no config file to reload")
        # Parsing 10k servers takes long enough to delay probes: off the event loop.
        with prompt_switches():
            loaded = await asyncio.to_thread(load, self.config_path)
        new, held = keep_restart_only(current, loaded)
        if refusal := refuses_emptying(new, owned):
            raise LvsdError(refusal)
        return new, held

    def swapped(self) -> None:
        self._events.reloaded(True, str(self.config_path))

    def succeeded(self) -> None:
        self.last = ReloadStatus(True, time.time())
        self._metrics.reload(True, time.time())

    def failed(self, exc: Exception) -> None:
        error = str(exc) if isinstance(exc, LvsdError) else f"{type(exc).__name__}: {exc}"
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [error]
        self.last = ReloadStatus(False, time.time(), error, tuple(problems))
        self._metrics.reload(False, time.time())
        log.error("reload_failed", config=str(self.config_path), problems=problems)
        self._events.reloaded(False, str(self.config_path), problems)
        self._notifier.ready(f"reload failed, old config kept: {error}")


PARSE_SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005


@contextlib.contextmanager
def prompt_switches() -> Iterator[None]:
    """A shorter GIL switch interval while a worker thread parses: the loop's thread gives the
    GIL up at each socket call of a probe and waits up to a whole interval to get it back
    from the parsing thread, which at 5,000 probes/s starved the loop for a second."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, PARSE_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
