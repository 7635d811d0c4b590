"""The TOML configuration: schema, validation, and the pure ``Config`` the daemon runs on.

Every part is validated on its own — ``[daemon]``, ``[timeouts]``, each service, each real
server, each check — so one run reports every independent problem, each with its place
(``services[2] "web" (tcp:192.0.2.1:80).real_servers[0].port: …``). pydantic checks types and
ranges field by field, in strict mode (``port = true`` is not port 1); ``_build`` then checks
what spans fields against the kernel's and ipvsadm's limits (``lvsd.limits``) and turns the
schema into model types. What is legal but probably wrong becomes a warning on the ``Config``.

``load``/``loads`` never exit, never half-apply and raise nothing but ``ConfigError``, whatever
the input: they return a whole ``Config`` or raise.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import json
import os
import re
import shutil
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tomli
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
)

from lvsd import limits
from lvsd.checks import CHECKS, AgentCheck, CheckSpec, parse_agent, parse_check
from lvsd.checks.base import parse_duration
from lvsd.checks.exec import ExecCheck
from lvsd.checks.file import FileCheck
from lvsd.errors import ConfigError, Problem
from lvsd.ipvsadm.names import (
    FORWARD_BY_CONFIG_NAME,
    PROTOCOL_BY_NAME,
    SCHED_FLAGS,
    TUNNEL_BY_NAME,
    TUNNEL_CSUM_BY_NAME,
    CsumName,
    ForwardName,
    PersistenceEngine,
    ProtocolName,
    TunnelName,
)
from lvsd.model import (
    DEFAULT_SCHEDULER,
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    SCHEDULERS,
    SVC_F_SCHED1,
    SYNC_DEFAULT_GROUP,
    SYNC_DEFAULT_PORT,
    SYNC_DEFAULT_TTL,
    Address,
    Dest,
    DestKey,
    Family,
    Forward,
    Persistence,
    Service,
    ServiceKey,
    Timeouts,
    Tunnel,
)
from lvsd.spec import (
    SYNC_MODES,
    AnnouncedVip,
    AnnounceSettings,
    Config,
    DaemonSettings,
    RoleSettings,
    ServerSpec,
    ServiceSpec,
    SyncMode,
    SyncSettings,
)

DEFAULT_CONFIG_PATH = Path("/etc/lvsd/lvsd.toml")
DEFAULT_STATE_DIR = Path("/var/lib/lvsd")
DEFAULT_CONTROL_SOCKET = Path("/run/lvsd/lvsd.sock")
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def _within(check: Callable[[int], str | None]) -> AfterValidator:
    """A field validator raising the message of one of ``lvsd.limits``' checks."""

    def validate(value: int) -> int:
        error = check(value)
        if error is not None:
            raise ValueError(error)
        return value

    return AfterValidator(validate)


def _path(value: object) -> object:
    if isinstance(value, str) and (not value or "\x00" in value):
        raise ValueError("expected a non-empty path without NUL bytes")
    return value


def _name(value: str) -> str:
    if not value or not value.isprintable():
        raise ValueError(f"expected a non-empty name of printable characters, got {value!r}")
    return value


def _netmask_value(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a netmask: a dotted IPv4 mask such as \"255.255.255.0\" or a "
                         f"prefix length, got {_shown(value)}")
    return value


def _argv(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value or not value[0] or any("\x00" in arg for arg in value):
        raise ValueError("needs a program: an array of strings, the first one naming it, "
                         "without NUL bytes")
    return value


Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Strict(), _within(limits.port_error)]
Weight = Annotated[int, Strict(), _within(limits.weight_error)]
Threshold = Annotated[int, Strict(), Field(ge=0, le=limits.THRESHOLD_MAX)]
ConnectionTimeout = Annotated[int, Strict(), Field(ge=1), _within(limits.connection_timeout_error)]
FilePath = Annotated[Path, BeforeValidator(_path)]
SlowStart = Annotated[float, BeforeValidator(parse_duration),
                      Field(ge=0, le=86400, allow_inf_nan=False)]
WEIGHTLESS_SCHEDULERS = frozenset(("rr", "lc", "dh"))  # weight 0 or not is all they see


class _Schema(BaseModel):
    # Built on first use: a section the config lacks ([sync], [role], [announce] …) costs
    # nothing at start.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class DaemonSchema(_Schema):
    state_dir: FilePath = DEFAULT_STATE_DIR
    save_file: FilePath | None = None
    listen: Text = "127.0.0.1:9163"
    resync_interval: Annotated[Seconds, Field(le=86400)] = 30.0
    reconcile_delay: Annotated[
        float, BeforeValidator(parse_duration), Field(ge=0, le=10, allow_inf_nan=False)
    ] = 0.005
    drain_timeout: Annotated[Seconds, Field(le=7 * 86400)] = 300.0
    on_stop: Literal["keep", "withdraw"] = "keep"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_probes_in_flight: Annotated[Int, Field(ge=1, le=100_000)] = 10_000
    probe_workers: Literal["auto"] | Annotated[Int, Field(ge=0, le=256)] = "auto"
    dr_check_mark_base: Annotated[Int, _within(limits.probe_mark_base_error)] = 0x4C560000
    allow_empty: Bool = False
    control_socket: FilePath = DEFAULT_CONTROL_SOCKET
    control_group: Text | None = None
    split_brain_probe: Literal["off"] | Annotated[Seconds, Field(ge=0.1, le=60)] = 1.0


class TimeoutsSchema(_Schema):
    tcp: ConnectionTimeout = 900
    tcpfin: ConnectionTimeout = 120
    udp: ConnectionTimeout = 300


