"""TCP check: the connection opens; optionally, after sending ``send``, the reply matches
``expect`` (a regex searched in the first ``max_bytes`` received)."""

from __future__ import annotations

import asyncio
import re
from typing import Literal, cast

from pydantic import Field, field_validator, model_validator

from lvsd.checks.base import (
    CheckSpec,
    Count,
    ProbeProtocol,
    Prober,
    ProbeTarget,
    Text,
    checked_regex,
    open_stream,
    os_error_reason,
    set_stage,
)
from lvsd.probe import ProbeResult


class TcpCheck(CheckSpec):
    type: Literal["tcp"] = "tcp"
    send: Text | None = None
    expect: Text | None = None
    max_bytes: Count = Field(default=4096, ge=1, le=1024 * 1024)

    @field_validator("expect")
    @classmethod
    def _expect_is_a_regex(cls, value: str | None) -> str | None:
        return checked_regex(value, "expect")

    @model_validator(mode="after")
    def _send_is_not_empty(self) -> TcpCheck:
        if self.send == "":
            raise ValueError("send is empty: leave it out for a connect-only check")
        return self

    def prober(self) -> Prober:
        return TcpProber(self)


class _Exchange(ProbeProtocol):
    """Writes ``payload`` and collects the reply until ``pattern`` matches, EOF, or the cap."""

    def __init__(self, payload: bytes | None, pattern: re.Pattern[bytes] | None, max_bytes: int,
                 done: asyncio.Future[str]) -> None:
        self.payload = payload
        self.pattern = pattern
        self.max_bytes = max_bytes
        self.done = done
        self.received = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.payload:
            cast(asyncio.Transport, transport).write(self.payload)
        if self.pattern is None:
            self._finish("")

    def data_received(self, data: bytes) -> None:
        if self.done.done() or self.pattern is None:
            return
        self.received += data[:self.max_bytes - len(self.received)]
        if self.pattern.search(self.received):
            self._finish("")
        elif len(self.received) >= self.max_bytes:
            self._finish(f"expect mismatch in the first {self.max_bytes} bytes")

    def eof_received(self) -> bool | None:
        self._closed(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._closed(exc)

    def _closed(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError):
            self._finish(os_error_reason(exc))
        elif self.received:
            self._finish(f"expect mismatch ({len(self.received)} bytes before close)")
        else:
            self._finish("closed before a reply")

    def _finish(self, error: str) -> None:
        if not self.done.done():
            self.done.set_result(error)
        self.answered()


class TcpProber(Prober):
    def __init__(self, spec: TcpCheck) -> None:
        self.payload = spec.send.encode() if spec.send is not None else None
        self.pattern = re.compile(spec.expect.encode()) if spec.expect is not None else None
        self.max_bytes = spec.max_bytes

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        done: asyncio.Future[str] = loop.create_future()

        def protocol() -> _Exchange:
            return _Exchange(self.payload, self.pattern, self.max_bytes, done)

        set_stage("connect")
        try:
            _, exchange = await open_stream(protocol, target)
        except OSError as exc:
            return ProbeResult(False, os_error_reason(exc), loop.time() - start)
        set_stage("reply")
        try:
            error = await done
        finally:
            exchange.close()
        return ProbeResult(not error, error or "connected", loop.time() - start)
