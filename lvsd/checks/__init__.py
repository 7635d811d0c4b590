"""Health checks: one module per checker type, registered by one line in ``CheckSpecUnion``.

The configuration embeds ``check: CheckSpecUnion | None``; the ``type`` field picks the class.
``check_key(target, spec)`` is the identity of a probe: services that share a real server
and a spec share one key, hence one probe and one health state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

from pydantic import Field, TypeAdapter

from lvsd.checks.base import CheckSpec, Prober, ProbeResult, ProbeTarget
from lvsd.checks.dns import DnsCheck
from lvsd.checks.exec import ExecCheck
from lvsd.checks.file import FileCheck
from lvsd.checks.http import HttpCheck, HttpsCheck
from lvsd.checks.tcp import TcpCheck

CheckSpecUnion = Annotated[
    TcpCheck
    | HttpCheck
    | HttpsCheck
    | DnsCheck
    | ExecCheck
    | FileCheck,
    Field(discriminator="type"),
]

CHECKS: dict[str, type[CheckSpec]] = {
    spec.model_fields["type"].default: spec for spec in get_args(get_args(CheckSpecUnion)[0])
}

_ADAPTER: TypeAdapter[CheckSpec] = TypeAdapter(CheckSpecUnion)


def parse_check(data: Any) -> CheckSpec:
    """A spec from a mapping such as a TOML table; raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(data)


@dataclass(frozen=True, slots=True)
class CheckKey:
    """One probe: a spec and the target it needs (already reduced by ``spec.relevant``)."""

    spec: CheckSpec
    target: ProbeTarget
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.spec, self.target)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self.spec.describe(self.target)


def check_key(target: ProbeTarget, spec: CheckSpec) -> CheckKey:
    return CheckKey(spec, spec.relevant(target))


__all__ = [
    "CHECKS",
    "CheckKey",
    "CheckSpec",
    "CheckSpecUnion",
    "DnsCheck",
    "ExecCheck",
    "FileCheck",
    "HttpCheck",
    "HttpsCheck",
    "ProbeResult",
    "ProbeTarget",
    "Prober",
    "TcpCheck",
    "check_key",
    "parse_check",
]
