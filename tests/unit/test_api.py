"""The HTTP API through aiohttp's test client: endpoints, gzip, readiness, JSON and the page."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import html
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lvsd.api import accepts_gzip, create_app, render_page, start_api
from lvsd.errors import ListenError
from lvsd.metrics import DaemonMetrics
from lvsd.snapshot import LastProbe, ProbingStatus, Snapshot, SyncStatus
from tests.unit.snapshot_builders import NOW, WEB, lab_snapshot, server, service


class StaticSource:
    """A SnapshotSource that serves whatever snapshot the test sets."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.fresh_asked: list[float] = []
        self.built = 0  # snapshot() calls: each one may build a whole snapshot

    @property
    def ready(self) -> bool:
        return self.current.ready

    def snapshot(self) -> Snapshot:
        self.built += 1
        return self.current

    async def fresh_snapshot(self, max_age: float) -> Snapshot:
        self.fresh_asked.append(max_age)
        return self.current


@pytest.fixture
def source() -> StaticSource:
    return StaticSource(lab_snapshot())


@pytest.fixture
async def client(source: StaticSource) -> AsyncIterator[TestClient[object, object]]:
    app = create_app(source, DaemonMetrics(), clock=lambda: NOW)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_healthz_answers_from_the_event_loop(client: TestClient[object, object]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok\n"


async def test_readyz_is_503_until_ready(
    client: TestClient[object, object], source: StaticSource
) -> None:
    source.current = lab_snapshot(ready=False)
    assert (await client.get("/readyz")).status == 503
    source.current = lab_snapshot(ready=True)
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("ready", [False, True])
async def test_readyz_and_healthz_never_build_a_snapshot(
    client: TestClient[object, object], source: StaticSource, ready: bool
) -> None:
    source.current = lab_snapshot(ready=ready)
    for _ in range(3):
        assert (await client.get("/readyz")).status == (200 if ready else 503)
        assert (await client.get("/healthz")).status == 200
    assert source.built == 0 and source.fresh_asked == []


async def test_metrics_plain_text_with_fresh_counters(
    client: TestClient[object, object], source: StaticSource
) -> None:
    response = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in response.headers
    body = await response.text()
    assert 'lvsd_backend_health{local_address="192.0.2.10"' in body
    assert "lvsd_build_info{" in body
    assert source.fresh_asked == [1.0]


async def test_metrics_gzip_when_asked(client: TestClient[object, object]) -> None:
    plain = await (await client.get("/metrics", headers={"Accept-Encoding": "identity"})).read()
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip, deflate"},
                                auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    compressed = await response.read()
    assert len(compressed) < len(plain)
    unzipped = gzip.decompress(compressed)
    # The process metrics (CPU seconds) move between two scrapes; the table's series do not.
    assert [line for line in unzipped.splitlines() if line.startswith(b"lvsd_backend")] == [
        line for line in plain.splitlines() if line.startswith(b"lvsd_backend")]


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("GZIP", True),
    ("gzip;q=0", False), ("identity", False), ("", False), ("deflate, br", False),
])
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


async def test_status_json_lists_every_service_and_server(
    client: TestClient[object, object],
) -> None:
    document = await (await client.get("/status")).json()
    assert document["ready"] is True
    assert document["last_reload"] == {"ok": True, "at": NOW - 30, "error": None}
    assert document["age"] == 0.5
    assert [s["key"] for s in document["services"]] == [
        "tcp:192.0.2.10:80", "udp:[2001:db8::53]:53", "fwm:10"]
    web = document["services"][0]
    assert web["name"] == "web"
    assert {k: web[k] for k in ("protocol", "address", "port", "fwmark", "quorum",
                                "healthy_weight", "below_quorum", "sorry_active",
                                "fail_open_active")} == {
        "protocol": "TCP", "address": "192.0.2.10", "port": 80, "fwmark": 0, "quorum": 1,
        "healthy_weight": 10, "below_quorum": False, "sorry_active": False,
        "fail_open_active": False}
    assert web["kernel"]["scheduler"] == "wrr"
    assert web["kernel"]["stats"]["connections"] == 100
    down = web["servers"][1]
    assert down["server"] == "198.51.100.2:80"
    assert down["health"] == "down"
    assert down["configured_weight"] == 10
    assert down["kernel_weight"] == 0
    assert down["draining"] is False
    assert down["last_probe"] == {"ok": False, "reason": "connection refused",
                                  "latency": 0.0042, "at": NOW - 1, "age": 1.0}
    assert down["kernel"]["active"] == 12 % 5
    assert down["kernel"]["stats"]["cps"] == 12 % 7
    assert set(down["kernel"]["stats"]) == {
        "connections", "in_packets", "out_packets", "in_bytes", "out_bytes", "cps", "in_pps",
        "out_pps", "in_bytes_per_second", "out_bytes_per_second"}
    marked = document["services"][2]
    assert (marked["protocol"], marked["address"], marked["fwmark"]) == ("FWM", None, 10)
    assert [f["key"] for f in document["foreign"]] == ["tcp:203.0.113.7:443"]
    assert document["foreign"][0]["servers"][0]["kernel"]["forward"] == "masq"


