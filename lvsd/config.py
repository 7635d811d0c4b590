"""The TOML configuration: schema, validation, and the pure ``Config`` the daemon runs on.

Validation has two phases and reports every problem of both, each with its place
(``services[2].real_servers[0].port: …``): pydantic checks types and ranges field by field,
then ``_build`` checks what spans fields (duplicate services, DR ports, flags that need a
scheduler) and turns the schema into model types. ``load`` never exits and never half-applies:
it returns a whole ``Config`` or raises ``ConfigError``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lvsd.checks import CheckSpec, parse_check
from lvsd.errors import ConfigError, Problem
from lvsd.model import (
    HOST_NETMASK_V4,
    HOST_PREFIX_V6,
    SCHEDULERS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    Address,
    Dest,
    DestKey,
    Family,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    Timeouts,
    Tunnel,
    TunnelType,
)
from lvsd.spec import Config, DaemonSettings, ServerSpec, ServiceSpec

DEFAULT_CONFIG_PATH = Path("/etc/lvsd/lvsd.toml")
DEFAULT_STATE_DIR = Path("/var/lib/lvsd")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(value: object) -> object:
    """Accept 2, 2.5, "2s", "500ms", "1m": operators write durations both ways."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"not a duration: {value!r} (use seconds, or e.g. '500ms', '2s', '1m')"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Port = Annotated[int, Field(ge=0, le=65535)]
Weight = Annotated[int, Field(ge=0, le=65535)]
ForwardName = Literal["route", "masq", "tunnel"]

_FORWARD = {"route": Forward.ROUTE, "masq": Forward.MASQ, "tunnel": Forward.TUNNEL}
_PROTOCOL = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}
_TUNNEL = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}
_TUN_CSUM = {"nocsum": 0, "csum": 1, "remcsum": 2}
_SCHED_FLAG_BITS = {
    "sh-fallback": ("sh", SVC_F_SCHED1),
    "sh-port": ("sh", SVC_F_SCHED2),
    "mh-fallback": ("mh", SVC_F_SCHED1),
    "mh-port": ("mh", SVC_F_SCHED2),
    "flag-1": (None, SVC_F_SCHED1),
    "flag-2": (None, SVC_F_SCHED2),
    "flag-3": (None, SVC_F_SCHED3),
}


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonSchema(_Schema):
    state_dir: Path = DEFAULT_STATE_DIR
    save_file: Path | None = None
    listen: str = "127.0.0.1:9163"
    resync_interval: Seconds = 30.0
    reconcile_delay: Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=10)] = 0.005
    drain_timeout: Seconds = 300.0
    on_stop: Literal["keep", "withdraw"] = "keep"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_probes_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 2000
    dr_check_mark_base: Annotated[int, Field(ge=1, le=0xFFFF0000)] = 0x4C560000


class TimeoutsSchema(_Schema):
    tcp: Annotated[int, Field(ge=1)] = 900
    tcpfin: Annotated[int, Field(ge=1)] = 120
    udp: Annotated[int, Field(ge=1)] = 300


class RealServerSchema(_Schema):
    address: str
    port: Port | None = None
    weight: Weight = 1
    forward: ForwardName | None = None
    upper_threshold: Annotated[int, Field(ge=0)] = 0
    lower_threshold: Annotated[int, Field(ge=0)] = 0
    tunnel_type: Literal["ipip", "gue", "gre"] = "ipip"
    tunnel_port: Port = 0
    tunnel_csum: Literal["nocsum", "csum", "remcsum"] = "nocsum"
    check: dict[str, Any] | None = None
    disabled: bool = False


class SorryServerSchema(_Schema):
    address: str
    port: Port | None = None
    weight: Annotated[int, Field(ge=1, le=65535)] = 1
    forward: ForwardName | None = None


class ServiceSchema(_Schema):
    name: str | None = None
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    address: str | None = None
    port: Port | None = None
    fwmark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    family: Literal["ipv4", "ipv6"] = "ipv4"
    scheduler: str = "wlc"
    sched_flags: list[str] = Field(default_factory=list)
    ops: bool = False
    persistence: Annotated[int, Field(ge=1, le=0x7FFFFFFF)] | None = None
    persistence_netmask: str | int | None = None
    pe: Literal["sip"] | None = None
    forward: ForwardName = "route"
    on_failure: Literal["weight0", "remove"] = "weight0"
    quorum: Annotated[int, Field(ge=0)] = 1
    sorry_server: SorryServerSchema | None = None
    fail_open: bool = False
    check: dict[str, Any] | None = None
    on_change: list[str] | None = None
    real_servers: list[dict[str, Any]] = Field(default_factory=list)  # each a RealServerSchema


