"""File check, a maintenance switch: while the file exists the real server is out.

``path`` may name the real server: ``/etc/lvsd/maintenance/{address}:{port}`` (also
``{vip}`` and ``{vport}``). It reacts at the first probe (rise and fall default to 1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import string
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from lvsd.checks.base import CheckSpec, Count, Prober, Text
from lvsd.checks.target import ProbeTarget
from lvsd.probe import ProbeResult

PLACEHOLDERS = frozenset({"address", "port", "vip", "vport"})
_NO_ADDRESS = ipaddress.IPv4Address(0)


def placeholders(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(template)
                     if field is not None)


class FileCheck(CheckSpec):
    type: Literal["file"] = "file"
    connects: ClassVar[bool] = False
    path: Text
    rise: Count = Field(default=1, ge=1, le=1000)
    fall: Count = Field(default=1, ge=1, le=1000)

    @field_validator("path")
    @classmethod
    def _template_is_known(cls, value: str) -> str:
        if not value:
            raise ValueError("path is empty")
        try:
            names = placeholders(value)
        except ValueError as exc:
            raise ValueError(f"bad path template: {exc}") from None
        unknown = names - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; "
                             f"known: {sorted(PLACEHOLDERS)}")
        if "\x00" in value:
            raise ValueError("path contains a NUL byte")
        try:  # conversions and format specs fail only when formatted: try them now
            value.format(address=_NO_ADDRESS, port=0, vip="", vport=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"bad path template: {exc}") from None
        return value

    @model_validator(mode="after")
    def _does_not_connect(self) -> FileCheck:
        if self.dr_path or self.connect_ip is not None or self.connect_port is not None:
            raise ValueError("a file check connects nowhere: drop dr_path/connect_ip/connect_port")
        return self

    def prober(self) -> Prober:
        return FileProber(self)

    def relevant(self, target: ProbeTarget) -> ProbeTarget:
        """Only what the path names: one probe per distinct path."""
        used = placeholders(self.path)
        rs_address = target.rs_address if target.rs_address is not None else target.address
        rs_port = target.rs_port or target.port
        return ProbeTarget(
            _NO_ADDRESS, 0,
            rs_address=rs_address if "address" in used else None,
            rs_port=rs_port if "port" in used else 0,
            vip=target.vip if "vip" in used else None,
            vport=target.vport if "vport" in used else 0)

    def describe(self, target: ProbeTarget) -> str:
        return f"file {self.path_for(target)}"

    def path_for(self, target: ProbeTarget) -> str:
        rs_address = target.rs_address if target.rs_address is not None else target.address
        return self.path.format(address=rs_address, port=target.rs_port or target.port,
                                vip="" if target.vip is None else target.vip, vport=target.vport)


class FileProber(Prober):
    def __init__(self, spec: FileCheck) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        path = self.spec.path_for(target)
        # in a thread: a stat on a hung network file system must not stall the event loop
        if await asyncio.to_thread(os.path.lexists, path):
            return ProbeResult(False, f"maintenance file {path}")
        return ProbeResult(True, "no maintenance file")