class RealServerSchema(_Schema):
    address: Text
    port: Port | None = None
    weight: Weight = 1
    forward: ForwardName | None = None
    upper_threshold: Threshold = 0
    lower_threshold: Threshold = 0
    tunnel_type: TunnelName = "ipip"
    tunnel_port: Port = 0
    tunnel_csum: CsumName = "nocsum"
    check: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = Field(default_factory=list)  # in addition to ``check``
    disabled: Bool = False
    slow_start: SlowStart | None = None  # overrides the service's; 0: off
    agent: dict[str, Any] | None = None  # overrides the service's agent field by field


class SorryServerSchema(_Schema):
    address: Text
    port: Port | None = None
    weight: Annotated[Int, Field(ge=1, le=limits.WEIGHT_MAX)] = 1
    forward: ForwardName | None = None


class ServiceSchema(_Schema):
    name: Annotated[Text, AfterValidator(_name)] | None = None
    protocol: ProtocolName = "tcp"
    address: Text | None = None
    port: Port | None = None
    fwmark: Annotated[Int, _within(limits.fwmark_error)] | None = None
    family: Literal["ipv4", "ipv6"] = "ipv4"
    scheduler: Text = DEFAULT_SCHEDULER
    sched_flags: list[Text] = Field(default_factory=list)
    ops: Bool = False
    persistence: Annotated[Int, _within(limits.persistence_timeout_error)] | None = None
    persistence_netmask: Annotated[str | int, BeforeValidator(_netmask_value)] | None = None
    pe: PersistenceEngine | None = None
    forward: ForwardName = "route"
    on_failure: Literal["weight0", "remove"] = "weight0"
    consistent_hash: Bool = False
    quorum: Annotated[Int, Field(ge=0)] = 1
    sorry_server: SorryServerSchema | None = None
    fail_open: Bool = False
    check: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = Field(default_factory=list)  # in addition to ``check``
    on_change: Annotated[tuple[Text, ...], AfterValidator(_argv)] | None = None
    slow_start: SlowStart = 0.0  # seconds a server that comes back takes to reach its weight
    agent: dict[str, Any] | None = None  # HAProxy agent-check: a weight source per server
    real_servers: list[Any] = Field(default_factory=list)  # each a RealServerSchema


class SyncSchema(_Schema):
    mode: SyncMode = "off"
    interface: Text | None = None
    syncid: Annotated[Int, Field(ge=0, le=255)] = 0
    group: Text = str(SYNC_DEFAULT_GROUP)
    port: Port = SYNC_DEFAULT_PORT
    ttl: Annotated[Int, Field(ge=1, le=255)] = SYNC_DEFAULT_TTL
    maxlen: Annotated[Int, Field(ge=1, le=65535)] | None = None


class RoleSchema(_Schema):
    addresses: tuple[Text, ...] = ()
    notify_fifo: FilePath | None = None
    instance: Text | None = None
    track_file: FilePath | None = None


class AnnouncedVipSchema(_Schema):
    address: Text
    rule: Literal["all", "any"] | None = None


class AnnounceSchema(_Schema):
    table: Annotated[Int, _within(limits.route_table_error)] = 250
    protocol: Annotated[Int, _within(limits.route_protocol_error)] = 250
    hold_down: Annotated[
        float, BeforeValidator(parse_duration), Field(ge=0, le=3600, allow_inf_nan=False)
    ] = 5.0
    withdraw_on_stop: Bool = True
    rule: Literal["all", "any"] = "all"
    vips: list[Any] | None = None  # each an AnnouncedVipSchema; default: every VIP of the services


_TOP_LEVEL = {"daemon": DaemonSchema, "timeouts": TimeoutsSchema, "sync": SyncSchema,
              "role": RoleSchema, "announce": AnnounceSchema, "services": None}


# --- reading ---------------------------------------------------------------------------------

def load(path: str | Path) -> Config:
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [Problem("", f"cannot read: {reason}")]) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [Problem("", f"larger than {MAX_CONFIG_BYTES} bytes")])
    return loads(_decoded(data, source), source=source)


def _decoded(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(source, [Problem(
            f"line {line}, column {column}",
            f"not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8",
        )]) from exc


def loads(text: str, source: str = "<config>") -> Config:
    """The ``Config`` described by ``text``; raises ``ConfigError`` listing every problem."""
    try:
        return _loads(text, source)
    except ConfigError:
        raise
    except Exception as exc:  # nothing an operator writes may escape as another exception
        raise ConfigError(source, [Problem("", f"cannot be read: {type(exc).__name__}: {exc}")]
                          ) from exc


def _loads(text: str, source: str) -> Config:
    try:
        raw = tomli.loads(text.removeprefix("\ufeff"))  # a byte-order mark some editors write
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(source, [_toml_problem(str(exc))]) from exc
    except RecursionError as exc:
        raise ConfigError(source, [Problem("", "not valid TOML: nested too deeply")]) from exc
    problems: list[Problem] = []
    warnings: list[Problem] = []
    config = _build(raw, source, problems, warnings)
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def _toml_problem(message: str) -> Problem:
    match = re.fullmatch(r"(.*) \(at (line \d+, column \d+|end of document)\)", message,
                         re.DOTALL)
    if match is None:
        return Problem("", f"not valid TOML: {message}")
    return Problem(match.group(2), f"not valid TOML: {match.group(1)}")


# --- pydantic's findings in an operator's words ------------------------------------------------

SchemaT = TypeVar("SchemaT", bound=BaseModel)


def _validate(
    schema: type[SchemaT], raw: object, where: str, problems: list[Problem]
) -> SchemaT | None:
    if not isinstance(raw, dict):
        problems.append(Problem(where, f"expected a table, got {_shown(raw)}"))
        return None
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_of(exc, where, schema))
        return None


def _problems_of(
    exc: ValidationError, where: str, schema: type[BaseModel], skip_tag: str | None = None
) -> list[Problem]:
    found = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_internal(part)]
        if skip_tag is not None and loc and loc[0] == skip_tag:
            loc = loc[1:]  # pydantic prefixes the discriminator's value
        if error["type"] == "extra_forbidden" and loc:
            key = loc.pop()
            known = _known_keys(schema, loc)
            message = f"unknown key {str(key)!r}{_suggestion(str(key), known)}"
        else:
            message = _message(error)
        found.append(Problem(_joined(where, format_location(loc)), message))
    return found


