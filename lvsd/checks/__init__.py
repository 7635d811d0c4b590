"""Health checks: one module per checker type, registered by one line in ``CheckSpecUnion``.

The agent (``lvsd.checks.agent``) is a prober of the same kind but a weight source, not a
health check: ``agent = {...}`` in the config, registered by ``parse_agent``.

The configuration embeds ``check: CheckSpecUnion | None``; the ``type`` field picks the class.
``check_key(target, spec)`` is the identity of a probe: services that share a real server
and a spec share one key, hence one probe and one health state.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field, TypeAdapter

from lvsd.checks.agent import AgentCheck
from lvsd.checks.base import CheckSpec, Prober
from lvsd.checks.dns import DnsCheck
from lvsd.checks.exec import ExecCheck
from lvsd.checks.file import FileCheck
from lvsd.checks.http import HttpCheck, HttpsCheck
from lvsd.checks.target import ProbeTarget
from lvsd.checks.tcp import TcpCheck
from lvsd.probe import CheckKey, ProbeResult, check_key

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
_AGENT: TypeAdapter[AgentCheck] = TypeAdapter(AgentCheck)


def parse_check(data: Any) -> CheckSpec:
    """A spec from a mapping such as a TOML table; raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(data)


def parse_agent(data: Any) -> AgentCheck:
    """An agent spec from a mapping (its ``type`` is implied); raises pydantic.ValidationError."""
    return _AGENT.validate_python(data)


__all__ = [
    "CHECKS",
    "AgentCheck",
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
    "parse_agent",
    "parse_check",
]
