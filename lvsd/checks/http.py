"""HTTP and HTTPS checks: one request per probe on a fresh connection, parsed by httptools.

No HTTP client library: plain HTTP runs on a bare socket driven by loop callbacks
(``lvsd.checks.sockets``), HTTPS on an asyncio TLS transport; both feed the same parse. One
request, the response parsed as it arrives; without a body regex it stops at the end of the
headers. A plain probe costs about 20 µs of Python CPU with uvloop (plus the kernel's
connection work), where an aiohttp request on a new connection costs ten times as much.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import Callable
from typing import Any, Literal, cast

import httptools
from pydantic import Field, field_validator, model_validator

from lvsd.checks.base import (
    CheckSpec,
    Count,
    Flag,
    Prober,
    RunningProbe,
    Text,
    checked_regex,
    close_with_reset,
    open_stream,
    os_error_reason,
    set_stage,
)
from lvsd.checks.sockets import SocketProbe, Verdict, run_to_end
from lvsd.checks.target import ProbeTarget
from lvsd.model import Address
from lvsd.probe import ProbeResult

StatusRange = tuple[int, int]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
_MAX_CACHED_REQUESTS = 100_000


def _status_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a status code or a range like '200-299', got {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d{3}\s*", value):
            raise ValueError(f"expected a status code or a range like '200-299', got {value!r}")
        return int(value)
    return value


def parse_status_ranges(value: Any) -> tuple[StatusRange, ...]:
    """``[200, "300-399"]`` → ``((200, 200), (300, 399))``, sorted and merged."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    ranges: list[StatusRange] = []
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            low, high = _status_code(item[0]), _status_code(item[1])
        elif isinstance(item, str) and re.fullmatch(r"\s*\d{3}\s*-\s*\d{3}\s*", item):
            low_text, _, high_text = item.partition("-")
            low, high = int(low_text), int(high_text)
        else:
            low = high = _status_code(item)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"status range {low}-{high} is not within 100-599")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("at least one expected status is needed")
    ranges.sort()
    merged = [ranges[0]]
    for low, high in ranges[1:]:
        if low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _header_pairs(value: Any) -> list[tuple[str, str]]:
    """A table ``{ X-Probe = "1" }`` or an array of ``["name", "value"]`` pairs."""
    if isinstance(value, dict):
        items: list[Any] = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a table of header names to values, got {value!r}")
    pairs = []
    for item in items:
        if not (isinstance(item, list | tuple) and len(item) == 2
                and all(isinstance(part, str) for part in item)):
            raise ValueError(f"expected a header as a [name, value] pair of strings, got {item!r}")
        name, content = item
        if not _TOKEN.fullmatch(name) or _FORBIDDEN_IN_HEADER.search(content):
            raise ValueError(f"bad header {name!r}")
        if name.lower() in ("host", "connection", "content-length"):
            raise ValueError(f"header {name!r} is set by the check itself")
        pairs.append((name, content))
    return pairs


class HttpCheck(CheckSpec):
    """``expect_status``: codes and ranges (``[200, "300-399"]``); ``expect_body``: a regex
    searched in the first ``max_bytes`` of the response; ``host``: the Host header (default:
    the address probed, with its port when not the scheme's default)."""

    type: Literal["http"] = "http"
    method: Text = "GET"
    path: Text = "/"
    host: Text | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: tuple[StatusRange, ...] = ((200, 299),)
    expect_body: Text | None = None
    max_bytes: Count = Field(default=65536, ge=64, le=16 * 1024 * 1024)

    @field_validator("method")
    @classmethod
    def _method_is_a_token(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"not an HTTP method: {value!r}")
        return value.upper()

    @field_validator("path")
    @classmethod
    def _path_is_a_request_target(cls, value: str) -> str:
        if not value.startswith("/") or re.search(r"[\s\x00-\x1f\x7f]", value):
            raise ValueError("path must start with '/' and contain no spaces or control bytes")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_one_line(cls, value: str | None) -> str | None:
        if value is not None and (not value or _FORBIDDEN_IN_HEADER.search(value)):
            raise ValueError("host must be a non-empty single line")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers_from_mapping(cls, value: Any) -> Any:
        return _header_pairs(value)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status_ranges(cls, value: Any) -> tuple[StatusRange, ...]:
        return parse_status_ranges(value)

    @field_validator("expect_body")
    @classmethod
    def _body_is_a_regex(cls, value: str | None) -> str | None:
        return checked_regex(value, "expect_body")

    @model_validator(mode="after")
    def _head_has_no_body(self) -> HttpCheck:
        if self.method == "HEAD" and self.expect_body is not None:
            raise ValueError("a HEAD response has no body to match expect_body against")
        return self

    def prober(self) -> Prober:
        return HttpProber(self)

    def status_ok(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect_status)

    def accepted_statuses(self) -> frozenset[int]:
        return frozenset(code for low, high in self.expect_status for code in range(low, high + 1))