def _is_internal(part: int | str) -> bool:
    """pydantic names the branches of unions and validator chains in ``loc``."""
    return isinstance(part, str) and bool(re.search(r"[\[\]()]", part))


def _joined(where: str, inner: str) -> str:
    if not inner:
        return where
    if not where:
        return inner
    return f"{where}{inner}" if inner.startswith("[") else f"{where}.{inner}"


def format_location(loc: Sequence[int | str]) -> str:
    """("services", 2, "real_servers", 0, "port") -> "services[2].real_servers[0].port"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _suggestion(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(schema: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    model: type[BaseModel] | None = schema
    for part in path:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = None if field is None else _model_in(field.annotation)
    return [] if model is None else list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple,
                                         typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _shown(value: object) -> str:
    """A value as the operator wrote it in TOML, shortened."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "an array", "tuple_type": "an array",
    "set_type": "an array", "dict_type": "a table", "model_type": "a table",
    "model_attributes_type": "a table", "path_type": "a path (a string)",
}
_BOUND = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "below"),
          "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "above")}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _KIND:
        return f"expected {_KIND[kind]}, got {_shown(value)}"
    if kind in _BOUND:
        name, words = _BOUND[kind]
        bound = ctx.get(name)
        return f"must be {words} {bound:g}, got {_shown(value)}" if isinstance(
            bound, float) else f"must be {words} {bound}, got {_shown(value)}"
    if kind == "missing":
        return "missing (required)"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return (f"expected {' or '.join(map(repr, expected))}, got {_shown(value)}"
                f"{_suggestion(str(value), expected) if isinstance(value, str) else ''}")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "union_tag_invalid":
        return (f"unknown check type {_shown(ctx.get('tag'))}"
                f"{_suggestion(str(ctx.get('tag')), list(CHECKS))} (one of {', '.join(CHECKS)})")
    if kind == "union_tag_not_found":
        return f"needs a type (one of {', '.join(CHECKS)})"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} item(s)"
    if kind == "finite_number":
        return f"must be a finite number, got {_shown(value)}"
    return re.sub(r"^Input should be", "must be", str(error["msg"]))


# --- building the model --------------------------------------------------------------------------

def _build(
    raw: Mapping[str, Any], source: str, problems: list[Problem], warnings: list[Problem]
) -> Config | None:
    for key in raw:
        if key not in _TOP_LEVEL:
            problems.append(Problem("top level", f"unknown key {key!r}"
                                                 f"{_suggestion(key, list(_TOP_LEVEL))}"))
    daemon_schema = _validate(DaemonSchema, raw.get("daemon", {}), "daemon", problems)
    daemon = None if daemon_schema is None else _build_daemon(daemon_schema, problems, warnings)
    timeouts = None
    if "timeouts" in raw:
        schema = _validate(TimeoutsSchema, raw["timeouts"], "timeouts", problems)
        if schema is not None:
            timeouts = Timeouts(schema.tcp, schema.tcpfin, schema.udp)
    sync = SyncSettings()
    if "sync" in raw:
        sync_schema = _validate(SyncSchema, raw["sync"], "sync", problems)
        if sync_schema is not None:
            sync = _build_sync(sync_schema, problems) or sync
    role = RoleSettings()
    if "role" in raw:
        role_schema = _validate(RoleSchema, raw["role"], "role", problems)
        if role_schema is not None:
            role = _build_role(role_schema, problems, warnings)
    raw_services = raw.get("services", [])
    if not isinstance(raw_services, list):
        problems.append(Problem("services", "expected an array of tables ([[services]]), "
                                            f"got {_shown(raw_services)}"))
        raw_services = []
    services = _build_services(raw_services, problems, warnings)
    announce = None
    if "announce" in raw:
        announce = _announce(raw["announce"], [spec for _, spec in services], problems, warnings)
    mark_base = daemon.dr_check_mark_base if daemon else DaemonSchema().dr_check_mark_base
    for where, spec in services:
        if spec.key.is_fwmark:
            clash = limits.probe_mark_clash_error(spec.key.fwmark, mark_base)
            if clash is not None:
                problems.append(Problem(f"{where}.fwmark", clash))
    dr_checked = sum(1 for _, spec in services for server in spec.servers
                     if any(check.dr_path for check in server.checks))
    if dr_checked > limits.PROBE_MARK_SPAN:
        problems.append(Problem("services", f"{dr_checked} real servers have a dr_path check; "
                                f"lvsd has {limits.PROBE_MARK_SPAN} probe marks"))
    raw_daemon = raw.get("daemon")
    allow_empty = daemon.allow_empty if daemon is not None else (
        isinstance(raw_daemon, dict) and raw_daemon.get("allow_empty") is True)
    if not raw_services and not allow_empty:
        problems.append(Problem("services", EMPTY_CONFIG_MESSAGE))
    if daemon is None:
        return None
    return Config(daemon, tuple(spec for _, spec in services), timeouts, source, sync, role,
                  warnings=tuple(warnings), announce=announce)


EMPTY_CONFIG_MESSAGE = (
    "no services: lvsd would delete every service it owns (a truncated or empty file?); "
    "set allow_empty = true in [daemon] if that is what you want"
)


def _announce(raw: object, services: Sequence[ServiceSpec], problems: list[Problem],
              warnings: list[Problem]) -> AnnounceSettings | None:
    """``[announce]``; its VIPs are examined even when another key of it is wrong."""
    schema = _validate(AnnounceSchema, raw, "announce", problems)
    raw_vips = raw.get("vips") if isinstance(raw, dict) else None
    if schema is None:
        if isinstance(raw_vips, list):
            _announced_vips(raw_vips, "all", services, problems)
        return None
    return _build_announce(schema, services, problems, warnings)