async def test_page_shows_every_server_with_its_health(
    client: TestClient[object, object], source: StaticSource
) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '<meta http-equiv="refresh" content="2">' in page
    rows = dict(re.findall(r'data-server="([^"]+)" data-health="([^"]+)"', page))
    assert rows == {"198.51.100.1:80": "up", "198.51.100.2:80": "down",
                    "[2001:db8::1]:53": "up", "198.51.100.3:0": "up"}
    assert '<tr class="down" data-server="198.51.100.2:80"' in page
    assert "connection refused" in page
    assert 'data-server="198.51.100.99:443"' in page  # the foreign service's server
    assert "<script" not in page


async def test_page_refresh_can_be_changed_or_turned_off(
    client: TestClient[object, object],
) -> None:
    assert 'content="10"' in await (await client.get("/?refresh=10")).text()
    assert "http-equiv" not in await (await client.get("/?refresh=0")).text()
    assert 'content="2"' in await (await client.get("/?refresh=soon")).text()


def test_page_escapes_every_name_and_reason() -> None:
    hostile = "<script>alert('x')</script>"
    bad_probe = LastProbe(False, '<img src=x onerror="boom">', 0.5, NOW - 2)
    snapshot = Snapshot(
        (service(WEB, hostile, [server("198.51.100.1", health="down", last_probe=bad_probe)]),),
        (), NOW, True, "/etc/<lvsd>.toml",
    )
    page = render_page(snapshot, NOW)
    assert "<script" not in page
    assert "<img" not in page
    assert "<lvsd>" not in page
    assert html.escape(hostile) in page
    assert html.escape('<img src=x onerror="boom">') in page


def test_page_marks_draining_disabled_and_quorum_states() -> None:
    draining = server("198.51.100.5", role="draining", weight=0, health="unchecked",
                      drain_deadline=NOW + 90)
    disabled = server("198.51.100.6", disabled=True, kernel_weight=0)
    snapshot = Snapshot(
        (service(WEB, "web", [server("198.51.100.1", health="down"), draining, disabled],
                 quorum=20, sorry_active=True),),
        (), NOW, False, "x",
    )
    page = render_page(snapshot, NOW)
    assert '<tr class="draining" data-server="198.51.100.5:80"' in page
    assert "draining, removed in 90.0 s" in page
    assert '<tr class="disabled" data-server="198.51.100.6:80"' in page
    assert "below quorum" in page
    assert "sorry server active" in page
    assert "not ready" in page


def test_page_of_a_service_missing_from_the_kernel() -> None:
    snapshot = Snapshot((service(WEB, "web", [server("198.51.100.1", in_kernel=False)],
                                 in_kernel=False),), (), NOW, True, "x")
    page = render_page(snapshot, NOW)
    assert "not in kernel" in page
    assert 'data-server="198.51.100.1:80" data-health="up"' in page


async def test_start_api_serves_on_the_given_address(source: StaticSource) -> None:
    import aiohttp

    source.current = dataclasses.replace(lab_snapshot(), services=())
    runner = await start_api(create_app(source, DaemonMetrics()), "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/healthz"
        ) as response:
            assert await response.text() == "ok\n"
    finally:
        await runner.cleanup()


