"""The control API: what ``lvsd ctl`` asks of the running daemon, on a unix socket.

Write operations exist only here; the TCP API (``daemon.listen``, ``lvsd.api``) stays
read-only. The socket is root's alone (0600) unless ``[daemon] control_group`` names a group,
which makes it 0660 with that group. Whatever the file mode, every request is checked against
the caller's own credentials (``SO_PEERCRED``): uid 0 or a member of ``control_group``,
else 403.

Every request is validated whole before anything changes: its JSON body (an object with only
known fields of the right types), the service (by name or key), the server (by address or
address:port), the weight (``lvsd.limits``) and durations. A bad request gets a 4xx whose
``error`` says ``place: what is wrong``, and changes nothing. Changes are serialised through
the daemon's reconcile pass: a request returns once its change is stored, planned and
applied, and reports what the kernel has now.

Routes live in ``ROUTES`` (path, method, handler); a handler reads the daemon through
``request.app[TARGET_KEY]`` (a ``ControlTarget``) and raises ``RequestError`` for a 4xx.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import math
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

import lvsd
from lvsd import logs
from lvsd.api import SERVER_LOG, ClientFaultsAtDebug
from lvsd.checks.base import parse_duration
from lvsd.errors import LvsdError
from lvsd.limits import weight_error
from lvsd.model import Address, DestKey, ServiceKey
from lvsd.overrides import Action, Change, ServerOutcome, admin_json
from lvsd.probe import ProbeResult
from lvsd.snapshot import ReloadStatus
from lvsd.spec import Config, ServerRef, ServiceSpec

log = logs.get_logger(__name__)

API_PREFIX = "/v1"
MAX_DURATION = 366 * 86400.0  # a weight override for longer than a year is a typo
MAX_BODY = 64 * 1024
CONNECT_PROBE_TIMEOUT = 1.0  # seconds to decide whether another lvsd answers on the socket


class RequestError(Exception):
    """A request lvsd refuses: ``status`` (4xx), ``place`` (what part of the request),
    ``message`` (what is wrong with it)."""

    def __init__(self, status: int, place: str, message: str) -> None:
        super().__init__(f"{place}: {message}")
        self.status = status
        self.place = place
        self.message = message


class ControlTarget(Protocol):
    """What the control API asks of the daemon."""

    @property
    def ready(self) -> bool: ...

    @property
    def config(self) -> Config: ...

    def change_admin(self, make: Callable[[Config], Change]) -> Awaitable[list[ServerOutcome]]:
        """Build the change from the config in force (``make`` may raise RequestError),
        store it, plan and apply it; what each server is now."""

    def reload_now(self) -> Awaitable[ReloadStatus]:
        """Reload the config file and wait for the result."""

    def check_now(self, ref: ServerRef) -> Awaitable[list[tuple[str, ProbeResult]]]:
        """Run each check of ``ref`` once now: (its description, its result)."""


TARGET_KEY = web.AppKey("control_target", ControlTarget)
GID_KEY: web.AppKey[int | None] = web.AppKey("control_gid")


# --- who may ask --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: Any) -> Peer:
    """The credentials of the process at the other end of a connected unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return Peer(pid, uid, gid)


