"""P6: /metrics render latency and size at 1,000 and 10,000 real servers.

    .venv/bin/python bench/metrics.py [--runs 9]

For each table shape it prints the median (and min) of N renders of the whole exposition,
wall and CPU time, cold (new key objects, as after a reload) and warm (the daemon's steady
state); the body size plain and gzipped; the series count and series per real server; the
latency of ``GET /metrics`` through the aiohttp app on loopback, plain and gzip; and, side by
side, prometheus_client's own rendering of the same series through a collector (the baseline
P6 beats). Figures are medians from one run on a shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import ipaddress
import statistics
import time
from collections.abc import Callable, Iterator

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lvsd.api import create_app, start_api
from lvsd.metrics import DaemonMetrics
from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
)
from lvsd.snapshot import LastProbe, ServerStatus, ServiceStatus, Snapshot

SHAPES = ((100, 10), (1000, 10), (10, 1000))  # (services, real servers each)


def synthetic(services: int, per_service: int, now: float) -> Snapshot:
    """A DR table with realistic counters: every server checked, one in ten down."""
    statuses = []
    for i in range(services):
        vip = ipaddress.IPv4Address(0xC0000000 + i)  # 192.0.0.0 + i
        key = ServiceKey.virtual(Protocol.TCP, vip, 80)
        totals = ServiceStats(*(10_000_000 + i * 7 + k for k in range(10)))
        kernel = Service(key, "wrr", stats=totals)
        servers = []
        for j in range(per_service):
            n = i * per_service + j
            dest_key = DestKey(ipaddress.IPv4Address(0x0A000000 + n), 80)
            up = n % 10 != 0
            traffic = ServiceStats(n * 31, n * 1_013, n * 977, n * 1_500_017, n * 1_200_003,
                                   n % 50, n % 500, n % 400, n * 3 % 100_000, n * 2 % 90_000)
            dest = Dest(dest_key, 100 if up else 0,
                        stats=DestStats(n % 300, n % 1_000, 0, traffic))
            probe = LastProbe(up, "HTTP 200" if up else "connection refused", 0.0012, now - 1)
            servers.append(ServerStatus(dest_key, "real", 100, dest, "up" if up else "down",
                                        check_type="http", last_probe=probe,
                                        health_since=now - 600))
        healthy = sum(100 for s in servers if s.health == "up")
        statuses.append(ServiceStatus(key, f"svc-{i}", kernel, tuple(servers), 1, healthy,
                                      healthy < 1, False, False))
    return Snapshot(tuple(statuses), (), now, True, "bench")


class ClientLibraryCollector:
    """The same per-server series through prometheus_client's metric families (the baseline)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        names = ["local_address", "local_port", "proto", "local_mark", "remote_address",
                 "remote_port"]
        families: dict[str, tuple[Metric, Callable[[ServerStatus, Dest], float]]] = {
            "connections": (CounterMetricFamily("b_backend_connections", "", labels=names),
                            lambda s, d: d.stats.traffic.conns),
            "inpkts": (CounterMetricFamily("b_backend_incoming_packets", "", labels=names),
                       lambda s, d: d.stats.traffic.inpkts),
            "outpkts": (CounterMetricFamily("b_backend_outgoing_packets", "", labels=names),
                        lambda s, d: d.stats.traffic.outpkts),
            "inbytes": (CounterMetricFamily("b_backend_incoming_bytes", "", labels=names),
                        lambda s, d: d.stats.traffic.inbytes),
            "outbytes": (CounterMetricFamily("b_backend_outgoing_bytes", "", labels=names),
                         lambda s, d: d.stats.traffic.outbytes),
            "active": (GaugeMetricFamily("b_backend_connections_active", "", labels=names),
                       lambda s, d: d.stats.active),
            "inactive": (GaugeMetricFamily("b_backend_connections_inactive", "", labels=names),
                         lambda s, d: d.stats.inactive),
            "weight": (GaugeMetricFamily("b_backend_weight", "", labels=names),
                       lambda s, d: d.weight),
            "configured": (GaugeMetricFamily("b_backend_configured_weight", "", labels=names),
                           lambda s, d: s.configured_weight),
            "health": (GaugeMetricFamily("b_backend_health", "", labels=names),
                       lambda s, d: 1 if s.health == "up" else 0),
        }
        for status in self.snapshot.services:
            key = status.key
            prefix = [str(key.address), str(key.port), "TCP", ""]
            for server in status.servers:
                dest = server.kernel
                if dest is None:
                    continue
                labels = [*prefix, str(server.key.address), str(server.key.port)]
                for family, value_of in families.values():
                    family.add_metric(labels, value_of(server, dest))  # type: ignore[attr-defined]
        for family, _ in families.values():
            yield family


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return walls, cpus


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms  min {min(values) * 1000:7.1f} ms"


