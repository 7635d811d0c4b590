"""Each checker against real servers on 127.0.0.1, on both asyncio and uvloop.

The servers run on an event loop in a thread of their own; each test drives the probe on a
fresh loop of the kind under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pydantic
import pytest
import uvloop
from aiohttp import web

from lvsd.checks import (
    CHECKS,
    CheckKey,
    CheckSpec,
    DnsCheck,
    ExecCheck,
    FileCheck,
    HttpCheck,
    HttpsCheck,
    ProbeResult,
    ProbeTarget,
    TcpCheck,
    check_key,
    parse_check,
)
from lvsd.checks.drpath import Routing, director_problems, director_routing
from lvsd.checks.runner import DEFAULT_BATCH, EngineLoad, ProbeRunner
from lvsd.model import Address, Protocol
from lvsd.probe import ProbeReport

T = TypeVar("T")
LOCAL = ipaddress.ip_address("127.0.0.1")
VIP = ipaddress.ip_address("192.0.2.100")
OTHER_VIP = ipaddress.ip_address("192.0.2.101")
RS = ipaddress.ip_address("198.51.100.7")

Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine to completion on a new event loop of the kind under test."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def at(port: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address = LOCAL) -> ProbeTarget:
    return ProbeTarget(address, port)


def probe(run: Callable[[Coroutine[Any, Any, ProbeResult]], ProbeResult], spec: CheckSpec,
          target: ProbeTarget) -> ProbeResult:
    async def once() -> ProbeResult:
        return await asyncio.wait_for(spec.prober().probe(spec.relevant(target)), 10)

    return run(once())


def first_report(run: Callable[[Coroutine[Any, Any, ProbeReport]], ProbeReport],
                 key: CheckKey) -> ProbeReport:
    """The first result of ``key`` through the runner, which enforces the timeout."""

    async def go() -> ProbeReport:
        report, _ = await _first_report_and_load(key)
        return report

    return run(go())


def first_report_and_load(
        run: Callable[[Coroutine[Any, Any, tuple[ProbeReport, EngineLoad]]],
                      tuple[ProbeReport, EngineLoad]],
        key: CheckKey) -> tuple[ProbeReport, EngineLoad]:
    """The first result of ``key`` and how late the runner's own wake-ups ran until then."""
    return run(_first_report_and_load(key))


async def _first_report_and_load(key: CheckKey) -> tuple[ProbeReport, EngineLoad]:
    got: asyncio.Future[ProbeReport] = asyncio.get_running_loop().create_future()
    runner = ProbeRunner(lambda reports: got.done() or got.set_result(reports[0]))
    runner.update([key])
    runner.start()
    try:
        report = await asyncio.wait_for(got, key.spec.interval + key.spec.timeout + 10)
        return report, runner.load()
    finally:
        await runner.stop()


# --- servers ---------------------------------------------------------------------------------

@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for good.example and 127.0.0.1, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=lvsd test CA", cwd=d)
    for name, subject, extensions in (
        ("server", "/CN=good.example",
         "subjectAltName=DNS:good.example,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=lvsd-client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(extensions)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
                 cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                 d / "client.key")


WWW = dns.name.from_text("www.example.test")
ZONE = dns.name.from_text("example.test")


def dns_answer(query_wire: bytes) -> bytes:
    query = dns.message.from_wire(query_wire)
    reply = dns.message.make_response(query)
    question = query.question[0]
    if question.name == WWW and question.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(WWW, 60, "IN", "A", "192.0.2.1", "192.0.2.2"))
    elif not question.name.is_subdomain(ZONE):
        reply.set_rcode(dns.rcode.NXDOMAIN)
    return reply.to_wire()


class _DnsUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(dns_answer(data), addr)


class _Silent(asyncio.DatagramProtocol):
    """Receives and never answers."""


async def _dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    length = int.from_bytes(await reader.readexactly(2), "big")
    answer = dns_answer(await reader.readexactly(length))
    writer.write(len(answer).to_bytes(2, "big") + answer)
    await writer.drain()
    writer.close()


async def _pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR\r\n")
    await writer.drain()
    writer.close()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):  # probes end their connections with a reset
        await reader.read()  # accepts, reads, never answers
    writer.close()


