"""The reverse channel to keepalived: a ``track_file`` lvsd writes, keepalived reads.

keepalived re-reads a tracked file whenever it changes (inotify) and adds value x weight to
the VRRP priority, or goes to FAULT for a non-zero value with weight 0. lvsd writes ``0``
while every service meets its quorum and ``1`` while one is below it, so a director that
cannot serve gives the VIP away. The file is replaced whole; a write that fails is logged and
tried again at the next pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lvsd import logs
from lvsd.files import write_atomic

log = logs.get_logger(__name__)


def track_value(below_quorum: Iterable[str]) -> int:
    return 1 if any(True for _ in below_quorum) else 0


class TrackFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.value: int | None = None  # as last written

    def configure(self, path: Path | None) -> None:
        if path != self.path:
            self.path, self.value = path, None

    def update(self, below_quorum: Iterable[str]) -> None:
        """Write the value for the services now below quorum, if it changed."""
        if self.path is None:
            return
        names = sorted(below_quorum)
        value = track_value(names)
        if value == self.value:
            return
        try:
            write_atomic(self.path, f"{value}\n")
        except OSError as exc:
            log.error("track_file_write_failed", path=str(self.path), error=str(exc))
            return
        self.value = value
        log.info("track_file_written", path=str(self.path), value=value, below_quorum=names)
