"""P7, a reload under probe load, P2 at scale and P5's daemon side: the daemon on the host.

    .venv/bin/python bench/daemon.py [--parts memory reload detect event] [--servers 10000]
        [--no-probes] [--detect-check http|tcp] [--max-in-flight N]
    bash tests/vm/run-in-vm.sh .venv/bin/python bench/daemon.py --kernel --servers 300 \
        --parts reload detect

Needs root: the benchmark first moves itself into a network namespace of its own, holding only
``lo`` and a veth pair, so the responder listening on 0.0.0.0 and every probe stay inside it.
Real server i is 127.1.x.y (loopback), or for the black-holed half 198.18.x.y: local (served)
through a ``local`` route until the failure, then routed to a veth neighbour that never
answers. The responder is a separate process (uvloop, a fixed HTTP 200). The IPVS table is
lvsd's in-memory fake (``lvsd.ipvs.fake``), or with ``--kernel`` the kernel's table of that
namespace (run that in the VM, where Python is ~10x slower: use fewer servers). Each part runs
in a process of its own, so that its memory figures are its own.

- memory (P7): VmRSS / VmHWM of a daemon with N real servers (N/10 services x 10) and HTTP
  checks (interval 2 s) after start and after three intervals of probing the responder with
  the real ``ProbeRunner``; then, in another process, tracemalloc's current and peak Python
  heap with the ``ProbeRunner`` created and loaded but not started. Goal <= 100 MB.
- reload and detect run the probes as ``lvsd run`` does (``probe_workers = "auto"``: in worker
  processes above 2,000 probes/s, so at 10,000 servers every 2 s).
- reload: N TCP checks every 2 s against the responder (``--no-probes``: none run, only the
  loop's lag counts), then ``await daemon.reload()`` of a config with one weight changed and
  100 servers added (the new file is written before the measured window). Probe start
  lateness p50/p99/max by when probes were scheduled (3 s before, during, 3 s after), the
  event loop's lag measured by a 10 ms ticker, garbage collections, and the wall/CPU time of
  each step of the reload. The longest stall counts from the reload's start to 1.5 s after it
  returned (the save file's write follows the pass); with it, this process's CPU in that tick,
  the loop thread's, and how long the loop's thread waited for a CPU (schedstat): on a shared
  machine, the stall this process caused is the lag less that wait, at most its CPU. If the
  loop stalls for more than 100 ms, the reload is run again under cProfile and the top of the
  profile is printed.
- detect (P2): 1,000 and N servers with HTTP (or ``--detect-check tcp``) checks (interval
  2 s, timeout 1 s, fall 3, retry 1 s); half refuse (their listener closes), half are
  black-holed (their route changes) at one moment. Time from then to the backend receiving
  each server's EditDest to weight 0: p50/p99/max against (fall-1)*interval + timeout +
  100 ms, and whether all are out within interval*fall + 2 s. ``--max-in-flight`` overrides
  the config's max_probes_in_flight.
- event (P5, daemon side): one health event -> EditDest through the daemon at 100, 1,000 and
  10,000 destinations on the fake backend (no kernel), and a no-op full reconcile. The
  kernel's part is measured in the VM by bench/table.py.

Figures come from one run on a shared 2-core machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import io
import ipaddress
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsd import logs
from lvsd.checks import ProbeResult
from lvsd.checks.manual import ManualRunner
from lvsd.checks.runner import ProbeRunner
from lvsd.checks.workers import make_runner
from lvsd.config import loads
from lvsd.daemon import Daemon
from lvsd.errors import IpvsError
from lvsd.ipvs.backend import IpvsBackend, KernelInfo
from lvsd.ipvs.fake import FakeIpvs
from lvsd.model import DestKey, EditDest, Op, ServiceKey, Table
from lvsd.probe import ProbeReport, ResultsCallback, RunnerFactory
from lvsd.spec import Config

try:
    import uvloop

    def run_loop(main: Any) -> Any:
        return uvloop.run(main)

    LOOP_NAME = "uvloop"
except ImportError:

    def run_loop(main: Any) -> Any:
        return asyncio.run(main)

    LOOP_NAME = "asyncio"

CLONE_NEWNET = 0x40000000
OWN_NETNS = "LVSD_BENCH_OWN_NETNS"
LOOPBACK_BASE = int(ipaddress.IPv4Address("127.1.0.0"))
BLACKHOLE_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
BLACKHOLE_NET = "198.18.0.0/16"
VIP_BASE = int(ipaddress.IPv4Address("198.19.0.0"))
PORT_OK = 18080  # stays open
PORT_FAIL = 18081  # closes at the failure (refused from then on)
PER_SERVICE = 10
INTERVAL = 2.0
TIMEOUT = 1.0
FALL = 3
RETRY = 1.0
AFTERMATH = 1.5  # seconds after a reload returned that its stall counts: the save file
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
NETWORK_SETUP = f"""link set lo up
link add lvsdbh0 type veth peer name lvsdbh1
link set lvsdbh0 up
link set lvsdbh1 up
addr add 192.0.2.1/30 dev lvsdbh0
neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev lvsdbh0 nud permanent
route add {BLACKHOLE_NET} via 192.0.2.2 dev lvsdbh0
route add local {BLACKHOLE_NET} dev lo table local
"""
BLACKHOLE_ON = ["ip", "route", "del", "local", BLACKHOLE_NET, "dev", "lo", "table", "local"]
BLACKHOLE_OFF = ["ip", "route", "add", "local", BLACKHOLE_NET, "dev", "lo", "table", "local"]


# --- the namespace and the responder --------------------------------------------------------


def enter_own_netns() -> None:
    """Move this (still single-threaded) process into a new network namespace; every child
    process started afterwards shares it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    subprocess.run(["ip", "-batch", "-"], input=NETWORK_SETUP, text=True, check=True,
                   timeout=30)
    os.environ[OWN_NETNS] = str(os.getpid())


