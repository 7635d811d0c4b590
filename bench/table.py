"""P4, P5 and dump figures against the real kernel, side by side with ipvsadm in the same run.

    bash tests/vm/run-in-vm.sh .venv/bin/python bench/table.py [--runs 3] [--quick]

Runs as root where the kernel has IPVS (inside the VM). Every measurement gets a fresh network
namespace (a fresh, empty IPVS table): a thread unshares its namespace, brings ``lo`` up, and
runs its event loop and its ipvsadm processes there; addresses are 198.18.0.0/15 (RFC 2544's
benchmarking range) and exist only in those namespaces. Before a namespace is left its table is
emptied, so the kernel's teardown does not run during the next measurement.

- P4, cold program of 10,000 destinations (1,000 VS x 10 RS rr, 10 x 1,000 rr, 10 x 1,000 wrr):
  ``plan(desired, empty)`` + ``NetlinkIpvs.apply`` on an open socket, against
  ``ipvsadm-restore`` of the same rules (``format_table(compat=True)``; a bash script running
  grep, ``ipvsadm -C`` and ``ipvsadm -R``) and against ``ipvsadm -R`` alone (one process).
  Every table is read back and compared with the rules.
- Dump of those tables: ``NetlinkIpvs.dump()`` against ``ipvsadm-save -n``.
- P5, through the real ``Daemon`` over the real ``NetlinkIpvs`` with a recording runner (no
  probe runs): a ``ProbeReport`` that flips one server (tcp check, rise = fall = 1) is fed to
  the daemon's ``ManualRunner``; timed until the ``EditDest`` has been acknowledged by the kernel,
  directly (``deliver`` + ``reconcile(full=False)``) and through ``run()`` (which waits
  ``reconcile_delay``, 5 ms, to coalesce a burst). At 100, 1,000 and 10,000 destinations, as
  ratios to the 100-destination figure and to one ``ipvsadm -e`` process. Between events the
  daemon's save loop (a dump 0.5 s after each change) is let finish. Then a no-op full
  reconcile (one dump, zero writes) against ``ipvsadm-save -n`` of the same table.

Figures are medians of ``--runs`` (order alternated between runs); under emulation only the
ratios mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import functools
import ipaddress
import json
import os
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lvsd import logs
from lvsd.checks import CheckKey, ProbeResult
from lvsd.checks.manual import ManualRunner
from lvsd.config import loads
from lvsd.daemon import Daemon
from lvsd.errors import IpvsError
from lvsd.health import Status
from lvsd.ipvs.backend import KernelInfo
from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.ipvsadm.restore import parse
from lvsd.ipvsadm.save import format_table
from lvsd.model import (
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    Op,
    Protocol,
    Service,
    ServiceKey,
    Table,
    VirtualService,
)
from lvsd.probe import ProbeReport
from lvsd.reconcile import desired, plan

try:
    import uvloop

    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    LOOP_NAME = "uvloop"
except ImportError:
    new_event_loop = asyncio.new_event_loop
    LOOP_NAME = "asyncio"

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
VIP_BASE = int(ipaddress.IPv4Address("198.19.0.0"))
RS_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
PORT = 80
PROCESS_TIMEOUT = 120.0
SETTLE_LIMIT = 60.0  # seconds to wait for the daemon's save loop
T = TypeVar("T")

PROGRAM_SHAPES = ((1000, 10, "rr"), (10, 1000, "rr"), (10, 1000, "wrr"))
P5_SHAPES = ((10, 10), (100, 10), (1000, 10), (10, 1000))
QUICK_PROGRAM_SHAPES = ((10, 10, "rr"), (2, 50, "wrr"))
QUICK_P5_SHAPES = ((10, 10), (2, 50))


# --- namespaces ---------------------------------------------------------------------------------


def enter_fresh_netns() -> None:
    """Move the calling thread into a new network namespace, ``lo`` up (IPVS refuses
    destinations while it is down)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def in_fresh_netns(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work()`` on an event loop of its own, in a thread inside a new network namespace.
    Processes started from that thread share the namespace; it ends with the thread."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            enter_fresh_netns()
            loop = new_event_loop()
            try:
                outcome.append(loop.run_until_complete(work()))
            finally:
                loop.close()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="fresh-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def run_process(argv: Sequence[str], stdin: str | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one process; raises if it fails or writes to stderr."""
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                          timeout=PROCESS_TIMEOUT)
    wall = time.perf_counter() - started
    if done.returncode or done.stderr.strip():
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return wall, done.stdout


