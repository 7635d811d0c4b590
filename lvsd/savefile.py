"""The save file: the kernel table in ipvsadm-save format, rewritten when it changes.

Nothing here raises: a failed dump, an unwritable directory or an existing file that is not
text at all is logged, and the next change tries again.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from lvsd import logs
from lvsd.files import write_atomic
from lvsd.ipvs.backend import IpvsBackend
from lvsd.ipvsadm.save import format_table_steps
from lvsd.pacing import paced

log = logs.get_logger(__name__)


class SaveFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: bytes | None = None
        self._replacing = threading.Lock()  # a cancelled write's thread may still run

    async def write(self, backend: IpvsBackend, *, force: bool = False) -> bool:
        """Rewrite the file from a fresh dump when its content changes (``force``: compare
        with the file on disk even when lvsd wrote this text last). False when it failed."""
        try:
            table = await backend.dump()
        except Exception as exc:
            log.error("save_dump_failed", path=str(self.path), error=str(exc))
            return False
        try:
            text = await paced(format_table_steps(table))
            data = text.encode("utf-8")
            if data == self._written and not force:
                return True
            # Reading, writing and syncing a 10,000-server file: off the event loop.
            if not await asyncio.to_thread(self._replace, text, data):
                self._written = data
                return True
        except Exception as exc:
            log.error("save_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}")
            return False
        self._written = data
        log.info("saved", path=str(self.path), services=len(table.services),
                 destinations=table.dest_count)
        return True

    def _replace(self, text: str, data: bytes) -> bool:
        """Write ``text`` (``data`` encoded) unless the file holds it already; whether it
        wrote."""
        with self._replacing:
            if self._on_disk() == data:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, text)
            return True

    def _on_disk(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