def serve(ports: Sequence[int]) -> None:
    """The responder: a fixed 200 to any request on each port, then close. Commands on stdin:
    ``close PORT`` / ``open PORT``; it answers with the monotonic time it acted."""

    class Responder(asyncio.Protocol):
        transport: asyncio.Transport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            if b"\r\n\r\n" in data:
                self.transport.write(RESPONSE)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            return None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers: dict[int, asyncio.AbstractServer] = {}

        async def open_port(port: int) -> None:
            servers[port] = await loop.create_server(Responder, "0.0.0.0", port, backlog=4096,
                                                     reuse_address=True)

        for port in ports:
            await open_port(port)
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            command, port = line[0], int(line[1])
            if command == "close":
                servers.pop(port).close()
            elif command == "open":
                await open_port(port)
            print(f"{command} {time.monotonic()}", flush=True)

    run_loop(main())


class ResponderProcess:
    def __init__(self, ports: Sequence[int]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", *map(str, ports)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the responder did not start")

    def command(self, command: str, port: int) -> float:
        """Send ``command port``; the monotonic time the responder acted."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command} {port}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline().split()[1])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


# --- configs and the daemon -------------------------------------------------------------------


def loopback(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(LOOPBACK_BASE + index)


def blackholed(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(BLACKHOLE_BASE + index)


def config_text(state_dir: Path, servers: Iterable[tuple[ipaddress.IPv4Address, int, int]],
                check: str, per_service: int = PER_SERVICE, extra_daemon: str = "") -> str:
    """Services of ``per_service`` (address, port, weight) servers each, masq (the probe port
    is the server's port), VIPs 198.19.x.y."""
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n{extra_daemon}']
    for n, (address, port, weight) in enumerate(servers):
        if n % per_service == 0:
            index = n // per_service
            lines.append(f'[[services]]\nname = "vs{index}"\n'
                         f'address = "{ipaddress.IPv4Address(VIP_BASE + index)}"\nport = 80\n'
                         f'scheduler = "wrr"\nforward = "masq"\ncheck = {check}\n')
        lines.append(f'[[services.real_servers]]\naddress = "{address}"\nport = {port}\n'
                     f"weight = {weight}\n")
    return "".join(lines)


HTTP_CHECK = (f'{{ type = "http", path = "/", interval = {INTERVAL}, timeout = {TIMEOUT}, '
              f"rise = 2, fall = {FALL}, retry_interval = {RETRY} }}")
TCP_CHECK = f'{{ type = "tcp", interval = {INTERVAL}, timeout = {TIMEOUT} }}'
DETECT_TCP_CHECK = (f'{{ type = "tcp", interval = {INTERVAL}, timeout = {TIMEOUT}, rise = 2, '
                    f"fall = {FALL}, retry_interval = {RETRY} }}")


class RecordingBackend:
    """A backend wrapper that notes when each destination was last set to weight 0."""

    def __init__(self, inner: IpvsBackend) -> None:
        self.inner = inner
        self.zeroed: dict[tuple[ServiceKey, DestKey], float] = {}
        self.writes = 0

    async def dump(self) -> Table:
        return await self.inner.dump()

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        errors = await self.inner.apply(ops)
        now = time.monotonic()
        self.writes += len(ops)
        for op in ops:
            if isinstance(op, EditDest) and op.dest.weight == 0:
                self.zeroed[(op.service, op.dest.key)] = now
        return errors

    async def info(self) -> KernelInfo:
        return await self.inner.info()

    async def close(self) -> None:
        await self.inner.close()


def make_backend(kernel: bool) -> IpvsBackend:
    if kernel:
        from lvsd.ipvs.netlink import NetlinkIpvs

        return NetlinkIpvs()
    return FakeIpvs()


def manual(daemon: Daemon) -> ManualRunner:
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    return runner


class LatenessDaemon(Daemon):
    """The daemon as ``lvsd run`` builds it, noting each probe's scheduled time and lateness
    as results come in (only counting them with ``record=False``)."""

    def __init__(self, config: Config, *args: Any, record: bool = True,
                 runner: RunnerFactory | None = None, **kwargs: Any) -> None:
        self.reports: list[tuple[float, float]] = []  # (scheduled, lateness), loop time
        self.record = record
        self.probes = 0
        inner: RunnerFactory = runner or (lambda deliver: make_runner(
            deliver, workers=config.daemon.probe_workers,
            max_in_flight=config.daemon.max_probes_in_flight))
        super().__init__(config, *args, freeze_gc=True,
                         runner=lambda deliver: inner(self.noting(deliver)), **kwargs)

    def noting(self, deliver: ResultsCallback) -> ResultsCallback:
        def on_results(reports: Sequence[ProbeReport]) -> None:
            self.probes += len(reports)
            if self.record:
                self.reports.extend((r.scheduled, r.lateness) for r in reports)
            deliver(reports)

        return on_results


async def wait_until(condition: Callable[[], bool], limit: float, what: str) -> float:
    """Poll every 50 ms; the seconds it took. Raises after ``limit`` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise RuntimeError(f"timed out after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def all_up(daemon: Daemon) -> bool:
    return daemon.health.all_up()


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def mb(kib: float) -> str:
    return f"{kib / 1024:6.1f} MB"


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            ordered[-1])


def ms3(values: Sequence[float]) -> str:
    p50, p99, top = percentiles(values)
    return f"{p50 * 1000:7.1f} {p99 * 1000:7.1f} {top * 1000:7.1f}"


STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} CPUs"


@dataclass
class Options:
    servers: int
    kernel: bool
    probes: bool = True  # the reload part without probes: only the event loop's lag
    max_in_flight: int = 0  # 0: the config's default
    detect_check: str = "http"


# --- P7: memory -------------------------------------------------------------------------------


async def memory_part(options: Options, traced: bool) -> None:
    import lvsd.api  # noqa: F401  (the running daemon has its HTTP API loaded)

    n = options.servers
    figures: list[tuple[str, str]] = [("after imports", mb(status_kb("VmRSS")))]
    responder = None if traced else ResponderProcess([PORT_OK])
    try:
        with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as state:
            if traced:
                tracemalloc.start()
            text = config_text(Path(state), ((loopback(i), PORT_OK, 1) for i in range(n)),
                               HTTP_CHECK)
            config = loads(text)
            del text
            figures.append(("config loaded", mb(status_kb("VmRSS"))))
            backend = make_backend(options.kernel)
            if traced:
                # The real ProbeRunner holds every check, but is never started.
                daemon = Daemon(config, backend, runner=ManualRunner)
                real_runner = ProbeRunner(lambda reports: None)
                await daemon.start()
                real_runner.update(manual(daemon).keys)
                current, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                print(f"memory, tracemalloc (ProbeRunner loaded, not started), {n:,} servers: "
                      f"Python heap now {current / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB "
                      f"(config parse included)")
                await daemon.stop()
                return
            daemon = LatenessDaemon(config, backend, record=False, runner=lambda deliver: (
                ProbeRunner(deliver, max_in_flight=config.daemon.max_probes_in_flight)))
            await daemon.start()
            figures.append(("daemon started", mb(status_kb("VmRSS"))))
            loop_task = asyncio.create_task(daemon.run())
            took = await wait_until(lambda: all_up(daemon), 120, "every server up")
            await asyncio.sleep(3 * INTERVAL)
            probes = daemon.probes
            figures.append((f"{3 * INTERVAL:.0f} s of probing ({probes:,} probes, "
                            f"all up after {took:.1f} s)", mb(status_kb("VmRSS"))))
            figures.append(("peak (VmHWM)", mb(status_kb("VmHWM"))))
            daemon.request_stop()
            await loop_task
            await daemon.stop()
    finally:
        if responder is not None:
            responder.stop()
    print(f"memory, RSS of one process: {n:,} real servers, HTTP checks every {INTERVAL:.0f} s "
          f"({'kernel' if options.kernel else 'fake'} backend)")
    for label, value in figures:
        print(f"  {label:<52}{value}")


# --- reload under load ------------------------------------------------------------------------


def reload_servers(n: int, changed: bool) -> list[tuple[ipaddress.IPv4Address, int, int]]:
    servers = [(loopback(i), PORT_OK, 1) for i in range(n)]
    if changed:
        servers[n // 2] = (servers[n // 2][0], PORT_OK, 7)
        servers += [(loopback(n + i), PORT_OK, 1) for i in range(100)]
    return servers


class GcPauses:
    """Every collection of the cyclic garbage collector: (loop time at its end, generation,
    seconds). A collection stops every thread of the process."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []
        self._started = 0.0
        self._loop = asyncio.get_running_loop()
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((self._loop.time(), info["generation"],
                                time.perf_counter() - self._started))

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def between(self, low: float, high: float) -> str:
        inside = [(gen, took) for at, gen, took in self.pauses if low <= at < high]
        longest = max((took for _, took in inside), default=0.0)
        full = sum(1 for gen, _ in inside if gen == 2)
        return f"{len(inside):4d} ({full} full), longest {longest * 1000:5.0f} ms"


async def ticker(lags: list[tuple[float, float, float, float, float]],
                 stop: asyncio.Event) -> None:
    """Every 10 ms, how much later than asked the loop woke us, how much CPU this process used
    meanwhile, how much of it the loop's own thread, and how long that thread waited for a CPU
    while it could run (the kernel's schedstat): (loop time, lag, cpu, loop cpu, loop waited).
    A lag with little CPU is the OS running other processes (the machine is shared); a lag
    full of CPU is this process's work (on the loop, or in a thread that holds the GIL)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 600
    schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"

    def cpu_wait() -> int:  # a /proc read: microseconds, never blocks on a disk
        with open(schedstat) as file:
            return int(file.read().split()[1])

    while not stop.is_set() and time.monotonic() < deadline:
        asked, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        waited = cpu_wait()
        await asyncio.sleep(0.01)
        lags.append((loop.time(), time.perf_counter() - asked - 0.01,
                     time.process_time() - cpu, time.thread_time() - own,
                     (cpu_wait() - waited) / 1e9))


def time_steps(daemon: Daemon) -> dict[str, list[float]]:
    """Wrap the steps of a reload: each adds [wall, CPU of its thread] to the returned dict.
    On a busy machine the wall time includes waiting for a CPU; the thread's CPU does not."""
    import lvsd.daemon
    import lvsd.reloader

    spent: dict[str, list[float]] = {}
    clock = time.monotonic

    def add(label: str, wall: float, cpu: float) -> None:
        total = spent.setdefault(label, [0.0, 0.0, clock()])
        total[0] += time.perf_counter() - wall
        total[1] += time.thread_time() - cpu
        total[2] = clock()  # when it last ended (monotonic: the loop's clock)

    def wrap(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:  # a step the daemon no longer has under that name
            return
        if asyncio.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    return await original(*args, **kwargs)
                finally:
                    add(label, wall, cpu)

            setattr(owner, name, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    add(label, wall, cpu)

            setattr(owner, name, timed)

    wrap(lvsd.reloader, "load", "config parse (worker thread)")
    wrap(daemon, "_refresh_view", "dump + view")
    wrap(daemon, "_drain_unconfigured", "drains")
    wrap(daemon.stager, "stage", "stage (drains, marks, health)")
    wrap(daemon.stager, "commit", "commit")
    wrap(daemon.stager, "stored", "state file")
    wrap(daemon.runner, "update", "runner.update")
    wrap(lvsd.daemon, "desired", "desired()")
    wrap(lvsd.daemon, "plan", "plan()")
    wrap(daemon.backend, "apply", "backend.apply")
    wrap(daemon, "_record", "record + log ops")
    return spent


async def reload_part(options: Options) -> None:
    n = options.servers
    responder = ResponderProcess([PORT_OK]) if options.probes else None
    try:
        with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as state:
            path = Path(state) / "lvsd.toml"
            path.write_text(config_text(Path(state), reload_servers(n, False), TCP_CHECK))
            config = loads(path.read_text(), str(path))
            runner = None if options.probes else ManualRunner
            daemon = LatenessDaemon(config, make_backend(options.kernel), config_path=path,
                                    runner=runner)
            loop = asyncio.get_running_loop()
            progress("reload: config parsed, starting the daemon")
            await daemon.start()
            loop_task = asyncio.create_task(daemon.run())
            progress("reload: started, waiting for every server up")
            if not options.probes:
                await bring_all_up(daemon)
            await wait_until(lambda: all_up(daemon), 60, "every server up")
            progress("reload: all up")
            await asyncio.sleep(INTERVAL)  # start-up spreading done: steady state
            # Made before the ticker starts: 80 ms of the benchmark's own CPU.
            changed = config_text(Path(state), reload_servers(n, True), TCP_CHECK)
            lags: list[tuple[float, float, float, float, float]] = []
            stop = asyncio.Event()
            tick_task = asyncio.create_task(ticker(lags, stop))
            collections = GcPauses()
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            await asyncio.sleep(3.0)
            busy = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
            path.write_text(changed)
            progress("reload: reloading")
            steps = time_steps(daemon)
            began = loop.time()
            ok = await daemon.reload()
            ended = loop.time()
            progress("reload: reloaded")
            await asyncio.sleep(3.0)
            stop.set()
            await tick_task
            collections.close()
            if not ok or len(daemon.health) != n + 100:
                raise RuntimeError(f"reload failed or incomplete: {len(daemon.health)} checks")
            before = [max(0.0, min(lag - waited, cpu)) for at, lag, cpu, _, waited in lags
                      if at < began]
            windows = {"3 s before": (began - 3.0, began), "during": (began, ended),
                       "3 s after": (ended, ended + 3.0)}
            print(f"reload {'under load' if options.probes else 'without probes'}: {n:,} TCP "
                  f"checks every {INTERVAL:.0f} s, reload to "
                  f"{n + 100:,} (one weight changed, 100 added) took {ended - began:.3f} s wall; "
                  f"before it the daemon used {busy:.2f} of a core")
            print(f"  {'window':<12}{'probes':>8}  lateness ms p50/p99/max  loop lag ms "
                  f"p50/p99/max   GC collections")
            for name, (low, high) in windows.items():
                late = [lateness for scheduled, lateness in daemon.reports
                        if low <= scheduled < high]
                lag = [value for at, value, *_ in lags if low <= at < high + 0.011]
                print(f"  {name:<12}{len(late):8d}  {ms3(late)}   {ms3(lag)}   "
                      f"{collections.between(low, high)}")
            # Up to the save file's write, which follows the pass after SAVE_DEBOUNCE.
            around = [tick for tick in lags if began <= tick[0] < ended + AFTERMATH]
            _, stall, cpu, own, waited = max(around, key=lambda tick: tick[1],
                                             default=(0.0,) * 5)
            print(f"  longest loop stall around the reload: {stall * 1000:.0f} ms, of which this "
                  f"process was on a CPU {cpu * 1000:.0f} ms ({own * 1000:.0f} ms the loop's "
                  f"thread), the loop's thread waited {waited * 1000:.0f} ms for a CPU; until "
                  f"{AFTERMATH:.1f} s after it returned")
            # On a shared machine a tick's lag is also other processes' turn on the CPUs: the
            # loop's thread waiting for one, or the thread holding the GIL waiting for one. The
            # part a quiet machine would see is bounded by both the lag less the loop thread's
            # wait and this process's CPU in the tick (the loop's work, or the GIL holder's).
            def caused(tick: tuple[float, float, float, float, float]) -> float:
                return max(0.0, min(tick[1] - tick[4], tick[2]))

            worst = max(around, key=caused, default=(0.0,) * 5)
            print(f"  longest stall this process caused: {caused(worst) * 1000:.0f} ms (a "
                  f"{worst[1] * 1000:.0f} ms tick, {worst[3] * 1000:.0f} ms on the loop's "
                  f"thread, {worst[2] * 1000:.0f} ms of this process, the loop's thread waited "
                  f"{worst[4] * 1000:.0f} ms for a CPU); before the reload the longest was "
                  f"{max(before, default=0.0) * 1000:.0f} ms")
            parsed = steps.get("config parse (worker thread)", [0.0, 0.0, began])[2]
            for name, (low, high) in (("while the config is parsed in a thread", (began, parsed)),
                                      ("after, on the loop", (parsed, ended + 0.011))):
                lag = [value for at, value, *_ in lags if low <= at < high]
                print(f"  loop lag {name}: p50/p99/max ms {ms3(lag)}")
            print("  reload steps, ms wall/CPU: " + ", ".join(
                f"{name} {spent[0] * 1000:.0f}/{spent[1] * 1000:.0f}"
                for name, spent in steps.items()) + " (a GC pause counts in the step it hits)")
            if stall > 0.1:
                await profile_reload(daemon, path, n)
            daemon.request_stop()
            await loop_task
            await daemon.stop()
    finally:
        if responder is not None:
            responder.stop()


async def profile_reload(daemon: Daemon, path: Path, n: int) -> None:
    """Reload back to the first config under cProfile (this thread only: the config parse
    runs in a worker thread and does not block the loop)."""
    await asyncio.to_thread(path.write_text,
                            config_text(path.parent, reload_servers(n, False), TCP_CHECK))
    profile = cProfile.Profile()
    profile.enable()
    await daemon.reload()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(r"lvsd", 22)
    print("  profile of a reload on the event loop's thread (cumulative, lvsd functions):")
    for line in out.getvalue().splitlines():
        if line.strip() and ("lvsd" in line or "ncalls" in line):
            print("   ", line.rstrip()[:150])


# --- P2: detection at scale ---------------------------------------------------------------------


def detect_servers(n: int) -> list[tuple[ipaddress.IPv4Address, int, int]]:
    """Even servers refuse at the failure (their port closes), odd ones are black-holed."""
    return [(loopback(i), PORT_FAIL, 1) if i % 2 == 0 else (blackholed(i), PORT_OK, 1)
            for i in range(n)]


async def detect_part(options: Options, n: int) -> None:
    responder = ResponderProcess([PORT_OK, PORT_FAIL])
    blackhole_on = False
    try:
        with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as state:
            limit_line = (f"max_probes_in_flight = {options.max_in_flight}\n"
                          if options.max_in_flight else "")
            check = HTTP_CHECK if options.detect_check == "http" else DETECT_TCP_CHECK
            config = loads(config_text(Path(state), detect_servers(n), check,
                                       extra_daemon=limit_line))
            backend = RecordingBackend(make_backend(options.kernel))
            daemon = LatenessDaemon(config, backend)
            await daemon.start()
            loop_task = asyncio.create_task(daemon.run())
            await wait_until(lambda: all_up(daemon), 120, "every server up")
            await asyncio.sleep(INTERVAL)
            backend.zeroed.clear()
            failed_loop_time = asyncio.get_running_loop().time()
            failed_at = time.monotonic()
            refused_at = responder.command("close", PORT_FAIL)
            await asyncio.to_thread(subprocess.run, BLACKHOLE_ON, check=True, timeout=30)
            blackhole_on = True
            limit = INTERVAL * FALL + 2.0
            with contextlib.suppress(RuntimeError):
                await wait_until(lambda: len(backend.zeroed) >= n, limit + 5.0,
                                 "every server at weight 0")
            reports_after = [lateness for scheduled, lateness in daemon.reports
                             if scheduled >= failed_loop_time]
            daemon.request_stop()
            await loop_task
            await daemon.stop()
    finally:
        if blackhole_on:
            await asyncio.to_thread(subprocess.run, BLACKHOLE_OFF, check=False, timeout=30)
        responder.stop()
    refused, black = [], []
    for spec in config.services:
        for server in spec.servers:
            at = backend.zeroed.get((spec.key, server.key))
            if server.key.port == PORT_FAIL:
                refused.append(None if at is None else at - refused_at)
            else:
                black.append(None if at is None else at - failed_at)
    bound = (FALL - 1) * INTERVAL + TIMEOUT + 0.1
    print(f"detection, {n:,} servers (half refused, half black-holed) "
          f"{options.detect_check.upper()} interval "
          f"{INTERVAL:.0f} s timeout {TIMEOUT:.0f} s fall {FALL} retry {RETRY:.0f} s "
          f"max_probes_in_flight {config.daemon.max_probes_in_flight} "
          f"({'kernel' if options.kernel else 'fake'} backend):")
    for name, values in (("refused", refused), ("black-holed", black)):
        seen = [v for v in values if v is not None]
        within = sum(1 for v in seen if v <= bound)
        print(f"  {name:<12} failure -> weight 0 s p50/p99/max "
              f"{' '.join(f'{v:6.2f}' for v in percentiles(seen))}   "
              f"<= bound {bound:.1f} s: {within}/{len(values)}")
    everything = [v for v in refused + black if v is not None]
    print(f"  all {n:,} out within interval*fall + 2 s = {limit:.0f} s: "
          f"{sum(1 for v in everything if v <= limit)}/{n}, last after "
          f"{max(everything, default=float('nan')):.2f} s; probe lateness after the failure "
          f"p50/p99/max ms {ms3(reports_after)}")


# --- P5, the daemon's side ----------------------------------------------------------------------


async def bring_all_up(daemon: Daemon) -> None:
    """The first round of probes, all passing: every server goes into rotation."""
    manual(daemon).report_all(True, "bench", at=asyncio.get_running_loop().time())
    await daemon.reconcile(full=False)


async def event_part(options: Options, flips: int) -> None:
    print(f"P5, daemon side ({'kernel' if options.kernel else 'fake'} backend): one health event "
          f"-> EditDest applied, median of {flips}; no-op full reconcile, median of 5")
    print(f"  {'services x servers':<20}{'event ms':>10}{'noop ms':>10}")
    for services, per in ((10, 10), (100, 10), (1000, 10), (10, 1000)):
        with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as state:
            servers = [(blackholed(i), 80, 1 + i % 100) for i in range(services * per)]
            check = '{ type = "tcp", rise = 1, fall = 1 }'
            config = loads(config_text(Path(state), servers, check, per_service=per,
                                       extra_daemon="reconcile_delay = 0\n"))
            daemon = Daemon(config, make_backend(options.kernel), runner=ManualRunner)
            await daemon.start()
            await bring_all_up(daemon)
            spec = config.services[services // 2]
            server = spec.servers[per // 2]
            (key,) = daemon.health.checks_of((spec.key, server.key))
            loop = asyncio.get_running_loop()
            events = []
            for flip in range(flips):
                now = loop.time()
                report = ProbeReport(key, ProbeResult(flip % 2 == 1, "bench"), now, now, now)
                started = time.perf_counter()
                manual(daemon).deliver((report,))
                ops = await daemon.reconcile(full=False)
                events.append(time.perf_counter() - started)
                if len(ops) != 1:
                    raise RuntimeError(f"expected one op, got {ops}")
            noops = []
            for _ in range(5):
                started = time.perf_counter()
                if await daemon.reconcile(full=True):
                    raise RuntimeError("a no-op pass wrote")
                noops.append(time.perf_counter() - started)
            await daemon.stop()
        print(f"  {f'{services} x {per}':<20}{statistics.median(events) * 1000:10.2f}"
              f"{statistics.median(noops) * 1000:10.1f}")


# --- driver -------------------------------------------------------------------------------------


def run_part(argv: Sequence[str]) -> None:
    """Run one part in a process of its own (its memory figures are then its own)."""
    done = subprocess.run([sys.executable, __file__, *argv], check=False, timeout=600)
    if done.returncode:
        print(f"  (part {' '.join(argv)} exited {done.returncode})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["memory", "reload", "detect", "event"],
                        choices=["memory", "reload", "detect", "event"])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--kernel", action="store_true",
                        help="the kernel's IPVS table instead of the fake (in the VM)")
    parser.add_argument("--flips", type=int, default=21)
    parser.add_argument("--max-in-flight", type=int, default=0,
                        help="detect part: max_probes_in_flight (default: the config's)")
    parser.add_argument("--detect-check", choices=("http", "tcp"), default="http",
                        help="detect part: the check type")
    parser.add_argument("--no-probes", action="store_true",
                        help="reload part: no probe runs (the VM cannot run 5,000 checks/s)")
    parser.add_argument("--serve", nargs="+", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if not 10 <= args.servers <= 30_000 or not 1 <= args.flips <= 200:
        parser.error("--servers must be 10..30000 and --flips 1..200")
    if not 0 <= args.max_in_flight <= 100_000:
        parser.error("--max-in-flight must be 0..100000")
    if args.kernel and not os.path.exists("/proc/net/ip_vs"):
        parser.error("--kernel needs a kernel with IPVS: run it in the VM")
    options = Options(args.servers, args.kernel, not args.no_probes, args.max_in_flight,
                      args.detect_check)
    logs.configure("info", fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if args.part:
        name, _, value = args.part.partition(":")
        parts: dict[str, Callable[[], Any]] = {
            "memory": lambda: memory_part(options, traced=False),
            "memory-traced": lambda: memory_part(options, traced=True),
            "reload": lambda: reload_part(options),
            "detect": lambda: detect_part(options, int(value or options.servers)),
            "event": lambda: event_part(options, args.flips),
        }
        run_loop(parts[name]())
        return
    if os.environ.get(OWN_NETNS) is None:
        if os.geteuid() != 0:
            parser.error("needs root: it creates a network namespace for its traffic")
        enter_own_netns()
    common = ["--servers", str(args.servers), "--flips", str(args.flips)]
    common += ["--kernel"] if args.kernel else []
    common += ["--no-probes"] if args.no_probes else []
    common += ["--max-in-flight", str(args.max_in_flight), "--detect-check", args.detect_check]
    print(f"lvsd daemon benchmark: {LOOP_NAME}, {load_note()}", flush=True)
    began = time.monotonic()
    for part in args.parts:
        if part == "memory":
            run_part(["--part", "memory", *common])
            run_part(["--part", "memory-traced", *common])
        elif part == "detect":
            for n in sorted({min(1000, args.servers), args.servers}):
                run_part(["--part", f"detect:{n}", *common])
        else:
            run_part(["--part", part, *common])
        print(f"  ({load_note()})", flush=True)
    print(f"{time.monotonic() - began:.0f} s in all")


if __name__ == "__main__":
    main()