async def empty_table(backend: NetlinkIpvs) -> None:
    """Delete every service, so that the namespace's teardown has nothing left to free."""
    table = await backend.dump()
    errors = await backend.apply([DeleteService(vs.key) for vs in table.services])
    if errors:
        raise RuntimeError(f"emptying the table failed: {errors[0]}")


# --- tables -------------------------------------------------------------------------------------


def vip(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(VIP_BASE + index)


def real_server(index: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(RS_BASE + index)


def synthetic_table(services: int, per_service: int, scheduler: str) -> Table:
    """Direct routing, every destination distinct; wrr gets weights 1..100."""
    entries = []
    for i in range(services):
        key = ServiceKey.virtual(Protocol.TCP, vip(i), PORT)
        dests = tuple(
            Dest(DestKey(real_server(n), PORT), weight=1 + n % 100 if scheduler == "wrr" else 1)
            for n in range(i * per_service, (i + 1) * per_service)
        )
        entries.append(VirtualService(Service(key, scheduler), dests))
    return Table(tuple(entries))


def same_services(a: Table, b: Table) -> bool:
    """Equal services and destinations (the timeouts are not part of these tables)."""
    return Table(a.services) == Table(b.services)


def shape_name(services: int, per_service: int, scheduler: str = "") -> str:
    return f"{services}x{per_service}" + (f" {scheduler}" if scheduler else "")


# --- figures ------------------------------------------------------------------------------------


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def spread(self, name: str) -> str:
        values = self.values[name]
        return (f"{statistics.median(values) * 1000:.1f} ms "
                f"(min {min(values) * 1000:.1f}, n={len(values)})")


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b > 0 else "   -  "


# --- P4 and dump --------------------------------------------------------------------------------


async def program_with_lvsd(table: Table, samples: Samples, name: str, dump_first: bool) -> None:
    backend = NetlinkIpvs()
    try:
        await backend.info()  # opens the socket: the daemon keeps one open
        started = time.perf_counter()
        ops = plan(table, Table())
        planned = time.perf_counter()
        errors = await backend.apply(ops)
        applied = time.perf_counter()
        if errors:
            raise RuntimeError(f"lvsd apply failed: {len(errors)} errors, first: {errors[0]}")
        samples.add(f"{name} lvsd", applied - started)
        samples.add(f"{name} lvsd plan", planned - started)
        for turn in (0, 1) if dump_first else (1, 0):
            if turn == 0:
                started = time.perf_counter()
                dumped = await backend.dump()
                samples.add(f"{name} dump lvsd", time.perf_counter() - started)
                if not same_services(dumped, table):
                    raise RuntimeError("lvsd's dump differs from the table it programmed")
            else:
                wall, saved = run_process(["ipvsadm-save", "-n"])
                samples.add(f"{name} dump ipvsadm-save", wall)
                if not same_services(parse(saved, "ipvsadm-save -n"), table):
                    raise RuntimeError("ipvsadm-save shows another table than lvsd programmed")
        await empty_table(backend)
    finally:
        await backend.close()


async def program_with_ipvsadm(table: Table, rules: str, argv: Sequence[str], samples: Samples,
                               label: str) -> None:
    wall, _ = run_process(argv, rules)
    samples.add(label, wall)
    backend = NetlinkIpvs()
    try:
        if not same_services(await backend.dump(), table):
            raise RuntimeError(f"{' '.join(argv)} built another table than the rules say")
        await empty_table(backend)
    finally:
        await backend.close()


def bench_program(shapes: Iterable[tuple[int, int, str]], runs: int) -> Samples:
    samples = Samples()
    for services, per_service, scheduler in shapes:
        name = shape_name(services, per_service, scheduler)
        table = synthetic_table(services, per_service, scheduler)
        rules = format_table(table, compat=True)
        for run in range(runs):
            contestants: list[Callable[[], Coroutine[Any, Any, None]]] = [
                functools.partial(program_with_lvsd, table, samples, name, run % 2 == 0),
                functools.partial(program_with_ipvsadm, table, rules, ["ipvsadm-restore"],
                                  samples, f"{name} ipvsadm-restore"),
                functools.partial(program_with_ipvsadm, table, rules, ["ipvsadm", "-R"],
                                  samples, f"{name} ipvsadm -R"),
            ]
            for contestant in contestants if run % 2 == 0 else reversed(contestants):
                in_fresh_netns(contestant)
        print(f"  P4 {name}: lvsd {samples.spread(f'{name} lvsd')}, "
              f"ipvsadm-restore {samples.spread(f'{name} ipvsadm-restore')}, "
              f"ipvsadm -R {samples.spread(f'{name} ipvsadm -R')}; dump: lvsd "
              f"{samples.spread(f'{name} dump lvsd')}, ipvsadm-save "
              f"{samples.spread(f'{name} dump ipvsadm-save')}", flush=True)
    return samples


# --- P5 -----------------------------------------------------------------------------------------


class CountingBackend:
    """``NetlinkIpvs`` that counts dumps and writes and tells when an apply returned."""

    def __init__(self, inner: NetlinkIpvs) -> None:
        self.inner = inner
        self.dumps = 0
        self.applies = 0
        self.busy = 0
        self.applied = asyncio.Event()
        self.applied_at = 0.0
        self.last_ops: list[Op] = []

    async def dump(self) -> Table:
        self.dumps += 1
        self.busy += 1
        try:
            return await self.inner.dump()
        finally:
            self.busy -= 1

    async def apply(self, ops: Sequence[Op]) -> list[IpvsError]:
        self.busy += 1
        try:
            errors = await self.inner.apply(ops)
        finally:
            self.busy -= 1
        self.applies += 1
        self.applied_at = time.perf_counter()
        self.last_ops = list(ops)
        self.applied.set()
        return errors

    async def info(self) -> KernelInfo:
        return await self.inner.info()

    async def close(self) -> None:
        await self.inner.close()


def daemon_config_text(services: int, per_service: int, state_dir: Path) -> str:
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n']
    check = '{ type = "tcp", interval = "2s", timeout = "1s", rise = 1, fall = 1 }'
    n = 0
    for i in range(services):
        lines.append(f'[[services]]\nname = "vs{i}"\naddress = "{vip(i)}"\nport = {PORT}\n'
                     f'scheduler = "wrr"\ncheck = {check}\n')
        for _ in range(per_service):
            lines.append(f'[[services.real_servers]]\naddress = "{real_server(n)}"\n'
                         f"weight = {1 + n % 100}\n")
            n += 1
    return "".join(lines)


async def settle(daemon: Daemon, backend: CountingBackend) -> None:
    """Wait until the save loop has written the last change (it dumps the table to do so)."""
    deadline = time.monotonic() + SETTLE_LIMIT
    await asyncio.sleep(0)
    while daemon.save_requested.is_set() or backend.busy:
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon's save loop did not settle")
        await asyncio.sleep(0.02)


def health_event(key: CheckKey, ok: bool) -> ProbeReport:
    now = asyncio.get_running_loop().time()
    result = ProbeResult(ok, "connected" if ok else "refused", 0.0005)
    return ProbeReport(key, result, now, now, now)


def expect_one_edit(ops: Sequence[Op], weight: int) -> None:
    if len(ops) != 1 or not isinstance(ops[0], EditDest) or ops[0].dest.weight != weight:
        raise RuntimeError(f"expected one EditDest to weight {weight}, got {ops!r}")


async def bench_event(services: int, per_service: int, flips: int, runs: int,
                      samples: Samples) -> None:
    name = shape_name(services, per_service)
    with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as state:
        started = time.perf_counter()
        config = loads(daemon_config_text(services, per_service, Path(state)))
        samples.add(f"{name} config parse", time.perf_counter() - started)
        backend = CountingBackend(NetlinkIpvs())
        # The table as a previous run left it, every server in rotation: the daemon adopts it
        # and starts them up, so start-up writes nothing (no 10,000 writes to log under
        # emulation before the measurement).
        want, _ = desired(config, lambda spec, server: Status.UP)
        if errors := await backend.inner.apply(plan(want, Table())):
            raise RuntimeError(f"programming the table failed: {errors[0]}")
        daemon = Daemon(config, backend, runner=ManualRunner)
        runner = daemon.runner
        assert isinstance(runner, ManualRunner)
        started = time.perf_counter()
        await daemon.start()
        samples.add(f"{name} daemon start", time.perf_counter() - started)
        if backend.applies or not daemon.health.all_up():
            raise RuntimeError("the daemon did not adopt the table as it was")

        spec = config.services[services // 2]
        server = spec.servers[per_service // 2]
        (key,) = daemon.health.checks_of((spec.key, server.key))
        weight = server.dest.weight
        # Directly: the event, then the pass the daemon's loop would make.
        for flip in range(flips):
            ok = flip % 2 == 1
            started = time.perf_counter()
            runner.deliver((health_event(key, ok),))
            ops = await daemon.reconcile(full=False)
            samples.add(f"{name} event direct", time.perf_counter() - started)
            expect_one_edit(ops, weight if ok else 0)
            await settle(daemon, backend)
        if daemon.health.state(key).status is not Status.UP:
            runner.deliver((health_event(key, True),))
            await daemon.reconcile(full=False)
            await settle(daemon, backend)
        # Through run(): reconcile_delay, then the pass.
        loop_task = asyncio.create_task(daemon.run())
        await asyncio.sleep(0.05)
        for flip in range(flips):
            ok = flip % 2 == 1
            backend.applied.clear()
            started = time.perf_counter()
            runner.deliver((health_event(key, ok),))
            await asyncio.wait_for(backend.applied.wait(), 30)
            samples.add(f"{name} event run()", backend.applied_at - started)
            expect_one_edit(backend.last_ops, weight if ok else 0)
            await settle(daemon, backend)
        daemon.request_stop()
        await asyncio.wait_for(loop_task, 30)
        # A no-op full pass against ipvsadm-save of the same table, alternated.
        for run in range(runs):
            for turn in (0, 1) if run % 2 == 0 else (1, 0):
                if turn == 0:
                    dumps, applies = backend.dumps, backend.applies
                    started = time.perf_counter()
                    ops = await daemon.reconcile(full=True)
                    samples.add(f"{name} noop reconcile", time.perf_counter() - started)
                    if ops or backend.dumps != dumps + 1 or backend.applies != applies:
                        raise RuntimeError(f"a no-op pass made {backend.dumps - dumps} dumps "
                                           f"and {len(ops)} writes")
                    started = time.perf_counter()
                    await backend.dump()
                    samples.add(f"{name} dump lvsd", time.perf_counter() - started)
                else:
                    wall, _ = run_process(["ipvsadm-save", "-n"])
                    samples.add(f"{name} ipvsadm-save", wall)
        await daemon.stop()
        # One weight change by hand: one ipvsadm process.
        target = ["-t", f"{spec.key.address}:{PORT}", "-r", f"{server.key.address}:{PORT}", "-g"]
        for flip in range(flips):
            wall, _ = run_process(["ipvsadm", "-e", *target, "-w", str(0 if flip % 2 == 0
                                                                        else weight)])
            samples.add(f"{name} ipvsadm -e", wall)
        await empty_table(backend.inner)
        await backend.close()
    print(f"  P5 {name}: event direct {samples.spread(f'{name} event direct')}, "
          f"run() {samples.spread(f'{name} event run()')}, "
          f"ipvsadm -e {samples.spread(f'{name} ipvsadm -e')}; "
          f"noop {samples.spread(f'{name} noop reconcile')}, "
          f"dump {samples.spread(f'{name} dump lvsd')}, "
          f"ipvsadm-save {samples.spread(f'{name} ipvsadm-save')}", flush=True)


def bench_events(shapes: Iterable[tuple[int, int]], flips: int, runs: int) -> Samples:
    samples = Samples()
    for services, per_service in shapes:
        in_fresh_netns(functools.partial(bench_event, services, per_service, flips, runs,
                                         samples))
    return samples


# --- report -------------------------------------------------------------------------------------


def report_program(samples: Samples, shapes: Iterable[tuple[int, int, str]]) -> None:
    print("\nP4: cold program of the whole table (median wall; lvsd = plan + apply, socket open)")
    print(f"{'table':<14}{'lvsd':>10}{'(plan)':>9}{'ipvsadm-restore':>17}{'ipvsadm -R':>12}"
          f"{'lvsd/restore':>14}{'lvsd/-R':>9}")
    for services, per_service, scheduler in shapes:
        name = shape_name(services, per_service, scheduler)
        lvsd = samples.median(f"{name} lvsd")
        restore = samples.median(f"{name} ipvsadm-restore")
        single = samples.median(f"{name} ipvsadm -R")
        print(f"{name:<14}{lvsd:9.3f}s{samples.median(f'{name} lvsd plan'):8.3f}s"
              f"{restore:16.3f}s{single:11.3f}s{ratio(lvsd, restore):>14}"
              f"{ratio(lvsd, single):>9}")
    print("\nDump of the same tables (median wall)")
    print(f"{'table':<14}{'lvsd dump()':>12}{'ipvsadm-save -n':>17}{'lvsd/save':>11}")
    for services, per_service, scheduler in shapes:
        name = shape_name(services, per_service, scheduler)
        lvsd = samples.median(f"{name} dump lvsd")
        save = samples.median(f"{name} dump ipvsadm-save")
        print(f"{name:<14}{lvsd:11.3f}s{save:16.3f}s{ratio(lvsd, save):>11}")


def report_events(samples: Samples, shapes: Sequence[tuple[int, int]]) -> None:
    base = shape_name(*shapes[0])
    base_direct = samples.median(f"{base} event direct")
    print("\nP5: health event -> EditDest acknowledged by the kernel (median wall)")
    print(f"{'dests':<12}{'direct':>10}{'run()':>10}{'ipvsadm -e':>12}{'direct/first':>14}"
          f"{'direct/-e':>11}{'run()/-e':>10}")
    for services, per_service in shapes:
        name = shape_name(services, per_service)
        direct = samples.median(f"{name} event direct")
        looped = samples.median(f"{name} event run()")
        by_hand = samples.median(f"{name} ipvsadm -e")
        print(f"{name:<12}{direct * 1000:8.2f}ms{looped * 1000:8.2f}ms{by_hand * 1000:10.1f}ms"
              f"{ratio(direct, base_direct):>14}{ratio(direct, by_hand):>11}"
              f"{ratio(looped, by_hand):>10}")
    print("\nP5: no-op full reconcile (one dump, zero writes) vs ipvsadm-save -n (median wall)")
    print(f"{'dests':<12}{'reconcile':>11}{'of it dump':>12}{'ipvsadm-save':>14}{'ratio':>8}"
          f"{'start (adopt)':>14}{'config parse':>14}")
    for services, per_service in shapes:
        name = shape_name(services, per_service)
        noop = samples.median(f"{name} noop reconcile")
        save = samples.median(f"{name} ipvsadm-save")
        print(f"{name:<12}{noop:10.3f}s{samples.median(f'{name} dump lvsd'):11.3f}s"
              f"{save:13.3f}s{ratio(noop, save):>8}"
              f"{samples.median(f'{name} daemon start'):13.2f}s"
              f"{samples.median(f'{name} config parse'):13.2f}s")


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--flips", type=int, default=4, help="health events per size (P5)")
    parser.add_argument("--quick", action="store_true", help="small tables: a smoke test")
    parser.add_argument("--only", choices=("program", "events"), default=None)
    parser.add_argument("--json", type=Path, help="also write every median here")
    parser.add_argument("--sizes", nargs="+", default=None, metavar="SxR",
                        help="P5 table shapes, e.g. 10x10 1000x10 (default: all four)")
    args = parser.parse_args()
    if not 1 <= args.runs <= 20 or not 1 <= args.flips <= 50:
        parser.error("--runs must be 1..20 and --flips 1..50")
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        parser.error("needs root and a kernel with IPVS: run it in the VM (tests/vm/run-in-vm.sh)")
    # Daemon events are logged as in production (JSON, info), to nowhere.
    logs.configure("info", fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    program_shapes = QUICK_PROGRAM_SHAPES if args.quick else PROGRAM_SHAPES
    event_shapes: tuple[tuple[int, int], ...] = QUICK_P5_SHAPES if args.quick else P5_SHAPES
    if args.sizes:
        event_shapes = tuple(
            (int(services), int(per)) for services, per in (size.split("x") for size in args.sizes))
    began = time.monotonic()
    print(f"lvsd table benchmark: {LOOP_NAME}, kernel {os.uname().release}, {load_note()}",
          flush=True)
    if args.only in (None, "program"):
        program = bench_program(program_shapes, args.runs)
    if args.only in (None, "events"):
        events = bench_events(event_shapes, args.flips, args.runs)
    if args.only in (None, "program"):
        report_program(program, program_shapes)
    if args.only in (None, "events"):
        report_events(events, event_shapes)
    if args.json:
        medians: dict[str, float] = {}
        for samples in ([program] if args.only in (None, "program") else []) + (
                [events] if args.only in (None, "events") else []):
            medians.update({name: samples.median(name) for name in samples.values})
        args.json.write_text(json.dumps({"load": os.getloadavg(), "medians": medians}, indent=1))
    print(f"\n{time.monotonic() - began:.0f} s in all; {load_note()}")


if __name__ == "__main__":
    main()
