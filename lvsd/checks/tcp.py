"""TCP check: the connection opens; optionally, after sending ``send``, the reply matches
``expect`` (a regex searched in the first ``max_bytes`` received)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lvsd.checks.base import (
    CheckSpec,
    Count,
    Prober,
    RunningProbe,
    Text,
    checked_regex,
    os_error_reason,
)
from lvsd.checks.sockets import SocketProbe, Verdict, run_to_end
from lvsd.checks.target import ProbeTarget
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


class _Exchange:
    """Sends ``payload`` and collects the reply until ``pattern`` matches, EOF, or the cap
    (``sockets.Exchange``); without a pattern the open connection is the answer."""

    __slots__ = ("max_bytes", "pattern", "reply", "request")

    stage = "reply"

    def __init__(self, payload: bytes, pattern: re.Pattern[bytes] | None, max_bytes: int) -> None:
        self.request = payload
        self.pattern = pattern
        self.max_bytes = max_bytes
        self.reply = bytearray()

    def connected(self) -> Verdict | None:
        return _CONNECTED if self.pattern is None else None

    def received(self, data: bytes) -> Verdict | None:
        assert self.pattern is not None
        self.reply += data[:self.max_bytes - len(self.reply)]
        if self.pattern.search(self.reply):
            return _CONNECTED
        if len(self.reply) >= self.max_bytes:
            return False, f"expect mismatch in the first {self.max_bytes} bytes"
        return None

    def closed(self, error: OSError | None) -> Verdict:
        if error is not None:
            return False, os_error_reason(error)
        if self.reply:
            return False, f"expect mismatch ({len(self.reply)} bytes before close)"
        return False, "closed before a reply"


_CONNECTED: Verdict = (True, "connected")


class TcpProber(Prober):
    def __init__(self, spec: TcpCheck) -> None:
        self.payload = spec.send.encode() if spec.send is not None else b""
        self.pattern = re.compile(spec.expect.encode()) if spec.expect is not None else None
        self.max_bytes = spec.max_bytes

    def start(self, target: ProbeTarget, done: Callable[[ProbeResult], None]) -> RunningProbe:
        return SocketProbe(target, _Exchange(self.payload, self.pattern, self.max_bytes), done)

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        return await run_to_end(lambda done: SocketProbe(
            target, _Exchange(self.payload, self.pattern, self.max_bytes), done))