def _build_announce(schema: AnnounceSchema, services: Sequence[ServiceSpec],
                    problems: list[Problem], warnings: list[Problem]) -> AnnounceSettings:
    """The VIPs to announce: those listed (each a VIP of a configured service), else every VIP
    of the configured services (fwmark services have none), in config order."""
    if schema.vips is None:
        vips = [AnnouncedVip(address, schema.rule) for address in _service_vips(services)]
    else:
        vips = _announced_vips(schema.vips, schema.rule, services, problems)
    if schema.hold_down == 0:
        warnings.append(Problem("announce.hold_down", "0: a flapping quorum changes the "
                                "announcement, and the routers' tables, on every flap"))
    return AnnounceSettings(schema.table, schema.protocol, schema.hold_down,
                            schema.withdraw_on_stop, tuple(vips))


def _service_vips(services: Sequence[ServiceSpec]) -> list[Address]:
    return list(dict.fromkeys(spec.key.address for spec in services
                              if spec.key.address is not None))


def _announced_vips(raw_vips: Sequence[object], rule: Literal["all", "any"],
                    services: Sequence[ServiceSpec],
                    problems: list[Problem]) -> list[AnnouncedVip]:
    if not raw_vips:
        problems.append(Problem("announce.vips", "empty: list the VIPs to announce, or "
                                "leave vips out to announce every VIP of the services"))
    configured = _service_vips(services)
    vips: list[AnnouncedVip] = []
    seen: dict[Address, int] = {}
    for index, raw_vip in enumerate(raw_vips):
        vip = _validate(AnnouncedVipSchema, raw_vip, f"announce.vips[{index}]", problems)
        if vip is None:
            continue
        where = f"announce.vips[{index}].address"
        address = _address(vip.address, where, problems)
        if address is None:
            continue
        if address in seen:
            problems.append(Problem(where, f"{address} is also announce.vips[{seen[address]}]"))
            continue
        seen[address] = index
        if address not in configured:
            known = ", ".join(map(str, configured)) or "none"
            problems.append(Problem(where, f"{address} is not the address of any service "
                                    f"(the services' VIPs: {known})"))
            continue
        vips.append(AnnouncedVip(address, vip.rule or rule))
    return vips


def _build_services(
    raw_services: Sequence[object], problems: list[Problem], warnings: list[Problem]
) -> list[tuple[str, ServiceSpec]]:
    built: list[tuple[str, ServiceSpec]] = []
    seen: dict[ServiceKey, str] = {}
    names: dict[str, str] = {}
    for index, raw_service in enumerate(raw_services):
        where = _service_place(index, raw_service)
        svc = _validate(ServiceSchema, raw_service, where, problems)
        if svc is None:
            _report_inside(raw_service, where, problems)
            continue
        key, spec = _build_service(svc, where, problems, warnings)
        if key is not None and key in seen:
            problems.append(Problem(where, f"duplicate of {seen[key]}"))
            continue
        if key is not None:
            seen[key] = where
        if spec is None:
            continue
        if spec.name in names:
            problems.append(Problem(f"{where}.name",
                                    f"duplicate name {spec.name!r} (also {names[spec.name]})"))
        names.setdefault(spec.name, where)
        built.append((where, spec))
    return built


def _report_inside(raw_service: object, where: str, problems: list[Problem]) -> None:
    """A service that failed validation still has its real servers and check examined, so that
    one run reports every mistake."""
    if not isinstance(raw_service, dict):
        return
    if isinstance(raw_service.get("check"), dict):
        _check(raw_service["check"], f"{where}.check", problems, [])
    raw_servers = raw_service.get("real_servers")
    if isinstance(raw_servers, list):
        for index, raw_server in enumerate(raw_servers):
            rs_where = f"{where}.{_server_place(index, raw_server)}"
            rs = _validate(RealServerSchema, raw_server, rs_where, problems)
            if rs is not None and rs.check is not None and "check" not in raw_service:
                _check(rs.check, f"{rs_where}.check", problems, [])


def _service_place(index: int, raw: object) -> str:
    """``services[2] "web" (tcp:192.0.2.1:80)``: as much as the raw table tells."""
    place = f"services[{index}]"
    if not isinstance(raw, dict):
        return place
    name = raw.get("name")
    if isinstance(name, str) and name:
        place += f" {json.dumps(name, ensure_ascii=False)}"
    fwmark, address, port = raw.get("fwmark"), raw.get("address"), raw.get("port")
    protocol = raw.get("protocol", "tcp")
    if isinstance(fwmark, int) and not isinstance(fwmark, bool):
        place += f" (fwm:{fwmark})"
    elif isinstance(address, str) and isinstance(port, int) and not isinstance(port, bool):
        shown = f"[{address}]" if ":" in address and not address.startswith("[") else address
        place += f" ({protocol if isinstance(protocol, str) else '?'}:{shown}:{port})"
    return place


def _server_place(index: int, raw: object) -> str:
    place = f"real_servers[{index}]"
    if isinstance(raw, dict) and isinstance(raw.get("address"), str):
        place += f" ({raw['address']})"
    return place


