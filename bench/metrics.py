"""P6: /metrics render latency and size at 1,000 and 10,000 real servers.

    .venv/bin/python bench/metrics.py [--runs 9] [--sweep 100 1000 10000 37000] [--json FILE]

For each table shape it prints the median (and min) of N renders of the whole exposition,
wall and CPU time, cold (new key objects, as after a reload) and warm (the daemon's steady
state); the body size plain and gzipped; the series count and series per real server; the
latency of ``GET /metrics`` through the aiohttp app on loopback, plain and gzip; and, side by
side, prometheus_client's own rendering of the same series through a collector (the baseline
P6 beats). ``--sweep`` then renders tables of each size (services of 10 servers) and prints
the CPU of a warm render and of gzip against the size. Figures are medians from one run on a
shared machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import ipaddress
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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

    @property
    def ready(self) -> bool:
        return self.current.ready

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


def bench_shape(services: int, per_service: int, runs: int) -> dict[str, float]:
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
          f"-> lvsd is {statistics.median(base_walls) / statistics.median(walls):.1f}x faster",
          flush=True)
    return {"services": services, "per_service": per_service, "dests": destinations,
            "render_wall": statistics.median(walls), "render_cpu": statistics.median(cpus),
            "cold_wall": statistics.median(cold_walls), "bytes": len(body),
            "gzip_bytes": len(compressed), "series": len(lines),
            "series_per_dest": len(per_dest) / destinations,
            "get_plain": statistics.median(latency["plain"]),
            "get_gzip": statistics.median(latency["gzip"]),
            "baseline_wall": statistics.median(base_walls)}


def sweep(sizes: list[int], runs: int) -> list[dict[str, float]]:
    """Warm render and gzip CPU against table size, services of 10 servers (and fewer)."""
    print(f"\n== cost against table size (warm render and gzip level 1, CPU, median of {runs}) ==")
    print(f"{'destinations':>13}{'render ms':>11}{'gzip ms':>9}{'µs/dest':>9}{'MB':>7}")
    figures = []
    for size in sizes:
        per_service = min(10, size)
        metrics = DaemonMetrics()
        snapshot = synthetic(max(1, size // per_service), per_service, time.time())
        body = metrics.exposition(snapshot)
        _, cpus = timed(functools.partial(metrics.exposition_chunks, snapshot), runs)
        _, gzips = timed(functools.partial(gzip.compress, body, 1), runs)
        render, packed = statistics.median(cpus), statistics.median(gzips)
        print(f"{size:>13,}{render * 1000:>11.1f}{packed * 1000:>9.1f}"
              f"{(render + packed) / size * 1e6:>9.1f}{len(body) / 1e6:>7.1f}", flush=True)
        figures.append({"dests": size, "render_cpu": render, "gzip_cpu": packed,
                        "bytes": len(body)})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--shapes", nargs="+", metavar="SxR",
                        help="table shapes (default: 100x10 1000x10 10x1000)")
    parser.add_argument("--sweep", type=int, nargs="*", metavar="N",
                        help="table sizes for the cost curve (none: skip it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not 1 <= args.runs <= 100 or any(not 1 <= n <= 100_000 for n in args.sweep or ()):
        parser.error("--runs must be 1..100 and --sweep sizes 1..100000")
    shapes = SHAPES if not args.shapes else tuple(
        (int(s), int(r)) for s, r in (shape.split("x") for shape in args.shapes))
    print(f"lvsd /metrics benchmark: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    results = {"shapes": [bench_shape(services, per_service, args.runs)
                          for services, per_service in shapes],
               "sweep": sweep(args.sweep, max(1, args.runs // 3)) if args.sweep else []}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