# --- the kernel table out of sync -----------------------------------------------------------

IN_SYNC = SyncStatus(in_sync=True, failed_passes=2)
OUT_OF_SYNC = SyncStatus(
    in_sync=False, consecutive_failures=12, failed_passes=14,
    last_error="add service tcp:192.0.2.10:80: No such file or directory (errno 2)")


async def test_status_says_whether_the_table_is_in_sync(
    client: TestClient[object, object], source: StaticSource
) -> None:
    source.current = dataclasses.replace(lab_snapshot(), sync=IN_SYNC)
    document = await (await client.get("/status")).json()
    assert document["table_sync"] == {"in_sync": True, "last_error": None,
                                      "consecutive_failures": 0, "failed_passes": 2}
    source.current = dataclasses.replace(lab_snapshot(), sync=OUT_OF_SYNC)
    document = await (await client.get("/status")).json()
    assert document["table_sync"] == {"in_sync": False, "last_error": OUT_OF_SYNC.last_error,
                                      "consecutive_failures": 12, "failed_passes": 14}


def test_page_shows_a_table_out_of_sync_with_its_error() -> None:
    assert "not in sync" not in render_page(dataclasses.replace(lab_snapshot(), sync=IN_SYNC),
                                            NOW)
    page = render_page(dataclasses.replace(lab_snapshot(), sync=OUT_OF_SYNC), NOW)
    assert '<span class="badge bad">table not in sync</span>' in page
    assert "12 failed pass(es) in a row: " in page
    assert html.escape(OUT_OF_SYNC.last_error or "") in page
    # Before the first pass nothing is in sync yet: "not ready" says it.
    not_ready = dataclasses.replace(lab_snapshot(ready=False), sync=SyncStatus())
    assert "not in sync" not in render_page(not_ready, NOW)


OVERLOADED = ProbingStatus(True, 10.0, 5000, 1200, 300, 2.5, 0.4)


async def test_status_says_how_late_the_probe_engine_runs(
    client: TestClient[object, object], source: StaticSource
) -> None:
    document = await (await client.get("/status")).json()
    assert document["probing"] == {"overloaded": False, "window": 0.0, "probes": 0, "late": 0,
                                   "inconclusive": 0, "max_lateness": 0.0,
                                   "max_loop_stall": 0.0}
    source.current = dataclasses.replace(lab_snapshot(), probing=OVERLOADED)
    document = await (await client.get("/status")).json()
    assert document["probing"] == {"overloaded": True, "window": 10.0, "probes": 5000,
                                   "late": 1200, "inconclusive": 300, "max_lateness": 2.5,
                                   "max_loop_stall": 0.4}


def test_page_shows_an_overloaded_probe_engine() -> None:
    assert "overloaded" not in render_page(lab_snapshot(), NOW)
    page = render_page(dataclasses.replace(lab_snapshot(), probing=OVERLOADED), NOW)
    assert '<span class="badge bad">overloaded</span>' in page
    assert "1200 of 5000 probes started late (up to 2.500 s) in the last 10 s" in page
    assert "300 failures not held against their servers" in page


def test_metrics_say_when_the_probe_engine_is_overloaded() -> None:
    def gauge(snapshot: Snapshot) -> str:
        text = DaemonMetrics().exposition(snapshot).decode()
        return next(line for line in text.splitlines()
                    if line.startswith("lvsd_probe_engine_overloaded "))

    assert gauge(lab_snapshot()) == "lvsd_probe_engine_overloaded 0"
    assert gauge(dataclasses.replace(lab_snapshot(), probing=OVERLOADED)) == (
        "lvsd_probe_engine_overloaded 1")


# --- a daemon that is not started yet -------------------------------------------------------


@pytest.mark.parametrize("path", ["/status", "/metrics", "/", "/readyz", "/healthz"])
async def test_before_ready_nothing_asks_the_kernel(
    client: TestClient[object, object], source: StaticSource, path: str
) -> None:
    source.current = dataclasses.replace(lab_snapshot(ready=False), services=(), foreign=())
    response = await client.get(path)
    assert response.status == (503 if path == "/readyz" else 200)
    assert source.fresh_asked == []
    if path == "/status":
        assert (await response.json())["ready"] is False


