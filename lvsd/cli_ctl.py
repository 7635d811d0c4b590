"""``lvsd ctl``: steer the running daemon over its control socket (``lvsd.control``).

Exit codes, as the rest of the CLI: 0 done; 1 the daemon cannot be reached (not running, no
socket, permission denied) or an operation failed (a probe that fails, an answer lvsd could
not give); 2 bad usage, a request lvsd refused (unknown service, weight out of range …) or,
for ``reload``, a config lvsd rejected (the old one runs on).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

DEFAULT_SOCKET = Path("/run/lvsd/lvsd.sock")
CONNECT_TIMEOUT = 5.0
ADMIN_ACTIONS = {
    "drain": "weight 0: no new connections, established ones finish, probes go on",
    "undrain": "end a drain",
    "disable": "take the server out of the table (probes go on)",
    "enable": "end a disable (or a drain)",
}


class Unreachable(Exception):
    """The daemon could not be asked: the message says why and what to do."""


class ControlClient:
    """Requests to the daemon's control socket; one aiohttp session per ``with``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.path)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def open(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                   data: bytes | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, to read as it comes (``events``, ``--watch``)."""
        import aiohttp

        assert self._session is not None, "use ControlClient in an async with"
        try:
            async with self._session.request(method, f"http://lvsd/v1{path}", json=body,
                                             data=data) as response:
                yield response
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(self._why(exc.os_error)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise Unreachable(f"lvsd closed the connection on {self.path}: {exc}") from None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                   data: bytes | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one request (a JSON ``body``, or raw ``data``)."""
        async with self.open(method, path, body, data=data) as response:
            text = await response.text()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return response.status, {"error": f"answer: not a JSON object: {text[:200]!r}"}
        return response.status, data

    def _why(self, error: OSError) -> str:
        code = error.errno
        if code == errno.ENOENT:
            return (f"no control socket at {self.path}: is lvsd running? (systemctl status "
                    f"lvsd; another socket: --socket PATH, as set by daemon.control_socket)")
        if code == errno.ECONNREFUSED:
            return f"lvsd is not running: nobody answers on {self.path} (a stale socket)"
        if code in (errno.EACCES, errno.EPERM):
            return (f"permission denied on {self.path}: lvsd ctl needs root, or membership of "
                    f"the group set by daemon.control_group")
        return f"cannot connect to {self.path}: {error.strerror or error}"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``lvsd ctl`` and its write commands; its subcommands, for more."""
    parser = sub.add_parser("ctl", help="control the running daemon: drain, weight, reload, "
                                        "check")
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, metavar="PATH",
                        help="the daemon's control socket (default: %(default)s)")
    commands = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    for action, text in ADMIN_ACTIONS.items():
        each = commands.add_parser(action, help=text)
        _server_arguments(each)
    weight = commands.add_parser("weight", help="set a server's weight (until --clear, or "
                                                "for a while with --for)")
    weight.add_argument("target", nargs="*", metavar="SERVICE SERVER N",
                        help="the service (name or key), the server (address or "
                             "address:port) and the weight; with --host only N")
    weight.add_argument("--host", metavar="ADDRESS",
                        help="that real server in every service")
    weight.add_argument("--for", dest="duration", metavar="DURATION",
                        help="end the override after this long, e.g. 30s, 10m, 2h")
    weight.add_argument("--clear", action="store_true",
                        help="end the weight override: back to the configured weight")
    commands.add_parser("reload", help="reload the config file and wait for the result; "
                                       "exit 2 (every problem printed) when it was rejected")
    check = commands.add_parser("check", help="run a server's checks now and print the result")
    check.add_argument("service", help="the service: its name or key (tcp:192.0.2.1:80)")
    check.add_argument("server", help="the real server: address or address:port")
    return commands


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="*", metavar="SERVICE SERVER",
                        help="the service (name or key, e.g. web or tcp:192.0.2.1:80) and the "
                             "real server (address or address:port)")
    parser.add_argument("--host", metavar="ADDRESS",
                        help="that real server in every service (draining a host)")


class Usage(Exception):
    pass