def _build_daemon(
    schema: DaemonSchema, problems: list[Problem], warnings: list[Problem]
) -> DaemonSettings:
    host, port = "127.0.0.1", 9163
    listen = _listen_address(schema.listen)
    if isinstance(listen, str):
        problems.append(Problem("daemon.listen", listen))
    else:
        host, port = listen
        if ipaddress.ip_address(host).is_unspecified:
            warnings.append(Problem("daemon.listen", f"{schema.listen} listens on every "
                                    "interface: /metrics, /status and the API are reachable "
                                    "from any network (use 127.0.0.1 or one address)"))
    save_file = schema.save_file or schema.state_dir / "ipvsadm.rules"
    for name, value in (("state_dir", schema.state_dir), ("save_file", schema.save_file)):
        if value is not None and not value.is_absolute():
            warnings.append(Problem(f"daemon.{name}", _relative_path_warning(value)))
    control_gid = _control_gid(schema, problems)
    return DaemonSettings(
        state_dir=schema.state_dir,
        save_file=save_file,
        listen_host=host,
        listen_port=port,
        resync_interval=schema.resync_interval,
        reconcile_delay=schema.reconcile_delay,
        drain_timeout=schema.drain_timeout,
        on_stop=schema.on_stop,
        log_level=schema.log_level,
        max_probes_in_flight=schema.max_probes_in_flight,
        probe_workers=schema.probe_workers,
        dr_check_mark_base=schema.dr_check_mark_base,
        allow_empty=schema.allow_empty,
        control_socket=schema.control_socket,
        control_group=schema.control_group,
        control_gid=control_gid,
        split_brain_probe=None if schema.split_brain_probe == "off"
        else schema.split_brain_probe,
    )


def _control_gid(schema: DaemonSchema, problems: list[Problem]) -> int | None:
    """The control socket's path must fit a unix socket address; its group must exist."""
    path = schema.control_socket
    if not path.is_absolute():
        problems.append(Problem("daemon.control_socket",
                                f"{str(path)!r} is not an absolute path"))
    elif len(os.fsencode(path)) > UNIX_PATH_MAX:
        problems.append(Problem("daemon.control_socket",
                                f"{str(path)!r} is longer than the {UNIX_PATH_MAX} bytes "
                                f"a unix socket path may have"))
    if schema.control_group is None:
        return None
    try:
        return grp.getgrnam(schema.control_group).gr_gid
    except KeyError:
        problems.append(Problem("daemon.control_group",
                                f"no group {schema.control_group!r} on this host"))
        return None


IFNAME_MAX = 15  # IFNAMSIZ less the NUL


def interface_name_error(name: str) -> str | None:
    """What the kernel would refuse in an interface name (``dev_valid_name``)."""
    if not name:
        return "is empty"
    if len(name.encode()) > IFNAME_MAX:
        return f"{name!r} is longer than {IFNAME_MAX} bytes (the kernel's IFNAMSIZ)"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return f"{name!r} is not an interface name (no '/', ':' or white space; not . or ..)"
    return None


def _build_sync(schema: SyncSchema, problems: list[Problem]) -> SyncSettings | None:
    before = len(problems)
    if schema.interface is not None:
        _limit(interface_name_error(schema.interface), "sync.interface", problems)
    elif schema.mode in ("both", "follow-role"):
        problems.append(Problem("sync.interface", f"mode {schema.mode!r} needs the interface "
                                "the sync messages go out and come in on"))
    group: Address = SYNC_DEFAULT_GROUP
    try:
        group = ipaddress.ip_address(schema.group.strip("[]"))
    except ValueError:
        problems.append(Problem("sync.group", f"not an IP address: {schema.group!r}"))
    else:
        if not group.is_multicast:
            problems.append(Problem("sync.group", f"{group} is not a multicast address "
                                    "(224.0.0.0/4 or ff00::/8)"))
    if schema.port == 0:
        problems.append(Problem("sync.port", "0 is out of range: the sync messages need a "
                                f"UDP port, 1..{limits.PORT_MAX - 31}"))
    elif schema.port + 31 > limits.PORT_MAX:  # thread i of sync_ports (at most 32) uses port+i
        problems.append(Problem("sync.port", f"{schema.port} leaves no room for the ports of "
                                f"more sync threads (port + sync_ports - 1 must be at most "
                                f"{limits.PORT_MAX}): use {limits.PORT_MAX - 31} or less"))
    if len(problems) > before:
        return None
    assert schema.mode in SYNC_MODES
    return SyncSettings(schema.mode, schema.interface or "", schema.syncid, group, schema.port,
                        schema.ttl, schema.maxlen)


def _build_role(schema: RoleSchema, problems: list[Problem],
                warnings: list[Problem]) -> RoleSettings:
    addresses: list[Address] = []
    for index, text in enumerate(schema.addresses):
        address = _address(text, f"role.addresses[{index}]", problems)
        if address is not None:
            addresses.append(address)
    for name, value in (("notify_fifo", schema.notify_fifo), ("track_file", schema.track_file)):
        if value is not None and not value.is_absolute():
            warnings.append(Problem(f"role.{name}", _relative_path_warning(value)))
    if schema.instance is not None and not schema.instance:
        problems.append(Problem("role.instance", "is empty: name a VRRP instance or leave "
                                "the key out to follow every instance"))
    return RoleSettings(tuple(addresses), schema.notify_fifo, schema.instance or None,
                        schema.track_file)


def _listen_address(text: str) -> tuple[str, int] | str:
    """``127.0.0.1:9163`` or ``[::1]:9163`` as (host, port), or what is wrong with it."""
    usage = "expected IP:PORT, e.g. 127.0.0.1:9163 or [::1]:9163"
    match = re.fullmatch(r"\[([^\[\]]+)\]:(\d{1,5})|([^\[\]:]+):(\d{1,5})", text)
    if match is None:
        return f"{usage}, got {text!r}"
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{usage}: {host!r} is not an IP address (host names are not looked up)"
    if match.group(1) is not None and address.version != 6:
        return f"{usage}: only IPv6 addresses go in brackets"
    if not 1 <= port <= limits.PORT_MAX:
        return f"{usage}: port {port} is out of range 1..{limits.PORT_MAX}"
    return host, port


def _relative_path_warning(path: Path | str) -> str:
    return (f"relative path {str(path)!r} is resolved against the daemon's working directory "
            f"(/ under systemd): write an absolute path")


def _address(text: str, where: str, problems: list[Problem]) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        problems.append(Problem(where, f"not an IP address: {text!r}"))
        return None