class HttpsCheck(HttpCheck):
    """HTTP over TLS. Certificates are verified by default (system CAs, or ``ca_file``) against
    ``server_name``, which is also sent as SNI (default: ``host`` without its port, or the
    address probed). ``verify = false`` is the explicit opt-out."""

    type: Literal["https"] = "https"  # type: ignore[assignment]
    server_name: Text | None = None
    verify: Flag = True
    ca_file: Text | None = None
    client_cert: Text | None = None
    client_key: Text | None = None

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _file_is_readable(cls, value: str | None) -> str | None:
        if value is not None and ("\x00" in value or not os.access(value, os.R_OK)):
            raise ValueError(f"cannot read {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_options_agree(self) -> HttpsCheck:
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file is ignored when verify = false: drop one of them")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if self.server_name is not None and (
                not self.server_name or _FORBIDDEN_IN_HEADER.search(self.server_name)):
            raise ValueError("server_name must be a non-empty single line")
        try:  # a readable file that holds no certificate would fail only when probing starts
            self.ssl_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def prober(self) -> Prober:
        return HttpProber(self, self.ssl_context())


def _host_header(target: ProbeTarget, default_port: int) -> str:
    host = f"[{target.host}]" if target.address.version == 6 else target.host
    return host if target.port == default_port else f"{host}:{target.port}"


def _sni_name(spec: HttpsCheck, address: Address) -> str:
    if spec.server_name is not None:
        return spec.server_name
    if spec.host is not None:
        return _without_port(spec.host)
    return str(address)


def _without_port(host: str) -> str:
    """``example.org:8443`` → ``example.org``; ``[2001:db8::1]:443`` → ``2001:db8::1``."""
    if host.startswith("[") and "]" in host:
        return host[1:host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Headers:
    """What the parser reports (httptools calls only the callbacks an object defines). Kept
    apart from the parser's owner so that no reference cycle outlives a probe."""

    __slots__ = ("answered", "headers_done")

    def __init__(self) -> None:
        self.headers_done = False
        self.answered = False

    def on_headers_complete(self) -> None:
        self.headers_done = self.answered = True  # nothing after the headers matters


class _Body(_Headers):
    __slots__ = ("body", "room")

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.body = bytearray()
        self.room = max_bytes

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.room > 0:
            self.body += body[:self.room]
            self.room = max(0, self.room - len(body))

    def on_message_complete(self) -> None:
        self.answered = True


class _HttpExchange:
    """One request and the parse of its response (``sockets.Exchange``): the answer is known
    at the end of the headers, or with a body regex at the end of the body (or of
    ``max_bytes``); then ``judge(status, body)`` decides."""

    __slots__ = ("count", "judge", "max_bytes", "parser", "progress", "request")

    stage = "response"

    def __init__(self, request: bytes, judge: Callable[[int, bytes], Verdict],
                 max_bytes: int, want_body: bool) -> None:
        self.request = request
        self.judge = judge
        self.max_bytes = max_bytes
        self.progress = _Body(max_bytes) if want_body else _Headers()
        self.parser = httptools.HttpResponseParser(self.progress)
        self.count = 0

    def connected(self) -> Verdict | None:
        return None

    def received(self, data: bytes) -> Verdict | None:
        self.count += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            return False, f"bad response: {exc}"
        progress = self.progress
        if progress.answered or (progress.headers_done and self.count >= self.max_bytes):
            return self._judged()
        if self.count >= self.max_bytes:
            return False, f"no end of headers in {self.max_bytes} bytes"
        return None

    def closed(self, error: OSError | None) -> Verdict:
        if self.progress.headers_done:
            return self._judged()  # a body delimited by the end of the connection
        if isinstance(error, ssl.SSLError):
            return False, f"tls: {error.reason or error}".lower()
        if error is not None:
            return False, os_error_reason(error)
        return False, ("closed before a response" if not self.count
                       else "closed in the middle of the headers")

    def _judged(self) -> Verdict:
        progress = self.progress
        body = bytes(progress.body) if isinstance(progress, _Body) else b""
        return self.judge(self.parser.get_status_code(), body)


class _TlsResponse(asyncio.Protocol):
    """An ``_HttpExchange`` behind an asyncio TLS transport; ``done`` gets its verdict."""

    def __init__(self, exchange: _HttpExchange, done: asyncio.Future[Verdict]) -> None:
        self.exchange = exchange
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.exchange.request)

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            verdict = self.exchange.received(data)
            if verdict is not None:
                self.done.set_result(verdict)

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._ended(exc if isinstance(exc, OSError) else None)

    def _ended(self, error: OSError | None) -> None:
        if not self.done.done():
            self.done.set_result(self.exchange.closed(error))