class StaticSource:
    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def snapshot(self) -> Snapshot:
        return self.current

    async def fresh_snapshot(self, max_age: float) -> Snapshot:
        return self.current


async def http_latency(snapshot: Snapshot, runs: int) -> dict[str, list[float]]:
    runner = await start_api(create_app(StaticSource(snapshot), DaemonMetrics()), "127.0.0.1", 0)
    results: dict[str, list[float]] = {"plain": [], "gzip": []}
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for encoding in ("plain", "gzip"):
                headers = {"Accept-Encoding": "gzip" if encoding == "gzip" else "identity"}
                for _ in range(runs + 1):  # the first request warms the label cache
                    started = time.perf_counter()
                    async with session.get(f"http://127.0.0.1:{port}/metrics",
                                           headers=headers) as response:
                        await response.read()
                    results[encoding].append(time.perf_counter() - started)
                results[encoding].pop(0)
    finally:
        await runner.cleanup()
    return results


def bench_shape(services: int, per_service: int, runs: int) -> None:
    now = time.time()
    destinations = services * per_service
    print(f"\n== {destinations:,} real servers ({services} services x {per_service}) ==")
    metrics = DaemonMetrics()
    snapshot = synthetic(services, per_service, now)
    body = metrics.exposition(snapshot)
    walls, cpus = timed(lambda: metrics.exposition_chunks(snapshot), runs)
    print(f"render warm            wall {ms(walls)}   cpu {ms(cpus)}")
    # Cold: every snapshot has new key objects, as after a reload (no cached label strings).
    fresh = iter([synthetic(services, per_service, now) for _ in range(3)])
    cold_walls, cold_cpus = timed(lambda: metrics.exposition_chunks(next(fresh)), 3)
    print(f"render cold (new keys) wall {ms(cold_walls)}   cpu {ms(cold_cpus)}")
    lines = [line for line in body.splitlines() if line and not line.startswith(b"#")]
    per_dest = [line for line in lines if b"remote_address=" in line]
    compressed = gzip.compress(body, 1)
    gzip_walls, _ = timed(lambda: gzip.compress(body, 1), runs)
    print(f"size                   {len(body):,} bytes, gzip {len(compressed):,} bytes "
          f"({gzip_walls and ms(gzip_walls)} to compress)")
    print(f"series                 {len(lines):,} in all, {len(per_dest) / destinations:.1f} "
          f"per real server")
    latency = asyncio.run(http_latency(snapshot, runs))
    print(f"GET /metrics plain     wall {ms(latency['plain'])}")
    print(f"GET /metrics gzip      wall {ms(latency['gzip'])}")
    registry = CollectorRegistry()
    registry.register(ClientLibraryCollector(snapshot))
    base_walls, _ = timed(lambda: generate_latest(registry), max(3, runs // 3))
    print(f"baseline: prometheus_client collector, 10 series per server: wall {ms(base_walls)} "
          f"-> lvsd is {statistics.median(base_walls) / statistics.median(walls):.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for services, per_service in SHAPES:
        bench_shape(services, per_service, args.runs)


if __name__ == "__main__":
    main()
