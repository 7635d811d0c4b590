"""P1 and P3: HTTP checks of 1,000 to 37,000 real servers every 2 s.

    .venv/bin/python bench/probes.py [--sizes 1000 10000] [--seconds 20] [--loop uvloop]
        [--workers 0 2] [--no-bare] [--no-baseline]

A bare HTTP peer runs in a separate process on 0.0.0.0 (one epoll loop that accepts, reads
the request, answers a fixed 200 and closes: cheap, since it shares the cores with the
probers); real server i is 127.0.x.y on loopback. This process runs lvsd's probe engine with
``HttpCheck(interval=2, timeout=1)`` for every server, in this process (``--workers 0``, a
``ProbeRunner`` on the ``--loop`` event loop) or sharded across N worker processes
(``ShardedRunner``; workers use uvloop), and feeds each result to ``health.observe``, as
the daemon does. For each size and worker count it prints, over the window after the first
two intervals:

- probes/s, failures, and failures reported inconclusive (lvsd itself was late);
- CPU per probe: the CPU time (user + system) of this process and the workers / probes;
  cores used in all, by this process alone ("main"), and by the peer ("peer");
- start lateness (actual start - scheduled start) p50 / p99 / max, and the longest stall of
  a prober's event loop seen at its wake-ups;
- the spread of probe starts in 10 ms bins, peak / mean, at start-up (first interval) and in
  the window (steady state);
- the load average (1/5/15 min) at the end of the row: the machine is shared, so a figure
  taken at a load above ~1 measures the neighbours as much as lvsd;
- beside an in-process row, a bare prober (fixed request, no scheduler, checker or health
  state) started at the same rate on a fixed grid, and the ratio of CPU per probe,
  lvsd / bare;
- once, the probe path alone: 10,000 probes back to back, 64 at a time (no wake-ups between
  probes: the floor of CPU per probe on this host).

Loopback TCP charges part of the peer's kernel work to the prober's system time, so the CPU
figure is an upper bound. Figures are from one run on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httptools

from lvsd.checks import CheckKey, HttpCheck, ProbeTarget, check_key
from lvsd.checks.runner import ProbeRunner
from lvsd.checks.workers import ShardedRunner
from lvsd.health import HealthState, initial, observe
from lvsd.probe import ProbeReport

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
BIN = 0.010
INTERVAL = 2.0


def serve(port: int) -> None:
    """The bare peer: one epoll loop that accepts, reads a request, answers a fixed 200 and
    closes (no event-loop library, no objects beyond the socket), so that it takes as little
    of the cores the probers need as it can."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(65535)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    waiting: dict[int, socket.socket] = {}
    print("ready", flush=True)

    def answer(conn: socket.socket) -> bool:
        """True once the connection is done with (answered, closed or failed)."""
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if data:
            with contextlib.suppress(OSError):
                conn.send(RESPONSE)
        return True

    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    conn.setblocking(False)
                    if answer(conn):
                        conn.close()
                    else:
                        waiting[conn.fileno()] = conn
                        poller.register(conn.fileno(), select.EPOLLIN)
            else:
                conn = waiting[fd]
                if answer(conn):
                    poller.unregister(fd)
                    del waiting[fd]
                    conn.close()


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of other processes so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def run(coroutine: object, loop_name: str) -> object:
    if loop_name == "uvloop":
        try:
            import uvloop
        except ImportError:
            loop_name = "asyncio"
        else:
            return uvloop.run(coroutine)  # type: ignore[arg-type]
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def server_address(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"127.0.{1 + index // 250}.{1 + index % 250}")


def peak_over_mean(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start <= t < end]
    if not inside:
        return float("nan")
    bins = collections.Counter(int((t - start) / BIN) for t in inside)
    return max(bins.values()) / (len(inside) / ((end - start) / BIN))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Recorder:
    states: dict[CheckKey, HealthState]
    starts: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    first_start: dict[CheckKey, float] = field(default_factory=dict)
    inconclusive: int = 0

    def __call__(self, reports: Sequence[ProbeReport]) -> None:
        for report in reports:
            self.record(report)

    def record(self, report: ProbeReport) -> None:
        spec = report.key.spec
        self.starts.append(report.started)
        self.lateness.append(report.lateness)
        self.first_start.setdefault(report.key, report.started)
        if report.inconclusive:
            self.inconclusive += 1
            return
        self.states[report.key] = observe(self.states[report.key], report.result, spec.rise,
                                          spec.fall, now=report.finished)
        if not report.result.ok:
            self.failures[report.result.reason] += 1