class HttpProber(Prober):
    """Plain HTTP on a bare socket (``lvsd.checks.sockets``); HTTPS on an asyncio transport."""

    def __init__(self, spec: HttpCheck, tls: ssl.SSLContext | None = None) -> None:
        self.spec = spec
        self.tls = tls
        self.body_regex = (re.compile(spec.expect_body.encode())
                           if spec.expect_body is not None else None)
        self.accepted = spec.accepted_statuses()
        self.max_bytes = spec.max_bytes
        self.want_body = self.body_regex is not None
        self.default_port = 443 if tls is not None else 80
        extra = "".join(f"{name}: {value}\r\n" for name, value in spec.headers)
        self.request_head = f"{spec.method} {spec.path} HTTP/1.1\r\n"
        self.request_tail = (f"User-Agent: lvsd-health-check\r\nAccept: */*\r\n{extra}"
                             "Connection: close\r\n\r\n")
        self.fixed_request = (self._format(spec.host) if spec.host is not None else None)
        self._requests: dict[tuple[str, int], bytes] = {}  # per address probed: its Host

    def _format(self, host: str) -> bytes:
        return f"{self.request_head}Host: {host}\r\n{self.request_tail}".encode()

    def request(self, target: ProbeTarget) -> bytes:
        if self.fixed_request is not None:
            return self.fixed_request
        endpoint = (target.host, target.port)
        request = self._requests.get(endpoint)
        if request is None:
            if len(self._requests) >= _MAX_CACHED_REQUESTS:
                self._requests.clear()
            request = self._requests[endpoint] = self._format(
                _host_header(target, self.default_port))
        return request

    def _exchange(self, target: ProbeTarget) -> _HttpExchange:
        return _HttpExchange(self.request(target), self.judge, self.max_bytes, self.want_body)

    def judge(self, status: int, body: bytes) -> Verdict:
        if status not in self.accepted:
            return False, f"status {status}"
        if self.body_regex is not None and not self.body_regex.search(body):
            return False, "body mismatch"
        return True, f"status {status}"

    def start(self, target: ProbeTarget, done: Callable[[ProbeResult], None]) -> RunningProbe:
        if self.tls is not None:
            return super().start(target, done)
        return SocketProbe(target, self._exchange(target), done)

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        if self.tls is None:
            return await run_to_end(lambda done: SocketProbe(
                target, self._exchange(target), done))
        return await self._probe_tls(target, self.tls)

    async def _probe_tls(self, target: ProbeTarget, tls: ssl.SSLContext) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        done: asyncio.Future[Verdict] = loop.create_future()
        exchange = self._exchange(target)
        assert isinstance(self.spec, HttpsCheck)
        set_stage("connect")
        try:
            transport, _ = await open_stream(
                lambda: _TlsResponse(exchange, done), target, ssl=tls,
                server_hostname=_sni_name(self.spec, target.address))
        except ssl.SSLCertVerificationError as exc:
            return ProbeResult(False, f"tls: certificate verify failed: {_verify_message(exc)}",
                               loop.time() - start)
        except ssl.SSLError as exc:
            return ProbeResult(False, f"tls: {exc.reason or exc}".lower(), loop.time() - start)
        except OSError as exc:
            return ProbeResult(False, os_error_reason(exc), loop.time() - start)
        set_stage("response")
        try:
            ok, reason = await done
        finally:
            close_with_reset(transport)
        return ProbeResult(ok, reason, loop.time() - start)


def _verify_message(exc: ssl.SSLCertVerificationError) -> str:
    message = exc.verify_message or str(exc.reason or exc)
    return message[:1].lower() + message[1:].rstrip(".")
