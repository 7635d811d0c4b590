"""Signals that arrive before the event loop handles them (imports only the standard library,
so the CLI can install it before it imports the daemon)."""

from __future__ import annotations

import signal
from typing import Protocol


class Steerable(Protocol):
    def request_reload(self) -> None: ...

    def request_stop(self) -> None: ...


class EarlySignals:
    """SIGHUP, SIGTERM and SIGINT that arrive before the event loop handles them (while lvsd
    imports, reads its config, binds its API) are remembered and replayed once it does: a
    reload asked for during start-up is done after it, a stop ends it before the kernel is
    touched. Without this, an early SIGHUP kills the process and an early Ctrl-C prints a
    traceback."""

    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._before: dict[int, object] = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._before[signum] = signal.signal(signum, self._remember)

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced (the daemon has returned)."""
        for signum, handler in self._before.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._before.clear()

    def _remember(self, signum: int, frame: object) -> None:
        self.seen.append(signum)

    def replay(self, daemon: Steerable) -> None:
        for signum in self.seen:
            if signum == signal.SIGHUP:
                daemon.request_reload()
            else:
                daemon.request_stop()
        self.seen.clear()