def groups_of(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("Groups:"):
            return {int(g) for g in line.split()[1:]}
    return set()


def refusal(peer: Peer, control_gid: int | None,
            groups: Callable[[int], set[int]] = groups_of) -> str | None:
    """Why ``peer`` may not use the control socket, or None when it may."""
    if peer.uid == 0:
        return None
    if control_gid is not None and (peer.gid == control_gid or control_gid in groups(peer.pid)):
        return None
    allowed = "root" if control_gid is None else f"root or a member of group {control_gid}"
    return (f"uid {peer.uid} (pid {peer.pid}) may not control lvsd: the control socket "
            f"takes {allowed} (daemon.control_group)")


@web.middleware
async def _guard(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return error_response(403, "connection", "cannot read the caller's credentials")
    try:
        peer = peer_of(sock)
    except OSError as exc:
        return error_response(403, "connection", f"cannot read the caller's credentials: {exc}")
    if (why := refusal(peer, request.app[GID_KEY])) is not None:
        log.warning("control_refused", uid=peer.uid, pid=peer.pid, path=request.path)
        return error_response(403, "permission", why)
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc.status, exc.place, exc.message)
    except LvsdError as exc:
        return error_response(503, "daemon", str(exc))


def error_response(status: int, place: str, message: str) -> web.Response:
    return web.json_response({"error": f"{place}: {message}", "place": place,
                              "message": message}, status=status)


# --- what a request may say ------------------------------------------------------------------


async def json_body(request: web.Request, fields: Mapping[str, tuple[type, ...]]
                    ) -> dict[str, Any]:
    """The request's JSON object, with only ``fields`` (name → accepted types; a missing
    field is None). Raises RequestError for anything else."""
    raw = await request.read()
    if not raw.strip():
        return dict.fromkeys(fields)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, "body", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body", f"expected a JSON object, got {type(data).__name__}")
    for name, value in data.items():
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise RequestError(400, f"body.{name}", f"unknown field (known: {known})")
        if value is not None and (not isinstance(value, fields[name])
                                  or (isinstance(value, bool) and bool not in fields[name])):
            wanted = " or ".join(t.__name__ for t in fields[name])
            raise RequestError(400, f"body.{name}",
                               f"expected {wanted}, got {type(value).__name__} {value!r}")
    return {name: data.get(name) for name in fields}


def find_service(config: Config, text: str) -> ServiceSpec:
    """A configured service by its name, its key (``tcp:192.0.2.1:80``, ``fwm:9``) or its
    address:port when only one protocol has it. Raises RequestError (404)."""
    if not text:
        raise RequestError(400, "service", "empty")
    by_name = [spec for spec in config.services if spec.name == text]
    if by_name:
        return by_name[0]
    by_key = [spec for spec in config.services if str(spec.key) == text]
    if by_key:
        return by_key[0]
    endpoint = _endpoint(text)
    if endpoint is not None:
        found = [spec for spec in config.services
                 if spec.key.address == endpoint[0] and spec.key.port == endpoint[1]]
        if len(found) == 1:
            return found[0]
        if found:
            keys = ", ".join(str(spec.key) for spec in found)
            raise RequestError(400, "service", f"{text!r} is ambiguous: say one of {keys}")
    names = ", ".join(spec.name for spec in config.services[:20]) or "none"
    raise RequestError(404, "service", f"no service {text!r} in the config (services: {names})")


def find_server(spec: ServiceSpec, text: str) -> DestKey:
    """A real server of ``spec`` by address:port, or by address when it has one port there.
    Raises RequestError (400 malformed, 404 not in the service)."""
    endpoint = _endpoint(text)
    if endpoint is not None:
        key = DestKey(*endpoint)
        if any(server.key == key for server in spec.servers):
            return key
        raise RequestError(404, "server", f"{text} is not a real server of {spec.name}")
    address = _address(text)
    if address is None:
        raise RequestError(400, "server", f"not an address or address:port: {text!r}")
    found = [server.key for server in spec.servers if server.key.address == address]
    if len(found) == 1:
        return found[0]
    if found:
        ports = ", ".join(str(key) for key in found)
        raise RequestError(400, "server", f"{text} has several ports in {spec.name}: say one "
                                          f"of {ports}")
    raise RequestError(404, "server", f"{text} is not a real server of {spec.name}")


def host_refs(config: Config, text: str) -> list[ServerRef]:
    """Every (service, server) whose real server has the address ``text``."""
    address = _address(text)
    if address is None:
        raise RequestError(400, "host", f"not an IP address: {text!r}")
    refs = [(spec.key, server.key) for spec in config.services for server in spec.servers
            if server.key.address == address]
    if not refs:
        raise RequestError(404, "host", f"{address} is not a real server of any service")
    return refs


def parse_duration_field(value: object) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RequestError(400, "for", str(exc)) from None
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not math.isfinite(seconds) or not 0 < seconds <= MAX_DURATION):
        raise RequestError(400, "for", f"{value!r} is not a duration between 0 and "
                                       f"{int(MAX_DURATION)} s")
    return float(seconds)


ADMIN_FIELDS: Mapping[str, tuple[type, ...]] = {
    "action": (str,), "service": (str,), "server": (str,), "host": (str,),
    "weight": (int,), "for": (str, int, float),
}


def admin_change(body: Mapping[str, Any], config: Config) -> tuple[Change, dict[ServiceKey, str]]:
    """The change a ``POST /v1/admin`` body asks for, and the names of its services."""
    try:
        action = Action(body.get("action"))
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise RequestError(400, "action", f"{body.get('action')!r} is not one of {known}") from None
    service, server, host = body.get("service"), body.get("server"), body.get("host")
    if host is not None:
        if service is not None or server is not None:
            raise RequestError(400, "host", "give either host or service and server, not both")
        refs = host_refs(config, host)
    elif service is None or server is None:
        raise RequestError(400, "server", "give service and server, or host")
    else:
        spec = find_service(config, service)
        refs = [(spec.key, find_server(spec, server))]
    weight, duration = body.get("weight"), body.get("for")
    if action is Action.WEIGHT:
        if weight is None:
            raise RequestError(400, "weight", "missing (give the weight, or clear-weight)")
        if (error := weight_error(weight)) is not None:
            raise RequestError(400, "weight", error)
        seconds = None if duration is None else parse_duration_field(duration)
    elif weight is not None or duration is not None:
        raise RequestError(400, "weight" if weight is not None else "for",
                           f"only for the weight action, not {action.value}")
    else:
        seconds = None
    names = {spec.key: spec.name for spec in config.services}
    return Change(action, tuple(refs), weight, seconds), names


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _endpoint(text: str) -> tuple[Address, int] | None:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80``; None when ``text`` is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        address = _address(host[1:-1])
        return None if address is None or address.version != 6 else (address, int(port))
    address = _address(host)
    return None if address is None or address.version != 4 else (address, int(port))