async def measure(size: int, seconds: float, port: int, workers: int,
                  responder: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    spec = HttpCheck(interval=INTERVAL, timeout=1.0, path="/health")
    keys = [check_key(ProbeTarget(server_address(i), port), spec) for i in range(size)]
    record = Recorder({key: initial() for key in keys})
    runner: ProbeRunner | ShardedRunner
    if workers:
        runner = ShardedRunner(record, workers=workers, max_in_flight=1000 * workers)
        runner.start()
        await runner.wait_up()  # the start-up spread is timed from the checks' arrival
    else:
        runner = ProbeRunner(record, max_in_flight=1000)
    began = loop.time()
    runner.update(keys)
    runner.start()
    await asyncio.sleep(2 * INTERVAL)  # start-up, then one interval of steady state
    pids = runner.pids() if isinstance(runner, ShardedRunner) else []
    window_start = loop.time()
    first_probe = len(record.starts)
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    others_start = process_cpu(pids)
    responder_start = process_cpu([responder])
    runner.load()
    await asyncio.sleep(max(0.0, seconds - 2 * INTERVAL))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    others = process_cpu(pids) - others_start
    responder_cpu = process_cpu([responder]) - responder_start
    engine = runner.load()
    main_cpu = usage.ru_utime - usage_start.ru_utime + usage.ru_stime - usage_start.ru_stime
    user = usage.ru_utime - usage_start.ru_utime
    cpu = main_cpu + others
    window_end = loop.time()
    last_probe = len(record.starts)
    await runner.stop()
    probes = last_probe - first_probe
    wall = window_end - window_start
    window_lateness = record.lateness[first_probe:last_probe]
    first_starts = list(record.first_start.values())
    return {
        "size": size,
        "probes_per_s": probes / wall,
        "failures": sum(record.failures.values()),
        "cpu_per_probe_us": cpu / probes * 1e6 if probes else float("nan"),
        "user_share": user / main_cpu if main_cpu else float("nan"),
        "cores": cpu / wall,
        "main_cores": main_cpu / wall,
        "responder_cores": responder_cpu / wall,
        "inconclusive": float(record.inconclusive),
        "max_lag_ms": engine.max_lag * 1e3,
        "late_p50_ms": quantile(window_lateness, 0.50) * 1e3,
        "late_p99_ms": quantile(window_lateness, 0.99) * 1e3,
        "late_max_ms": max(window_lateness, default=float("nan")) * 1e3,
        "startup_peak_over_mean": peak_over_mean(first_starts, began, began + INTERVAL),
        "all_ran_within_interval_plus_1s": float(
            len(first_starts) == size and max(first_starts) <= began + INTERVAL + 1.0),
        "steady_peak_over_mean": peak_over_mean(record.starts[first_probe:last_probe],
                                                window_start, window_end),
        "top_failure": 0.0 if not record.failures else float(
            record.failures.most_common(1)[0][1]),
        "_reasons": record.failures.most_common(3),  # type: ignore[dict-item]
    }


async def burst(size: int, port: int, concurrency: int = 64) -> dict[str, float]:
    """The probe path alone: the same probes back to back, no scheduler (a baseline)."""
    prober = HttpCheck(path="/health").prober()
    targets = [ProbeTarget(server_address(i), port) for i in range(size)]
    slots = asyncio.Semaphore(concurrency)
    failures: collections.Counter[str] = collections.Counter()

    async def one(target: ProbeTarget) -> None:
        async with slots:
            result = await prober.probe(target)
            if not result.ok:
                failures[result.reason] += 1

    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    await asyncio.gather(*(one(target) for target in targets))
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user = usage.ru_utime - usage_start.ru_utime
    cpu = user + usage.ru_stime - usage_start.ru_stime
    return {"probes_per_s": size / wall, "cpu_per_probe_us": cpu / size * 1e6,
            "user_share": user / cpu if cpu else float("nan"),
            "failures": sum(failures.values()),
            "_reasons": failures.most_common(3)}  # type: ignore[dict-item]


class _BareResponse(asyncio.Protocol):
    """The least a probe can do: send a fixed request, read the status, reset."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(self.parser.get_status_code())
        assert self.transport is not None
        self.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(0)


async def bare(size: int, seconds: float, port: int) -> dict[str, float]:
    """A peer run side by side: a bare prober (no scheduler, checker or health state) that
    starts the same number of probes per second on a fixed grid, a task and a connection
    each. What a loaded host charges for each wake-up shows in both alike."""
    loop = asyncio.get_running_loop()
    rate = size / INTERVAL
    hosts = [str(server_address(i)) for i in range(size)]
    passed = 0

    async def probe(host: str) -> None:
        nonlocal passed
        done: asyncio.Future[int] = loop.create_future()
        with contextlib.suppress(OSError):
            await loop.create_connection(lambda: _BareResponse(done), host, port)
            passed += await done == 200

    tasks: set[asyncio.Task[None]] = set()
    began = loop.time()
    count = 0
    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal count, timer
        task = loop.create_task(probe(hosts[count % size]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        count += 1
        timer = loop.call_at(began + count / rate, tick)

    tick()
    await asyncio.sleep(INTERVAL)  # same warm-up as the measured run
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    window_start = loop.time()
    passed_start = passed
    await asyncio.sleep(max(0.0, seconds - 2 * INTERVAL))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = loop.time() - window_start
    probes = passed - passed_start
    cpu = usage.ru_utime - usage_start.ru_utime + usage.ru_stime - usage_start.ru_stime
    assert timer is not None
    timer.cancel()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"probes_per_s": probes / wall,
            "cpu_per_probe_us": cpu / probes * 1e6 if probes else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=20.0, help="per size (≥ 6)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="probe worker processes, one run each (0: in this process)")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare prober run beside each in-process figure")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the probe path alone (10,000 probes back to back)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    responder = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(args.port)],
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert responder.stdout is not None
        if responder.stdout.readline().strip() != "ready":
            sys.exit("the responder did not start")
        loop_name = args.loop
        if loop_name == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                loop_name = "asyncio"
        print(f"lvsd probe benchmark: HTTP check every {INTERVAL:g} s, {loop_name} event loop, "
              f"{args.seconds:g} s per size, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        baseline = None if args.no_baseline else run(burst(10_000, args.port), loop_name)
        assert baseline is None or isinstance(baseline, dict)
        if baseline is not None:
            print(f"baseline, the probe path alone (10,000 probes back to back, 64 at a time): "
                  f"{baseline['probes_per_s']:.0f} probes/s, "
                  f"{baseline['cpu_per_probe_us']:.0f} µs CPU per probe "
                  f"({baseline['user_share']:.0%} user), {baseline['failures']:.0f} failures "
                  f"{baseline['_reasons'] or ''}, load average {load_average()}")
        print(f"{'servers':>8} {'workers':>7} {'probes/s':>9} {'fail':>5} {'inconcl':>7} "
              f"{'CPU/probe':>10} {'user':>5} {'cores':>6} {'main':>5} {'peer':>5} "
              f"{'late p50':>9} {'p99':>8} {'max':>8} {'lag max':>8} {'start pk/mean':>14} "
              f"{'steady pk/mean':>15} {'all<=iv+1s':>10} {'load avg':>14} | "
              f"{'bare probes/s':>13} {'CPU/probe':>10} {'lvsd/bare':>9}")
        for workers in args.workers:
            for size in args.sizes:
                figures = run(measure(size, max(args.seconds, 6.0), args.port, workers,
                                      responder.pid), loop_name)
                assert isinstance(figures, dict)
                load = load_average()
                time.sleep(1.0)
                if workers == 0 and not args.no_bare:
                    peer = run(bare(size, max(args.seconds, 6.0), args.port), loop_name)
                    assert isinstance(peer, dict)
                    versus = (f"{peer['probes_per_s']:>13.0f} {peer['cpu_per_probe_us']:>8.0f}µs "
                              f"{figures['cpu_per_probe_us'] / peer['cpu_per_probe_us']:>9.2f}")
                else:
                    versus = f"{'-':>13} {'-':>10} {'-':>9}"
                print(f"{size:>8} {workers:>7} {figures['probes_per_s']:>9.0f} "
                      f"{figures['failures']:>5.0f} {figures['inconclusive']:>7.0f} "
                      f"{figures['cpu_per_probe_us']:>8.0f}µs {figures['user_share']:>5.0%} "
                      f"{figures['cores']:>6.2f} {figures['main_cores']:>5.2f} "
                      f"{figures['responder_cores']:>5.2f} "
                      f"{figures['late_p50_ms']:>7.2f}ms {figures['late_p99_ms']:>6.2f}ms "
                      f"{figures['late_max_ms']:>6.1f}ms {figures['max_lag_ms']:>6.1f}ms "
                      f"{figures['startup_peak_over_mean']:>14.2f} "
                      f"{figures['steady_peak_over_mean']:>15.2f} "
                      f"{'yes' if figures['all_ran_within_interval_plus_1s'] else 'NO':>10} "
                      f"{load:>14} | {versus}", flush=True)
                if figures["_reasons"]:
                    print(f"{'':>8} failures: {figures['_reasons']}")
                time.sleep(1.0)
    finally:
        responder.terminate()
        responder.wait(10)
    print("P1 goal: 10,000 servers on <= 0.5 core (~100 µs CPU per probe), p99 lateness "
          "<= 50 ms. P3 goal: peak <= 2x mean in 10 ms bins.")


if __name__ == "__main__":
    main()