def _limit(error: str | None, where: str, problems: list[Problem]) -> bool:
    """Record ``error`` (from ``lvsd.limits``) at ``where``; True when there was none."""
    if error is not None:
        problems.append(Problem(where, error))
    return error is None


def _build_service(
    svc: ServiceSchema, where: str, problems: list[Problem], warnings: list[Problem]
) -> tuple[ServiceKey | None, ServiceSpec | None]:
    before = len(problems)
    key = _service_key(svc, where, problems)
    if svc.scheduler not in SCHEDULERS:
        problems.append(Problem(f"{where}.scheduler", f"unknown scheduler {svc.scheduler!r}"
                                f"{_suggestion(svc.scheduler, SCHEDULERS)} "
                                f"(one of {', '.join(SCHEDULERS)})"))
    scheduler = svc.scheduler
    sched_flags = 0
    if svc.consistent_hash:
        _consistent_hash_problems(svc, where, problems)
        scheduler, sched_flags = "mh", SVC_F_SCHED1  # mh-fallback: weight 0 keeps the slots
    for flag in svc.sched_flags:
        owner = SCHED_FLAGS.get(flag)
        if owner is None:
            problems.append(
                Problem(
                    f"{where}.sched_flags",
                    f"unknown flag {flag!r}{_suggestion(flag, list(SCHED_FLAGS))} "
                    f"(one of {', '.join(SCHED_FLAGS)})",
                )
            )
        elif owner[0] is not None and owner[0] != scheduler:
            problems.append(
                Problem(
                    f"{where}.sched_flags",
                    f"{flag!r} needs scheduler {owner[0]!r}, not {scheduler!r}",
                )
            )
        else:
            sched_flags |= owner[1]
    family = key.family if key else Family.INET
    persistence = None
    if svc.persistence is not None:
        netmask = _netmask(
            svc.persistence_netmask, family, f"{where}.persistence_netmask", problems
        )
        persistence = Persistence(svc.persistence, netmask)
    elif svc.persistence_netmask is not None:
        problems.append(Problem(f"{where}.persistence_netmask", "needs persistence (a timeout)"))
    if svc.pe is not None and persistence is None:
        problems.append(Problem(f"{where}.pe", "a persistence engine needs persistence"))
    if key is not None:
        _limit(limits.zero_port_error(key.port, persistence is not None, key.protocol),
               f"{where}.port", problems)
        if svc.ops:
            _limit(limits.onepacket_error(key.protocol), f"{where}.ops", problems)

    check = None
    if svc.check is not None:
        check = _check(svc.check, f"{where}.check", problems, warnings)
    extra_checks = _checks(svc.checks, f"{where}.checks", problems, warnings)
    if svc.agent is not None:
        _agent(svc.agent, f"{where}.agent", problems, warnings)

    servers: list[ServerSpec] = []
    seen: dict[DestKey, str] = {}
    for index, raw_server in enumerate(svc.real_servers):
        rs_place = _server_place(index, raw_server)
        rs_where = f"{where}.{rs_place}"
        rs = _validate(RealServerSchema, raw_server, rs_where, problems)
        if rs is None:
            continue
        server = _build_server(rs, svc, key, check, extra_checks, rs_where, problems, warnings)
        if server is None:
            continue
        if server.key in seen:
            problems.append(Problem(rs_where, f"duplicate of {seen[server.key]}"))
            continue
        if svc.consistent_hash and server.dest.weight == 0:
            problems.append(Problem(f"{rs_where}.weight", "weight 0 with consistent_hash = true "
                                    "gives this server no mh slots on a director that adds it "
                                    "but keeps its old ones on a director that had it: give "
                                    "it a weight of 1 or more and take it out of rotation "
                                    "with disabled = true"))
        seen[server.key] = rs_place
        servers.append(server)

    sorry = None
    if svc.sorry_server is not None:
        sorry_where = f"{where}.sorry_server"
        sorry = _dest(
            svc.sorry_server.address,
            svc.sorry_server.port,
            svc.sorry_server.weight,
            svc.sorry_server.forward or svc.forward,
            svc,
            key,
            sorry_where,
            problems,
        )
        if sorry is not None and sorry.key in seen:
            problems.append(Problem(sorry_where, f"{sorry.key} is also a real server"))
    _weightless_warnings(svc, servers, where, warnings)
    if svc.consistent_hash:
        _consistent_weight_problems(servers, where, problems, warnings)
    total_weight = sum(server.dest.weight for server in servers if not server.disabled)
    if servers and svc.quorum > total_weight:
        warnings.append(Problem(f"{where}.quorum", f"quorum {svc.quorum} is above the total "
                                f"weight {total_weight} of the real servers: the service is "
                                f"always below quorum"))

    if key is None or len(problems) > before:
        return key, None
    service = Service(key, scheduler, sched_flags, svc.ops, persistence, svc.pe)
    return key, ServiceSpec(
        service=service,
        name=svc.name or str(key),
        servers=tuple(servers),
        on_failure=svc.on_failure,
        quorum=svc.quorum,
        sorry_server=sorry,
        fail_open=svc.fail_open,
        on_change=tuple(svc.on_change or ()),
        consistent_hash=svc.consistent_hash,
    )


CONSISTENT_HASH_FLAGS = ("mh-fallback", "mh-port")


def _consistent_hash_problems(svc: ServiceSchema, where: str, problems: list[Problem]) -> None:
    """``consistent_hash = true`` means scheduler mh with mh-fallback and on_failure weight0:
    say what contradicts it, and the fix."""
    if "scheduler" in svc.model_fields_set and svc.scheduler != "mh":
        problems.append(Problem(f"{where}.scheduler", f"consistent_hash = true schedules with "
                                f"\"mh\", not \"{svc.scheduler}\": set scheduler = \"mh\" or "
                                f"leave scheduler out"))
    for flag in svc.sched_flags:
        if flag in SCHED_FLAGS and flag not in CONSISTENT_HASH_FLAGS:
            problems.append(Problem(f"{where}.sched_flags", f"{flag!r} does not go with "
                                    f"consistent_hash = true: only "
                                    f"{' and '.join(CONSISTENT_HASH_FLAGS)} (mh-fallback is "
                                    f"always set)"))
    if svc.on_failure != "weight0":
        problems.append(Problem(f"{where}.on_failure", f"consistent_hash = true needs "
                                f"on_failure = \"weight0\", not \"{svc.on_failure}\": removing "
                                f"a failed server changes the mh table on this director only; "
                                f"set on_failure = \"weight0\" or leave it out"))