# --- handlers ------------------------------------------------------------------------------


def _target(request: web.Request) -> ControlTarget:
    target = request.app[TARGET_KEY]
    if not target.ready:
        raise RequestError(503, "daemon", "lvsd is starting: the first reconcile pass has "
                                          "not finished yet; try again shortly")
    return target


async def _admin(request: web.Request) -> web.Response:
    target = _target(request)
    body = await json_body(request, ADMIN_FIELDS)
    names: dict[ServiceKey, str] = {}

    def make(config: Config) -> Change:
        change, found = admin_change(body, config)
        names.update(found)
        return change

    outcomes = await target.change_admin(make)
    servers = [{
        "service": names.get(o.ref[0], str(o.ref[0])), "service_key": str(o.ref[0]),
        "server": str(o.ref[1]), "changed": o.changed, "admin": admin_json(o.override),
        "kernel_weight": o.kernel_weight,
    } for o in outcomes]
    return web.json_response({"action": body["action"], "servers": servers})


async def _reload(request: web.Request) -> web.Response:
    target = _target(request)
    await json_body(request, {})
    status = await target.reload_now()
    problems = list(status.problems) or ([status.error] if status.error else [])
    return web.json_response({"ok": status.ok, "at": status.at, "error": status.error,
                              "problems": problems, "config": target.config.source},
                             status=200 if status.ok else 422)


CHECK_FIELDS: Mapping[str, tuple[type, ...]] = {"service": (str,), "server": (str,)}


async def _check(request: web.Request) -> web.Response:
    target = _target(request)
    body = await json_body(request, CHECK_FIELDS)
    if body["service"] is None or body["server"] is None:
        raise RequestError(400, "server", "give service and server")
    spec = find_service(target.config, body["service"])
    key = find_server(spec, body["server"])
    results = await target.check_now((spec.key, key))
    if not results:
        raise RequestError(409, "server", f"{key} has no checks in {spec.name}")
    return web.json_response({
        "service": spec.name, "server": str(key), "ok": all(r.ok for _, r in results),
        "checks": [{"check": name, "ok": r.ok, "reason": r.reason,
                    "latency": round(r.latency, 6)} for name, r in results],
    })


async def _version(request: web.Request) -> web.Response:
    target = request.app[TARGET_KEY]
    return web.json_response({"version": lvsd.__version__, "pid": os.getpid(),
                              "ready": target.ready})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/version", _version),
    ("POST", "/admin", _admin),
    ("POST", "/reload", _reload),
    ("POST", "/check", _check),
]


def create_control_app(target: ControlTarget, control_gid: int | None = None,
                       routes: Sequence[tuple[str, str, Handler]] = ()) -> web.Application:
    """The control app over ``target``: ``ROUTES`` and any more ``routes``, under /v1."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[TARGET_KEY] = target
    app[GID_KEY] = control_gid
    for method, path, handler in [*ROUTES, *routes]:
        app.router.add_route(method, API_PREFIX + path, handler)
    return app


# --- the socket file -----------------------------------------------------------------------


class ControlSocketError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"daemon.control_socket: {path}: {reason}")


class ControlServer:
    """The app served on the socket file; ``close()`` stops it and removes the file."""

    def __init__(self, runner: web.AppRunner, path: Path, inode: int) -> None:
        self.runner = runner
        self.path = path
        self._inode = inode

    async def close(self) -> None:
        await self.runner.cleanup()
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:  # never another daemon's socket
                os.unlink(self.path)


def take_socket_path(path: Path) -> None:
    """Make ``path`` free for a new socket: a stale socket (nobody answers) is removed;
    raises ControlSocketError if another lvsd answers there or it is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(path, "exists and is not a socket; lvsd does not remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CONNECT_PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: left by a daemon that was killed
        log.info("control_socket_stale_removed", path=str(path))
        return
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise ControlSocketError(path, f"cannot tell whether another lvsd uses it: "
                                       f"{exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ControlSocketError(path, "another lvsd answers on it; stop that one first, or give "
                                   "this one its own daemon.control_socket")


def bound_socket(path: Path, gid: int | None) -> socket.socket:
    """A listening unix socket at ``path``, 0600 (0660 with group ``gid``) from its first
    moment: it is bound under a temporary name, given its mode, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        if gid is None:
            os.chmod(staging, 0o600)
        else:
            os.chown(staging, -1, gid)
            os.chmod(staging, 0o660)
        os.rename(staging, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return sock


async def start_control(app: web.Application, path: Path, gid: int | None) -> ControlServer:
    """Serve ``app`` on the unix socket ``path``. Raises ControlSocketError (nothing
    changed) when the path is taken or cannot be made."""
    take_socket_path(path)
    try:
        sock = bound_socket(path, gid)
    except OSError as exc:
        raise ControlSocketError(path, exc.strerror or str(exc)) from None
    inode = os.lstat(path).st_ino
    runner = web.AppRunner(app, access_log=None, logger=ClientFaultsAtDebug(SERVER_LOG))
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return ControlServer(runner, path, inode)