def admin_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body of an admin command; raises Usage for a wrong set of arguments."""
    command: str = args.ctl_command
    target: list[str] = list(args.target)
    body: dict[str, Any] = {"action": command}
    wants_weight = command == "weight" and not args.clear
    if command == "weight" and args.clear:
        body["action"] = "clear-weight"
        if args.duration is not None:
            raise Usage("--for goes with a weight, not with --clear")
    if args.host is not None:
        if len(target) != int(wants_weight):
            extra = " ".join(target[:-1] if wants_weight else target) or "nothing"
            raise Usage(f"--host acts on every service: no SERVICE SERVER (got {extra})"
                        if target else f"{command}: expected N after --host ADDRESS")
        body["host"] = args.host
    else:
        shape = "SERVICE SERVER N" if wants_weight else "SERVICE SERVER"
        if len(target) != 2 + int(wants_weight):
            raise Usage(f"{command}: expected {shape} or --host ADDRESS")
        body["service"], body["server"] = target[:2]
    if wants_weight:
        text = target[-1]
        try:
            body["weight"] = int(text)
        except ValueError:
            raise Usage(f"weight: not an integer: {text!r}") from None
        if args.duration is not None:
            body["for"] = args.duration
    return body


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except Usage as exc:
        print(f"lvsd ctl: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unreachable as exc:
        print(f"lvsd ctl: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(args: argparse.Namespace) -> int:
    command = args.ctl_command
    if command in ADMIN_ACTIONS or command == "weight":
        body = admin_body(args)
        return await request(args.socket, "POST", "/admin", body, print_admin)
    if command == "reload":
        return await request(args.socket, "POST", "/reload", None, print_reload)
    if command == "check":
        return await request(args.socket, "POST", "/check",
                             {"service": args.service, "server": args.server}, print_check)
    raise Usage(f"unknown command {command!r}")


Printer = Callable[[dict[str, Any]], int]


async def request(socket_path: Path, method: str, path: str, body: dict[str, Any] | None,
                  printer: Printer) -> int:
    """One request; its answer printed by ``printer`` (which returns the exit code), or the
    daemon's error on stderr."""
    async with ControlClient(socket_path) as client:
        status, answer = await client.call(method, path, body)
    if status < 300 or (path == "/reload" and status == 422):
        return printer(answer)
    return refused(status, answer)


def refused(status: int, answer: dict[str, Any]) -> int:
    """Print the daemon's error; the exit code for it."""
    print(f"lvsd ctl: {answer.get('error', f'HTTP {status}')}", file=sys.stderr)
    return EXIT_BAD_INPUT if 400 <= status < 500 and status != 403 else EXIT_FAILED


def describe_admin(admin: dict[str, Any]) -> str:
    words = [str(admin.get("state", "enabled"))]
    if admin.get("weight") is not None:
        until = admin.get("weight_until")
        words.append(f"weight override {admin['weight']}"
                     + (f" until {_clock(until)}" if isinstance(until, int | float) else ""))
    return ", ".join(words)


def print_admin(answer: dict[str, Any]) -> int:
    for server in answer.get("servers", []):
        kernel = server.get("kernel_weight")
        where = "not in the table" if kernel is None else f"kernel weight {kernel}"
        note = "" if server.get("changed") else " (unchanged)"
        print(f"{server.get('service')} {server.get('server')}: "
              f"{describe_admin(server.get('admin', {}))}; {where}{note}")
    return EXIT_OK


def print_reload(answer: dict[str, Any]) -> int:
    if answer.get("ok"):
        print(f"{answer.get('config')}: reloaded")
        return EXIT_OK
    problems = answer.get("problems") or [answer.get("error")]
    print(f"{answer.get('config')}: reload rejected, the old config runs on; "
          f"{len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT


def print_check(answer: dict[str, Any]) -> int:
    for check in answer.get("checks", []):
        verdict = "ok" if check.get("ok") else "FAILED"
        reason = f": {check['reason']}" if check.get("reason") else ""
        latency = check.get("latency") or 0.0
        print(f"{answer.get('service')} {answer.get('server')}: {check.get('check')}: "
              f"{verdict}{reason} ({latency * 1000:.1f} ms)")
    return EXIT_OK if answer.get("ok") else EXIT_FAILED


def _clock(at: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))
