"""The lvsd config an importer writes: services with comments, rendered as TOML.

Importers build a ``Document`` and never format TOML themselves. Every comment is a line
written above the element it concerns, so an operator reading the result sees, next to each
service and server, what of the original had no equivalent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

Scalar = str | int | float | bool
Value = Scalar | list[Scalar] | dict[str, Scalar]


@dataclass
class ServerOut:
    fields: dict[str, Value]
    check: dict[str, Value] | None = None
    comments: list[str] = field(default_factory=list)
    origin: str = ""  # where the importer's input defines it, for its error messages
    more_checks: list[dict[str, Value]] = field(default_factory=list)  # all must pass


@dataclass
class ServiceOut:
    fields: dict[str, Value]
    servers: list[ServerOut] = field(default_factory=list)
    check: dict[str, Value] | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class Document:
    header: list[str] = field(default_factory=list)
    timeouts: dict[str, Value] | None = None
    services: list[ServiceOut] = field(default_factory=list)


def hoist_common_check(service: ServiceOut) -> None:
    """When every server has the same check, write it once on the service."""
    checks = [server.check for server in service.servers]
    if service.check is not None or not checks or checks[0] is None:
        return
    if all(check == checks[0] for check in checks):
        service.check = checks[0]
        for server in service.servers:
            server.check = None


def _scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value}")
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value)  # a JSON string is a TOML basic string


def render_value(value: Value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_scalar(v)}" for key, v in value.items()) + " }"
    return _scalar(value)


def _comment_lines(comments: list[str], indent: str = "") -> list[str]:
    lines = []
    for comment in comments:
        for part in comment.splitlines() or [""]:
            lines.append(f"{indent}# {part}".rstrip())
    return lines


def _fields(values: dict[str, Value]) -> list[str]:
    return [f"{key} = {render_value(value)}" for key, value in values.items()]


def render(document: Document) -> str:
    lines = _comment_lines(document.header)
    if document.timeouts is not None:
        lines += ["", "[timeouts]", *_fields(document.timeouts)]
    for service in document.services:
        lines += ["", *_comment_lines(service.comments), "[[services]]", *_fields(service.fields)]
        if service.check is not None:
            lines += ["", "[services.check]", *_fields(service.check)]
        for server in service.servers:
            lines += ["", *_comment_lines(server.comments), "[[services.real_servers]]",
                      *_fields(server.fields)]
            if server.check is not None:
                lines += ["[services.real_servers.check]", *_fields(server.check)]
            for more in server.more_checks:
                lines += ["[[services.real_servers.checks]]", *_fields(more)]
    return "\n".join(lines).lstrip("\n") + "\n"