_RAW_RESPONSES = {
    b"/eof": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close: ready",
    b"/garbage": b"SSH-2.0-OpenSSH_9.2\r\n",
    b"/headers-then-close": b"HTTP/1.1 200 OK\r\nContent-Len",
}


async def _raw_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request_line = await reader.readline()
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_RAW_RESPONSES.get(request_line.split()[1], b""))
    await writer.drain()
    writer.close()


def _http_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from lvsd tests, host={request.host}")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 200_000 + b"needle")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/big", big)
    return app


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Servers:
    """Loopback servers on an event loop in a thread of their own."""

    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ports: dict[str, int] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.call(self._start())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _site(self, name: str, tls: ssl.SSLContext | None) -> None:
        runner = web.AppRunner(_http_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        self.ports[name] = runner.addresses[0][1]
        self._closers.append(runner.cleanup)

    async def _stream(self, name: str, handler: Any, backlog: int = 100) -> asyncio.Server:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=backlog)
        self.ports[name] = server.sockets[0].getsockname()[1]

        async def close() -> None:
            server.close()

        self._closers.append(close)
        return server

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._site("http", None)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        await self._site("https", tls)
        mutual = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.certs.ca)
        mutual.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        mutual.verify_mode = ssl.CERT_REQUIRED
        await self._site("https-mutual", mutual)
        await self._stream("hang", _hang)
        await self._stream("pong", _pong)
        await self._stream("raw-http", _raw_http)
        await self._stream("dns-tcp", _dns_tcp)
        udp, _ = await loop.create_datagram_endpoint(_DnsUdp, local_addr=("127.0.0.1", 0))
        silent, _ = await loop.create_datagram_endpoint(_Silent, local_addr=("127.0.0.1", 0))
        self.ports["dns-udp"] = udp.get_extra_info("sockname")[1]
        self.ports["dns-silent"] = silent.get_extra_info("sockname")[1]
        for transport in (udp, silent):
            self._closers.append(self._closer(transport))
        self.ports["refused"] = free_port()
        self.ports["udp-refused"] = free_port(socket.SOCK_DGRAM)

    @staticmethod
    def _closer(transport: asyncio.BaseTransport) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            transport.close()

        return close

    def close(self) -> None:
        async def close_all() -> None:
            for closer in self._closers:
                await closer()

        self.call(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def servers(certs: Certs) -> Iterator[Servers]:
    s = Servers(certs)
    yield s
    s.close()


# --- specs, targets, registry --------------------------------------------------------------

def test_registry_maps_each_type_to_its_spec() -> None:
    expected = {"tcp": TcpCheck, "http": HttpCheck, "https": HttpsCheck, "dns": DnsCheck,
                "exec": ExecCheck, "file": FileCheck}
    assert dict(CHECKS) == expected
    assert type(parse_check({"type": "https", "path": "/health"})) is HttpsCheck


def test_defaults_beat_keepalived() -> None:
    spec = HttpCheck()
    assert (spec.interval, spec.timeout, spec.rise, spec.fall, spec.retry_interval) == (
        2.0, 1.0, 2, 3, 1.0)


def test_status_codes_and_ranges_are_normalised() -> None:
    spec = HttpCheck(expect_status=["200-299", 300, "301-302", "500-500"])
    assert spec.expect_status == ((200, 302), (500, 500))
    assert spec == HttpCheck(expect_status=[(200, 302), 500])
    assert spec.status_ok(302) and spec.status_ok(500) and not spec.status_ok(303)


@pytest.mark.parametrize("data", [
    {"type": "http", "expect_status": ["2xx"]},
    {"type": "http", "expect_status": ["299-200"]},
    {"type": "http", "expect_body": "("},
    {"type": "http", "method": "HEAD", "expect_body": "ok"},
    {"type": "http", "path": "no-slash"},
    {"type": "http", "host": "a\r\nX-Injected: 1"},
    {"type": "http", "headers": {"Host": "x"}},
    {"type": "http", "tiemout": 1},
    {"type": "http", "dr_path": True, "connect_ip": "192.0.2.9"},
    {"type": "https", "verify": False, "ca_file": "/etc/hostname"},
    {"type": "https", "ca_file": "/nonexistent/ca.pem"},
    {"type": "https", "client_key": "/etc/hostname"},
    {"type": "tcp", "expect": "[unclosed"},
    {"type": "dns", "query_name": "example.org", "query_type": "BOGUS"},
    {"type": "dns", "query_name": "example.org", "expect_answer": ["not-an-address"]},
    {"type": "exec", "argv": []},
    {"type": "file", "path": "/run/{hostname}"},
    {"type": "file", "path": "/run/x", "dr_path": True},
    {"type": "http", "rise": 0},
    {"type": "smtp"},
])
def test_invalid_specs_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_check(data)


def test_specs_are_frozen_and_hashable() -> None:
    spec = parse_check({"type": "http", "headers": {"X-Probe": "1"}})
    with pytest.raises(pydantic.ValidationError):
        spec.interval = 5  # type: ignore[misc]
    assert len({spec, parse_check({"type": "http", "headers": [["X-Probe", "1"]]})}) == 1


def test_connect_ip_and_port_override_the_real_server() -> None:
    target = HttpCheck(connect_ip="203.0.113.5", connect_port=8080).target(
        RS, 80, vip=VIP, vport=80)
    assert (target.address, target.port) == (ipaddress.ip_address("203.0.113.5"), 8080)


def test_dr_path_targets_the_vip_with_the_mark() -> None:
    target = HttpCheck(dr_path=True).target(RS, 80, vip=VIP, vport=80, dr_mark=0x4C560001)
    assert (target.address, target.port, target.mark, target.rs_address) == (
        VIP, 80, 0x4C560001, RS)
    with pytest.raises(ValueError, match="fwmark"):
        HttpCheck(dr_path=True).target(RS, 80, vip=VIP, vport=80)
    with pytest.raises(ValueError, match="VIP"):
        HttpCheck(dr_path=True).target(RS, 80, dr_mark=7)


def test_services_sharing_a_real_server_and_spec_share_one_probe() -> None:
    spec = HttpCheck(path="/health")
    a = check_key(spec.target(RS, 80, vip=VIP, vport=80, protocol=Protocol.TCP), spec)
    b = check_key(spec.target(RS, 80, vip=OTHER_VIP, vport=8080, protocol=Protocol.TCP), spec)
    assert a == b and hash(a) == hash(b)
    assert a != check_key(spec.target(RS, 81, vip=VIP, vport=80), spec)
    assert a != check_key(spec.target(RS, 80, vip=VIP, vport=80), HttpCheck(path="/other"))


def test_dr_path_probes_are_per_service() -> None:
    spec = HttpCheck(dr_path=True)
    a = check_key(spec.target(RS, 80, vip=VIP, vport=80, dr_mark=1), spec)
    b = check_key(spec.target(RS, 80, vip=OTHER_VIP, vport=80, dr_mark=2), spec)
    assert a != b


def test_exec_checks_are_not_shared_across_services() -> None:
    spec = ExecCheck(argv=["/bin/true"])
    a = check_key(spec.target(RS, 80, vip=VIP, vport=80), spec)
    b = check_key(spec.target(RS, 80, vip=OTHER_VIP, vport=80), spec)
    assert a != b


def test_file_checks_are_shared_by_every_target_naming_the_same_file() -> None:
    spec = FileCheck(path="/run/maint/{address}")
    a = check_key(spec.target(RS, 80, vip=VIP, vport=80), spec)
    b = check_key(spec.target(RS, 443, vip=OTHER_VIP, vport=443), spec)
    assert a == b
    assert str(a) == f"file /run/maint/{RS}"


# --- http --------------------------------------------------------------------------------

def test_http_passes_on_expected_status(servers: Servers, run: Runner[ProbeResult]) -> None:
    result = probe(run, HttpCheck(), at(servers.ports["http"]))
    assert result == ProbeResult(True, "status 200", result.latency)
    assert 0 < result.latency < 1


def test_http_refused(servers: Servers, run: Runner[ProbeResult]) -> None:
    result = probe(run, HttpCheck(), at(servers.ports["refused"]))
    assert (result.ok, result.reason) == (False, "refused")


def test_http_unexpected_status(servers: Servers, run: Runner[ProbeResult]) -> None:
    result = probe(run, HttpCheck(path="/status/503"), at(servers.ports["http"]))
    assert (result.ok, result.reason) == (False, "status 503")
    accepting = HttpCheck(path="/status/503", expect_status=["200-299", 503])
    assert probe(run, accepting, at(servers.ports["http"])).ok


def test_http_body_regex(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["http"]
    assert probe(run, HttpCheck(expect_body=r"hello from \w+"), at(port)).ok
    wrong = probe(run, HttpCheck(expect_body="goodbye"), at(port))
    assert (wrong.ok, wrong.reason) == (False, "body mismatch")


def test_http_reads_no_more_than_max_bytes(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["http"]
    capped = probe(run, HttpCheck(path="/big", expect_body="needle", max_bytes=65536), at(port))
    assert (capped.ok, capped.reason) == (False, "body mismatch")
    whole = HttpCheck(path="/big", expect_body="needle", max_bytes=300_000)
    assert probe(run, whole, at(port)).ok


def test_http_host_header(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["http"]
    assert probe(run, HttpCheck(expect_body=f"host=127.0.0.1:{port}$"), at(port)).ok
    named = HttpCheck(host="www.example.test", expect_body="host=www.example.test$")
    assert probe(run, named, at(port)).ok


def test_http_head_method(servers: Servers, run: Runner[ProbeResult]) -> None:
    assert probe(run, HttpCheck(method="head"), at(servers.ports["http"])).ok


def test_http_body_delimited_by_close(servers: Servers, run: Runner[ProbeResult]) -> None:
    spec = HttpCheck(path="/eof", expect_body="until close: ready$")
    assert probe(run, spec, at(servers.ports["raw-http"])).ok


def test_http_not_http(servers: Servers, run: Runner[ProbeResult]) -> None:
    result = probe(run, HttpCheck(path="/garbage"), at(servers.ports["raw-http"]))
    assert not result.ok and result.reason.startswith("bad response")
    cut = probe(run, HttpCheck(path="/headers-then-close"), at(servers.ports["raw-http"]))
    assert (cut.ok, cut.reason) == (False, "closed in the middle of the headers")


def test_http_hung_server_times_out_waiting_for_the_response(
        servers: Servers, run: Runner[tuple[ProbeReport, EngineLoad]]) -> None:
    spec = HttpCheck(interval=0.1, timeout=0.3)
    report, load = first_report_and_load(run, check_key(at(servers.ports["hang"]), spec))
    assert (report.result.ok, report.result.reason) == (False, "timeout (response)")
    # Never early; late only by the batch a deadline may wait for (twice: a wake-up a tick
    # early leaves it to the next) and by how late the runner's wake-ups ran, which a loaded
    # machine stretches: measured by the runner itself, not guessed as a wall-clock margin.
    waited = report.finished - report.started
    assert spec.timeout <= waited <= spec.timeout + 2 * DEFAULT_BATCH + load.max_lag + 0.01


def test_tcp_connect_timeout_when_the_listener_drops_syns(run: Runner[ProbeReport]) -> None:
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one queued connection fills it; later SYNs are dropped
        filler.connect(listener.getsockname())
        spec = TcpCheck(interval=0.1, timeout=0.3)
        report = first_report(run, check_key(at(listener.getsockname()[1]), spec))
    assert (report.result.ok, report.result.reason) == (False, "timeout (connect)")


def test_probe_from_a_bound_source_address(servers: Servers, run: Runner[ProbeResult]) -> None:
    target = ProbeTarget(LOCAL, servers.ports["http"], source=ipaddress.ip_address("127.0.0.2"))
    assert probe(run, HttpCheck(expect_body="hello"), target).ok
    assert probe(run, TcpCheck(), target).ok


def test_a_socket_handed_over_is_closed_once(servers: Servers,
                                             run: Runner[list[ProbeResult]]) -> None:
    """A probe answered at connect (connect-only TCP) on a socket it prepared itself (source
    address, DR path) resets its connection only after the event loop took the socket over;
    reset earlier, the socket object outlives its number and closes it again when collected,
    by then another probe's connection (seen as "bad file descriptor" under uvloop)."""
    source = ipaddress.ip_address("127.0.0.2")
    connect_only = ProbeTarget(LOCAL, servers.ports["hang"], source=source)

    async def probes() -> list[ProbeResult]:
        prober = TcpCheck().prober()
        results = [await prober.probe(connect_only) for _ in range(20)]
        await asyncio.sleep(0.05)
        return results

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        results = run(probes())
        gc.collect()
    assert all(r.ok for r in results)
    unclosed = [str(w.message) for w in caught if "unclosed <socket" in str(w.message)]
    assert unclosed == []


# --- https -------------------------------------------------------------------------------

def test_https_verified_with_ca_file_and_sni(servers: Servers, certs: Certs,
                                             run: Runner[ProbeResult]) -> None:
    spec = HttpsCheck(server_name="good.example", ca_file=str(certs.ca), expect_body="hello")
    assert probe(run, spec, at(servers.ports["https"])).ok


def test_https_default_name_is_the_address(servers: Servers, certs: Certs,
                                           run: Runner[ProbeResult]) -> None:
    assert probe(run, HttpsCheck(ca_file=str(certs.ca)), at(servers.ports["https"])).ok


def test_https_host_header_gives_the_name(servers: Servers, certs: Certs,
                                          run: Runner[ProbeResult]) -> None:
    spec = HttpsCheck(host="good.example:8443", ca_file=str(certs.ca))
    assert probe(run, spec, at(servers.ports["https"])).ok


def test_https_hostname_mismatch_fails(servers: Servers, certs: Certs,
                                      run: Runner[ProbeResult]) -> None:
    spec = HttpsCheck(server_name="bad.example", ca_file=str(certs.ca))
    result = probe(run, spec, at(servers.ports["https"]))
    assert not result.ok
    assert result.reason.startswith("tls: certificate verify failed: hostname mismatch")


def test_https_unknown_issuer_fails_by_default(servers: Servers,
                                               run: Runner[ProbeResult]) -> None:
    result = probe(run, HttpsCheck(server_name="good.example"), at(servers.ports["https"]))
    assert not result.ok
    assert result.reason == "tls: certificate verify failed: unable to get local issuer certificate"


def test_https_verify_false_accepts_anything(servers: Servers, run: Runner[ProbeResult]) -> None:
    spec = HttpsCheck(server_name="bad.example", verify=False)
    assert probe(run, spec, at(servers.ports["https"])).ok


def test_https_client_certificate(servers: Servers, certs: Certs,
                                  run: Runner[ProbeResult]) -> None:
    port = servers.ports["https-mutual"]
    without = probe(run, HttpsCheck(ca_file=str(certs.ca)), at(port))
    assert not without.ok
    spec = HttpsCheck(ca_file=str(certs.ca), client_cert=str(certs.client_cert),
                      client_key=str(certs.client_key))
    assert probe(run, spec, at(port)).ok


# --- tcp ---------------------------------------------------------------------------------

def test_tcp_connect(servers: Servers, run: Runner[ProbeResult]) -> None:
    assert probe(run, TcpCheck(), at(servers.ports["hang"])).ok
    refused = probe(run, TcpCheck(), at(servers.ports["refused"]))
    assert (refused.ok, refused.reason) == (False, "refused")


def test_tcp_send_expect(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["pong"]
    assert probe(run, TcpCheck(send="PING\r\n", expect=r"^\+PONG"), at(port)).ok
    wrong = probe(run, TcpCheck(send="PING\r\n", expect="^OK"), at(port))
    assert (wrong.ok, wrong.reason) == (False, "expect mismatch (7 bytes before close)")


# --- dns ---------------------------------------------------------------------------------

def test_dns_answer(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["dns-udp"]
    spec = DnsCheck(query_name="www.example.test", expect_answer=["192.0.2.2"])
    assert probe(run, spec, at(port)).ok
    missing = DnsCheck(query_name="www.example.test", expect_answer=["192.0.2.1", "192.0.2.9"])
    result = probe(run, missing, at(port))
    assert (result.ok, result.reason) == (False, "answer lacks 192.0.2.9")


def test_dns_rcode(servers: Servers, run: Runner[ProbeResult]) -> None:
    port = servers.ports["dns-udp"]
    result = probe(run, DnsCheck(query_name="www.example.org"), at(port))
    assert (result.ok, result.reason) == (False, "rcode NXDOMAIN")
    assert probe(run, DnsCheck(query_name="x.org", expect_rcode="nxdomain"), at(port)).ok


def test_dns_over_tcp(servers: Servers, run: Runner[ProbeResult]) -> None:
    spec = DnsCheck(query_name="www.example.test", transport="tcp", expect_answer=["192.0.2.1"])
    assert probe(run, spec, at(servers.ports["dns-tcp"])).ok


def test_dns_udp_port_unreachable(servers: Servers, run: Runner[ProbeResult]) -> None:
    result = probe(run, DnsCheck(query_name="www.example.test"), at(servers.ports["udp-refused"]))
    assert (result.ok, result.reason) == (False, "refused")


def test_dns_silent_server_times_out(servers: Servers, run: Runner[ProbeReport]) -> None:
    spec = DnsCheck(query_name="www.example.test", interval=0.1, timeout=0.3)
    report = first_report(run, check_key(at(servers.ports["dns-silent"]), spec))
    assert (report.result.ok, report.result.reason) == (False, "timeout (reply)")


def test_dns_from_a_bound_source_address(servers: Servers, run: Runner[ProbeResult]) -> None:
    target = ProbeTarget(LOCAL, servers.ports["dns-udp"], source=ipaddress.ip_address("127.0.0.3"))
    assert probe(run, DnsCheck(query_name="www.example.test"), target).ok


# --- exec --------------------------------------------------------------------------------

def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until_dead(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_exec_exit_status(run: Runner[ProbeResult]) -> None:
    passed = probe(run, ExecCheck(argv=python("pass")), at(80))
    assert (passed.ok, passed.reason) == (True, "exit 0")
    failed = probe(run, ExecCheck(argv=python("print('db lag 30s'); raise SystemExit(2)")), at(80))
    assert (failed.ok, failed.reason) == (False, "exit 2: db lag 30s")


def test_exec_environment_describes_the_real_server(run: Runner[ProbeResult]) -> None:
    script = python("""
        import os
        print(*(os.environ[v] for v in ("LVSD_RS_ADDRESS", "LVSD_RS_PORT", "LVSD_VIP",
                                        "LVSD_VPORT", "LVSD_PROTOCOL", "EXTRA")))
        raise SystemExit(1)
    """)
    spec = ExecCheck(argv=script, env={"EXTRA": "yes"})
    target = spec.target(RS, 8080, vip=VIP, vport=80, protocol=Protocol.TCP)
    result = probe(run, spec, target)
    assert result.reason == f"exit 1: {RS} 8080 {VIP} 80 tcp yes"


def test_exec_never_uses_a_shell(tmp_path: Path, run: Runner[ProbeResult]) -> None:
    marker = tmp_path / "injected"
    result = probe(run, ExecCheck(argv=["/bin/echo", f"; touch {marker}"]), at(80))
    assert result.ok and not marker.exists()


def test_exec_missing_program(run: Runner[ProbeResult]) -> None:
    result = probe(run, ExecCheck(argv=["/nonexistent/check"]), at(80))
    assert (result.ok, result.reason) == (
        False, "cannot run /nonexistent/check: No such file or directory")


def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path,
                                                    run: Runner[ProbeReport]) -> None:
    pids = tmp_path / "pids"
    script = python(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(60)
    """)
    spec = ExecCheck(argv=script, interval=0.1, timeout=1.5)
    report = first_report(run, check_key(at(80), spec))
    assert (report.result.ok, report.result.reason) == (False, "timeout (exit)")
    parent, grandchild = map(int, pids.read_text().split())
    assert wait_until_dead(parent)
    assert wait_until_dead(grandchild)


def test_exec_leftovers_are_killed_when_the_program_exits(tmp_path: Path,
                                                          run: Runner[ProbeResult]) -> None:
    pids = tmp_path / "pids"
    script = python(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(str(child.pid))
    """)
    started = time.monotonic()
    assert probe(run, ExecCheck(argv=script), at(80)).ok
    assert time.monotonic() - started < 10  # did not wait for the sleeper's end of output
    assert wait_until_dead(int(pids.read_text()))


# --- file --------------------------------------------------------------------------------

def test_maintenance_file_takes_the_server_out(tmp_path: Path, run: Runner[ProbeResult]) -> None:
    spec = FileCheck(path=str(tmp_path / "{address}_{port}"))
    target = spec.target(RS, 80, vip=VIP, vport=80)
    assert probe(run, spec, target) == ProbeResult(True, "no maintenance file")
    path = tmp_path / f"{RS}_80"
    path.touch()
    assert probe(run, spec, target) == ProbeResult(False, f"maintenance file {path}")
    assert (spec.rise, spec.fall) == (1, 1)


# --- director sysctls for the DR path ------------------------------------------------------

def _fake_proc(tmp_path: Path, accept_local: dict[str, int], rp_filter: dict[str, int]) -> None:
    for iface in ("all", "eth0", "eth1"):
        conf = tmp_path / "sys/net/ipv4/conf" / iface
        conf.mkdir(parents=True)
        (conf / "accept_local").write_text(f"{accept_local.get(iface, 0)}\n")
        (conf / "rp_filter").write_text(f"{rp_filter.get(iface, 0)}\n")


async def problems_with(tmp_path: Path, vip_holders: set[str] | None,
                        vip: str | None = "192.0.2.100", reply_interface: str = "eth0",
                        ) -> list[str]:
    async def routing(vip: Address | None, rs_address: Address) -> Routing:
        holders = None if vip_holders is None else frozenset(vip_holders)
        return Routing(holders, reply_interface)

    return await director_problems(ipaddress.ip_address("192.0.2.11"),
                                   None if vip is None else ipaddress.ip_address(vip),
                                   proc_sys=tmp_path / "sys", routing=routing)


async def test_director_problems_name_the_sysctls(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {}, {"all": 1})
    problems = await problems_with(tmp_path, {"lo"})
    assert len(problems) == 2
    assert problems[0].startswith("net.ipv4.conf.eth0.accept_local is 0")
    assert "rp_filter" in problems[1] and "held by lo" in problems[1]


async def test_strict_rp_filter_is_fine_when_the_vip_is_on_the_reply_interface(
    tmp_path: Path,
) -> None:
    _fake_proc(tmp_path, {"eth0": 1}, {"eth0": 1})
    assert await problems_with(tmp_path, {"eth0"}) == []
    assert await problems_with(tmp_path, {"lo"})
    assert await problems_with(tmp_path, None, vip=None)  # cannot tell where the VIP is: say so


async def test_director_without_problems(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {"eth0": 1}, {"all": 2, "eth0": 0})
    assert await problems_with(tmp_path, {"lo"}) == []


async def test_a_vip_the_director_does_not_hold_needs_nothing(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {}, {"all": 1})
    assert await problems_with(tmp_path, set()) == []


async def test_director_problems_checks_the_right_interface(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {"eth1": 1}, {})
    assert await problems_with(tmp_path, {"eth0"})
    assert await problems_with(tmp_path, {"eth1"}, reply_interface="eth1") == []


async def test_director_problems_say_when_rtnetlink_cannot_tell(tmp_path: Path) -> None:
    async def silent(vip: Address | None, rs_address: Address) -> Routing:
        return Routing(None, None)

    problems = await director_problems(ipaddress.ip_address("192.0.2.11"),
                                       ipaddress.ip_address("192.0.2.100"),
                                       proc_sys=tmp_path / "sys", routing=silent)
    assert len(problems) == 1 and "were not checked" in problems[0]


async def test_director_routing_asks_the_kernel_over_rtnetlink() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    facts = await director_routing(loopback, ipaddress.ip_address("127.0.0.2"))
    assert facts == Routing(frozenset({"lo"}), "lo")
    elsewhere = await director_routing(ipaddress.ip_address("192.0.2.250"), loopback)
    assert elsewhere.vip_holders == frozenset()
