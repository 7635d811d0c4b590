"""The HTTP API through aiohttp's test client: endpoints, gzip, readiness, JSON and the page."""

from __future__ import annotations

import dataclasses
import gzip
import html
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lvsd.api import accepts_gzip, create_app, render_page, start_api
from lvsd.metrics import DaemonMetrics
from lvsd.snapshot import LastProbe, Snapshot
from tests.unit.snapshot_builders import NOW, WEB, lab_snapshot, server, service


class StaticSource:
    """A SnapshotSource that serves whatever snapshot the test sets."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.fresh_asked: list[float] = []

    def snapshot(self) -> Snapshot:
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