def _service_key(svc: ServiceSchema, where: str, problems: list[Problem]) -> ServiceKey | None:
    if svc.fwmark is not None:
        for name in ("address", "port"):
            if getattr(svc, name) is not None:
                problems.append(
                    Problem(f"{where}.{name}", "a fwmark service has no address or port")
                )
        if "protocol" in svc.model_fields_set:
            problems.append(Problem(f"{where}.protocol", "a fwmark service has no protocol"))
        family = Family.INET6 if svc.family == "ipv6" else Family.INET
        return ServiceKey.mark(svc.fwmark, family)
    if svc.address is None or svc.port is None:
        problems.append(Problem(where, "needs address and port, or fwmark"))
        return None
    address = _address(svc.address, f"{where}.address", problems)
    if address is None:
        return None
    if not _limit(limits.virtual_address_error(address), f"{where}.address", problems):
        return None
    if "family" in svc.model_fields_set:
        problems.append(Problem(f"{where}.family", "only for fwmark services (the address tells)"))
    return ServiceKey.virtual(PROTOCOL_BY_NAME[svc.protocol], address, svc.port)


def _netmask(
    value: str | int | None, family: Family, where: str, problems: list[Problem]
) -> int | None:
    if value is None:
        return None
    if family is Family.INET6:
        if isinstance(value, int) and limits.ipv6_prefix_error(value) is None:
            return None if value == HOST_PREFIX_V6 else value
        problems.append(
            Problem(where, f"an IPv6 persistence netmask is a prefix length 1..128, got {value!r}")
        )
        return None
    try:
        mask = int(ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask)
    except ValueError:
        problems.append(Problem(where, f"not an IPv4 netmask: {value!r}"))
        return None
    return None if mask == HOST_NETMASK_V4 else mask


def _check(
    raw: Mapping[str, Any], where: str, problems: list[Problem], warnings: list[Problem]
) -> CheckSpec | None:
    tag = raw.get("type")
    try:
        spec = parse_check(raw)
    except ValidationError as exc:
        schema = CHECKS.get(tag) if isinstance(tag, str) else None
        problems.extend(_problems_of(exc, where, schema or CheckSpec,
                                     tag if isinstance(tag, str) else None))
        return None
    _check_warnings(spec, where, warnings)
    return spec


def _check_warnings(spec: CheckSpec, where: str, warnings: list[Problem]) -> None:
    if spec.timeout > spec.interval:
        warnings.append(Problem(f"{where}.timeout", f"{spec.timeout:g} s is longer than the "
                                f"interval {spec.interval:g} s: a hung probe delays the next"))
    if isinstance(spec, FileCheck) and not os.path.isabs(spec.path):
        warnings.append(Problem(f"{where}.path", _relative_path_warning(spec.path)))
    if isinstance(spec, ExecCheck):
        problem = _program_problem(spec.argv[0])
        if problem is not None:
            warnings.append(Problem(f"{where}.argv", problem))


def _program_problem(program: str) -> str | None:
    if "/" not in program:
        if shutil.which(program) is None:
            return f"program {program!r} is not found in PATH"
        return None
    if not os.path.isabs(program):
        return _relative_path_warning(program)
    if not os.path.isfile(program):
        return f"program {program!r} does not exist"
    if not os.access(program, os.X_OK):
        return f"program {program!r} is not executable"
    return None


def _checks(
    raws: list[dict[str, Any]], where: str, problems: list[Problem], warnings: list[Problem]
) -> tuple[CheckSpec, ...]:
    specs = (_check(raw, f"{where}[{index}]", problems, warnings)
             for index, raw in enumerate(raws))
    return tuple(spec for spec in specs if spec is not None)


def _merged_check(
    service_check: Mapping[str, Any] | None, override: Mapping[str, Any]
) -> dict[str, Any]:
    """A server's ``check`` table overrides the service's field by field, unless it names
    another type, which replaces the service's check whole."""
    if service_check is None or override.get(
        "type", service_check.get("type")
    ) != service_check.get("type"):
        return dict(override)
    return {**service_check, **override}


def _build_server(
    rs: RealServerSchema,
    svc: ServiceSchema,
    key: ServiceKey | None,
    service_check: CheckSpec | None,
    service_checks: tuple[CheckSpec, ...],
    where: str,
    problems: list[Problem],
    warnings: list[Problem],
) -> ServerSpec | None:
    """The server's checks: the service's ``check`` (or the server's own, which overrides it),
    then the service's ``checks``, then the server's ``checks``; all must pass."""
    dest = _dest(
        rs.address, rs.port, rs.weight, rs.forward or svc.forward, svc, key, where, problems, rs
    )
    check = service_check
    if rs.check is not None:
        check = _check(_merged_check(svc.check, rs.check), f"{where}.check", problems, warnings)
    placed: list[tuple[str, CheckSpec]] = [] if check is None else [(f"{where}.check", check)]
    placed.extend((f"{where}.checks", spec) for spec in service_checks)
    placed.extend(
        (f"{where}.checks[{index}]", spec)
        for index, spec in enumerate(_checks(rs.checks, f"{where}.checks", problems, warnings))
    )
    if dest is None:
        return None
    for place, spec in placed:
        _check_fits_server(spec, dest, key, place, problems)
    checks = tuple(dict.fromkeys(spec for _, spec in placed))  # the same check once
    agent = None
    if rs.agent is not None:
        agent = _agent({**(svc.agent or {}), **rs.agent}, f"{where}.agent", problems, [])
    elif svc.agent is not None:
        agent = _agent(svc.agent, f"{where}.agent", [], [])  # reported once, at the service
    slow_start = svc.slow_start if rs.slow_start is None else rs.slow_start
    return ServerSpec(dest, checks, rs.disabled, slow_start, agent)