class ConfigSchema(_Schema):
    daemon: DaemonSchema = Field(default_factory=DaemonSchema)
    timeouts: TimeoutsSchema | None = None
    services: list[dict[str, Any]] = Field(default_factory=list)  # each a ServiceSchema


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    return loads(text, source=str(path))


def loads(text: str, source: str = "<config>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from exc
    try:
        schema = ConfigSchema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_problem_of(err) for err in exc.errors()]) from exc
    problems: list[Problem] = []
    config = _build(schema, source, problems)
    if problems:
        raise ConfigError(source, problems)
    return config


def _problem_of(error: Mapping[str, Any], prefix: str = "") -> Problem:
    inner = format_location(error["loc"])
    if prefix and inner:
        inner = f"{prefix}{inner}" if inner.startswith("[") else f"{prefix}.{inner}"
    return Problem(inner or prefix, str(error["msg"]))


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def _validate(
    schema: type[SchemaT], raw: object, where: str, problems: list[Problem]
) -> SchemaT | None:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problem_of(err, where) for err in exc.errors())
        return None


def format_location(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """("services", 2, "real_servers", 0, "port") -> "services[2].real_servers[0].port"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _build(schema: ConfigSchema, source: str, problems: list[Problem]) -> Config:
    daemon = _build_daemon(schema.daemon, problems)
    services: list[ServiceSpec] = []
    seen: dict[ServiceKey, int] = {}
    for index, raw_service in enumerate(schema.services):
        where = f"services[{index}]"
        svc = _validate(ServiceSchema, raw_service, where, problems)
        if svc is None:
            continue
        key, spec = _build_service(svc, where, problems)
        if key is not None and key in seen:
            problems.append(Problem(where, f"duplicate of services[{seen[key]}] ({key})"))
            continue
        if key is not None:
            seen[key] = index
        if spec is not None:
            services.append(spec)
    names: dict[str, int] = {}
    for index, spec in enumerate(services):
        if spec.name in names:
            problems.append(Problem(f"services[{index}].name", f"duplicate name {spec.name!r}"))
        names[spec.name] = index
    timeouts = None
    if schema.timeouts is not None:
        timeouts = Timeouts(schema.timeouts.tcp, schema.timeouts.tcpfin, schema.timeouts.udp)
    return Config(daemon, tuple(services), timeouts, source)


def _build_daemon(schema: DaemonSchema, problems: list[Problem]) -> DaemonSettings:
    host, port = "127.0.0.1", 9163
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d+)", schema.listen)
    if match is None or int(match.group(2)) > 65535:
        problems.append(Problem("daemon.listen", f"expected HOST:PORT, got {schema.listen!r}"))
    else:
        host, port = match.group(1), int(match.group(2))
    return DaemonSettings(
        state_dir=schema.state_dir,
        save_file=schema.save_file or schema.state_dir / "ipvsadm.rules",
        listen_host=host,
        listen_port=port,
        resync_interval=schema.resync_interval,
        reconcile_delay=schema.reconcile_delay,
        drain_timeout=schema.drain_timeout,
        on_stop=schema.on_stop,
        log_level=schema.log_level,
        max_probes_in_flight=schema.max_probes_in_flight,
        dr_check_mark_base=schema.dr_check_mark_base,
    )


def _address(text: str, where: str, problems: list[Problem]) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        problems.append(Problem(where, f"not an IP address: {text!r}"))
        return None


def _build_service(
    svc: ServiceSchema, where: str, problems: list[Problem]
) -> tuple[ServiceKey | None, ServiceSpec | None]:
    before = len(problems)
    key = _service_key(svc, where, problems)
    if svc.scheduler not in SCHEDULERS:
        problems.append(
            Problem(
                f"{where}.scheduler",
                f"unknown scheduler {svc.scheduler!r} (one of {', '.join(SCHEDULERS)})",
            )
        )
    sched_flags = 0
    for flag in svc.sched_flags:
        owner = _SCHED_FLAG_BITS.get(flag)
        if owner is None:
            problems.append(
                Problem(
                    f"{where}.sched_flags",
                    f"unknown flag {flag!r} (one of {', '.join(_SCHED_FLAG_BITS)})",
                )
            )
        elif owner[0] is not None and owner[0] != svc.scheduler:
            problems.append(
                Problem(
                    f"{where}.sched_flags",
                    f"{flag!r} needs scheduler {owner[0]!r}, not {svc.scheduler!r}",
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

    check = None
    if svc.check is not None:
        check = _check(svc.check, f"{where}.check", problems)

    servers: list[ServerSpec] = []
    seen: dict[DestKey, int] = {}
    for index, raw_server in enumerate(svc.real_servers):
        rs_where = f"{where}.real_servers[{index}]"
        rs = _validate(RealServerSchema, raw_server, rs_where, problems)
        if rs is None:
            continue
        server = _build_server(rs, svc, key, check, rs_where, problems)
        if server is None:
            continue
        if server.key in seen:
            problems.append(
                Problem(rs_where, f"duplicate of real_servers[{seen[server.key]}] ({server.key})")
            )
            continue
        seen[server.key] = index
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
    if svc.on_change is not None and not svc.on_change:
        problems.append(Problem(f"{where}.on_change", "needs a program (an argv list)"))

    if key is None or len(problems) > before:
        return key, None
    service = Service(key, svc.scheduler, sched_flags, svc.ops, persistence, svc.pe)
    return key, ServiceSpec(
        service=service,
        name=svc.name or str(key),
        servers=tuple(servers),
        on_failure=svc.on_failure,
        quorum=svc.quorum,
        sorry_server=sorry,
        fail_open=svc.fail_open,
        on_change=tuple(svc.on_change or ()),
    )


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
    if "family" in svc.model_fields_set:
        problems.append(Problem(f"{where}.family", "only for fwmark services (the address tells)"))
    return ServiceKey.virtual(_PROTOCOL[svc.protocol], address, svc.port)


def _netmask(
    value: str | int | None, family: Family, where: str, problems: list[Problem]
) -> int | None:
    if value is None:
        return None
    if family is Family.INET6:
        if isinstance(value, int) and 1 <= value <= HOST_PREFIX_V6:
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


_CHECK_DURATIONS = ("interval", "timeout", "retry_interval")


def _check(raw: Mapping[str, Any], where: str, problems: list[Problem]) -> CheckSpec | None:
    try:
        durations = {k: _seconds(raw[k]) for k in _CHECK_DURATIONS if k in raw}
    except ValueError as exc:
        problems.append(Problem(where, str(exc)))
        return None
    try:
        return parse_check({**raw, **durations})
    except ValidationError as exc:
        for error in exc.errors():
            loc = list(error["loc"])
            if loc and loc[0] == raw.get("type"):
                loc = loc[1:]  # pydantic prefixes the discriminator's value
            inner = format_location(loc)
            problems.append(Problem(f"{where}.{inner}" if inner else where, str(error["msg"])))
        return None


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
    where: str,
    problems: list[Problem],
) -> ServerSpec | None:
    dest = _dest(
        rs.address, rs.port, rs.weight, rs.forward or svc.forward, svc, key, where, problems, rs
    )
    check = service_check
    if rs.check is not None:
        check = _check(_merged_check(svc.check, rs.check), f"{where}.check", problems)
    if dest is None:
        return None
    if check is not None and check.dr_path:
        if key is not None and key.is_fwmark:
            problems.append(
                Problem(
                    f"{where}.check.dr_path",
                    "needs a service with a VIP, not a "
                    "fwmark service (the probe is addressed to the VIP)",
                )
            )
        elif dest.forward is not Forward.ROUTE:
            problems.append(
                Problem(f"{where}.check.dr_path", 'only for direct routing (forward = "route")')
            )
    return ServerSpec(dest, check, rs.disabled)


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
    forward = _FORWARD[forward_name]
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
        if forward is Forward.TUNNEL:
            tunnel = Tunnel(_TUNNEL[rs.tunnel_type], rs.tunnel_port, _TUN_CSUM[rs.tunnel_csum])
            if rs.tunnel_type == "gue" and rs.tunnel_port == 0:
                problems.append(Problem(f"{where}.tunnel_port", "a gue tunnel needs a port"))
        if rs.upper_threshold and rs.lower_threshold > rs.upper_threshold:
            problems.append(Problem(f"{where}.lower_threshold", "above upper_threshold"))
    return Dest(
        DestKey(address, port),
        weight=weight,
        forward=forward,
        tunnel=tunnel,
        upper_threshold=rs.upper_threshold if rs else 0,
        lower_threshold=rs.lower_threshold if rs else 0,
    )