# --- what a client sends is never lvsd's error ----------------------------------------------


class FailingSource(StaticSource):
    """A source whose fresh snapshot comes late, or raises: a bug in lvsd, not the client."""

    def __init__(self, snapshot: Snapshot, *, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(snapshot)
        self.delay = delay
        self.fail = fail

    async def fresh_snapshot(self, max_age: float) -> Snapshot:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("a bug in lvsd")
        return self.current


@contextlib.asynccontextmanager
async def serving(source: StaticSource) -> AsyncIterator[int]:
    runner = await start_api(create_app(source, DaemonMetrics()), "127.0.0.1", 0)
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, request: bytes, *, hang_up: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if hang_up:
            # RST, not FIN: the connection is gone before lvsd writes its answer.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def loud(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records
            if r.levelno >= logging.WARNING or r.exc_info]


MALFORMED = {
    "tls-handshake": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
    "bad-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "garbage-line": b"\x00\xff\xfe nonsense\r\n\r\n",
    "nul-in-path": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "too-many-headers": b"GET / HTTP/1.1\r\n"
                        + b"".join(b"X-%d: a\r\n" % i for i in range(20_000)) + b"\r\n",
    "bad-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "bad-chunk": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "no-host-http11": b"GET / HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_is_answered_400_and_logged_at_debug_only(
    source: StaticSource, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(source) as port:
        answer = await exchange(port, request_bytes)
    assert answer.split(b"\r\n", 1)[0].split()[1:2] in ([b"400"], [b"200"]), answer[:100]
    assert loud(caplog.records) == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
        (b"DELETE /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
        (b"POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", b"405"),
    ],
    ids=["unknown-path", "wrong-method", "post-with-body"],
)
async def test_unknown_paths_and_methods_are_quiet(
    source: StaticSource, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(source) as port:
        answer = await exchange(port, request_bytes)
    assert answer.split(b"\r\n", 1)[0].split()[1] == status
    assert loud(caplog.records) == []


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /metrics HTTP/1.1\r\nHo", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
     b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["mid-request", "before-the-metrics-answer", "before-the-status-answer"],
)
async def test_a_client_that_hangs_up_is_not_an_error(
    caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    source = FailingSource(lab_snapshot(), delay=0.2)
    async with serving(source) as port:
        for _ in range(3):
            await exchange(port, request_bytes, hang_up=True)
        await asyncio.sleep(0.5)
    assert loud(caplog.records) == []


async def test_an_error_in_lvsd_itself_is_still_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(FailingSource(lab_snapshot(), fail=True)) as port:
        answer = await exchange(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "a bug in lvsd" in str(errors[0].exc_info[1])


# --- the listen address ---------------------------------------------------------------------


async def test_a_port_in_use_is_a_listen_error_naming_the_address(source: StaticSource) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            await start_api(create_app(source, DaemonMetrics()), "127.0.0.1", port)
    assert str(caught.value) == (
        f"daemon.listen: cannot listen on 127.0.0.1:{port}: the port is already in use"
    )


@pytest.mark.parametrize(
    ("host", "shown", "reason"),
    [("192.0.2.1", "192.0.2.1:9", "the address is not on this host"),
     ("2001:db8::1", "[2001:db8::1]:9", "")],
)
async def test_an_address_not_on_this_host_is_a_listen_error(
    source: StaticSource, host: str, shown: str, reason: str
) -> None:
    with pytest.raises(ListenError) as caught:
        await start_api(create_app(source, DaemonMetrics()), host, 9)
    assert str(caught.value).startswith(f"daemon.listen: cannot listen on {shown}: ")
    assert reason in str(caught.value)


def test_the_cli_turns_a_listen_error_into_exit_1_with_the_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lvsd.daemon
    from lvsd.cli import EXIT_FAILED, main

    def refuse(path: object, early: object) -> int:
        raise ListenError("127.0.0.1", 9163, "the port is already in use")

    monkeypatch.setattr(lvsd.daemon, "run_daemon", refuse)
    assert main(["run", "--config", "/nonexistent"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err == ("lvsd: daemon.listen: cannot listen on 127.0.0.1:9163: "
                   "the port is already in use\n")