def _agent(
    raw: Mapping[str, Any], where: str, problems: list[Problem], warnings: list[Problem]
) -> AgentCheck | None:
    try:
        spec = parse_agent(raw)
    except ValidationError as exc:
        problems.extend(_problems_of(exc, where, AgentCheck))
        return None
    _check_warnings(spec, where, warnings)
    return spec


def _consistent_weight_problems(servers: Sequence[ServerSpec], where: str,
                                problems: list[Problem], warnings: list[Problem]) -> None:
    """A weight that moves on its own changes the mh table on this director only."""
    if any(server.slow_start for server in servers):
        problems.append(Problem(f"{where}.slow_start", "slow_start with consistent_hash = true "
                                "rebuilds the mh table at every step of the ramp, on each "
                                "director at its own time, moving flows between real servers: "
                                "set slow_start = 0 or leave it out"))
    if any(server.agent for server in servers):
        warnings.append(Problem(f"{where}.agent", "an agent's weight with consistent_hash = "
                                "true changes the mh table when the agent answers, on each "
                                "director at its own time: directors disagree until their "
                                "agents do"))


def _weightless_warnings(svc: ServiceSchema, servers: Sequence[ServerSpec], where: str,
                         warnings: list[Problem]) -> None:
    if svc.scheduler not in WEIGHTLESS_SCHEDULERS:
        return
    for name, used in (("slow_start", any(server.slow_start for server in servers)),
                       ("agent", any(server.agent for server in servers))):
        if used:
            warnings.append(Problem(f"{where}.{name}", f"scheduler {svc.scheduler!r} ignores "
                                    f"weights (only 0 counts): {name} changes nothing but "
                                    f"drain and down; use a weighted one such as wrr or wlc"))


def _check_fits_server(
    check: CheckSpec, dest: Dest, key: ServiceKey | None, where: str, problems: list[Problem]
) -> None:
    """What a check needs of the server and service it probes."""
    if check.dr_path:
        if key is not None and key.is_fwmark:
            problems.append(
                Problem(
                    f"{where}.dr_path",
                    "needs a service with a VIP, not a "
                    "fwmark service (the probe is addressed to the VIP)",
                )
            )
        elif dest.forward is not Forward.ROUTE:
            problems.append(
                Problem(f"{where}.dr_path", 'only for direct routing (forward = "route")')
            )
    probed_port = key.port if check.dr_path and key is not None else dest.key.port
    if check.connects and check.connect_port is None and probed_port == 0:
        kind = "fwmark" if key is not None and key.is_fwmark else "port-0"
        problems.append(Problem(where, f"this {check.type} check would probe port 0 (a {kind} "
                                f"service's server has no port): set connect_port in the "
                                f"check, or give the real server a port"))


def _dest(
    address_text: str,
    port: int | None,
    weight: int,
    forward_name: str,
    svc: ServiceSchema,
    key: ServiceKey | None,
    where: str,
    problems: list[Problem],
    rs: RealServerSchema | None = None,
) -> Dest | None:
    address = _address(address_text, f"{where}.address", problems)
    if address is None or key is None:
        return None
    if not _limit(limits.real_server_address_error(address), f"{where}.address", problems):
        return None
    forward = FORWARD_BY_CONFIG_NAME[forward_name]
    if key.is_fwmark:
        if key.family is not Family.of(address) and forward is not Forward.TUNNEL:
            problems.append(
                Problem(
                    f"{where}.address", f"IPv{address.version} server in an {svc.family} service"
                )
            )
        port = 0 if port is None else port
    else:
        assert key.address is not None
        if address.version != key.address.version and forward is not Forward.TUNNEL:
            problems.append(
                Problem(
                    f"{where}.address",
                    f"IPv{address.version} server in an "
                    f"IPv{key.address.version} service (only tunnel mixes them)",
                )
            )
        if port is None:
            port = key.port
        elif port != key.port and forward in (Forward.ROUTE, Forward.TUNNEL):
            problems.append(
                Problem(
                    f"{where}.port",
                    f"{forward_name} forwarding cannot change the "
                    f"port: the server must listen on {key.port} (or use masq)",
                )
            )
    # The kernel reports every tunnel's type: a sorry server gets the default ipip spelled out,
    # or each pass would see a difference.
    tunnel = Tunnel() if forward is Forward.TUNNEL else None
    if rs is not None:
        tunnel_keys = {"tunnel_type", "tunnel_port", "tunnel_csum"} & rs.model_fields_set
        if forward is Forward.TUNNEL:
            tunnel = Tunnel(TUNNEL_BY_NAME[rs.tunnel_type], rs.tunnel_port,
                            TUNNEL_CSUM_BY_NAME[rs.tunnel_csum])
            error = limits.tunnel_error(tunnel.type, tunnel.port, tunnel.csum)
            if error is not None:
                field = "tunnel_port" if "port" in error else "tunnel_csum"
                problems.append(Problem(f"{where}.{field}", error))
        elif tunnel_keys:
            problems.append(Problem(f"{where}.{sorted(tunnel_keys)[0]}",
                                    'only for tunnel forwarding (forward = "tunnel")'))
        _limit(limits.thresholds_error(rs.upper_threshold, rs.lower_threshold),
               f"{where}.lower_threshold", problems)
    return Dest(
        DestKey(address, port),
        weight=weight,
        forward=forward,
        tunnel=tunnel,
        upper_threshold=rs.upper_threshold if rs else 0,
        lower_threshold=rs.lower_threshold if rs else 0,
    )

