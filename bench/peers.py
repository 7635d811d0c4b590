"""lvsd side by side with keepalived 2.2 and node_exporter in one VM boot, as ratios.

    bash tests/vm/run-in-vm.sh .venv/bin/python bench/peers.py [--only cpu|detect|metrics]
        [--servers 200] [--seconds 30] [--detect-servers 40] [--dests 10000] [--smoke]
        [--json results.json]

Needs root and a kernel with IPVS (the VM): the VM runs Python and the kernel ~10x slower than
the host, so only the ratio to a peer measured in the same boot means anything. Each part builds
two network namespaces: ``pb-dir`` (the director, where lvsd, keepalived and node_exporter run
and the IPVS table lives) and ``pb-rs`` (the real servers 198.18.0.x on its ``lo``, reached over
a veth pair), and removes them at its end. The responder in ``pb-rs`` (uvloop) listens on each
real server's address separately, answers ``GET`` with a 200 and counts the requests it
answered; it can make one address refuse (its listener closes: RST) or hang (accepts and never
answers).

- cpu (P9, P8): lvsd (``lvsd run``) and then keepalived (``keepalived --check``) HTTP-check the
  same N servers every 1 s (timeout 1 s, one retry after 1 s, inhibit on failure). Start: the
  time from the process's start until every server had a check answered, and until all are in
  rotation. Then over a window: the CPU of the process and its children (``/proc/PID/stat``)
  over the checks the responder answered meanwhile, the checks/s of the N/s asked, and the
  false "down" transitions. lvsd's own probe start lateness histogram comes from its /metrics.
- detect (P2): the same timings, M servers; each fails (refused, then in a second run hung) at
  a random moment over 10 s, so checks meet the failure in every phase. Detection = the moment
  the failure exists (the responder's clock) to the line each checker logs when it sets the
  weight to 0 (``table_change`` / ``Disabling service``), stamped as it arrives here: both are
  written right after the kernel call.
- metrics (P6): a table of D destinations (``--shape``: services x servers), programmed by lvsd
  (no checks); ``GET /metrics`` of lvsd against node_exporter's ipvs collector (the only
  collector enabled) on the same table, plain and gzip, each scrape 1.5 s after the last (lvsd
  re-reads the kernel for a scrape when its view is older than 1 s, as node_exporter reads
  /proc each time): wall time (curl's time_total) and each process's CPU per scrape (less its
  background CPU rate over the 1.5 s before, times the scrape's length).

Figures are medians; the load average is printed with them.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR_NS = "pb-dir"
RS_NS = "pb-rs"
VIP = "198.19.0.1"
PORT = 80
API = "127.0.0.1:9163"
NODE_EXPORTER = "127.0.0.1:9100"
INTERVAL = 1.0
TIMEOUT = 1.0
RETRY = 1.0  # one retry (fall 2), after 1 s
TICK = os.sysconf("SC_CLK_TCK")
START_LIMIT = 180.0  # seconds for a checker to check every server once, and to put all in
REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} CPUs"


def server_address(index: int) -> str:
    return f"198.18.{index // 250}.{1 + index % 250}"


def run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


# --- the lab ------------------------------------------------------------------------------------


@contextlib.contextmanager
def lab(servers: int) -> Iterator[None]:
    """The two namespaces, a veth pair between them, the real servers' addresses."""
    teardown()
    run(["ip", "netns", "add", DIR_NS])
    run(["ip", "netns", "add", RS_NS])
    try:
        run(["ip", "link", "add", "pbd0", "netns", DIR_NS, "type", "veth", "peer", "name",
             "pbr0", "netns", RS_NS])
        director = ["link set lo up", "link set pbd0 up", "addr add 192.0.2.1/24 dev pbd0",
                    "route add 198.18.0.0/15 via 192.0.2.2 dev pbd0",
                    f"addr add {VIP}/32 dev lo"]
        real = ["link set lo up", "link set pbr0 up", "addr add 192.0.2.2/24 dev pbr0",
                "route add default via 192.0.2.1 dev pbr0"]
        real += [f"addr add {server_address(i)}/32 dev lo" for i in range(servers)]
        run(["ip", "-n", DIR_NS, "-batch", "-"], "\n".join(director) + "\n")
        run(["ip", "-n", RS_NS, "-batch", "-"], "\n".join(real) + "\n")
        yield
    finally:
        teardown()


def teardown() -> None:
    for ns in (DIR_NS, RS_NS):
        run(["ip", "netns", "del", ns], check=False)


class Responder:
    """The real servers: a process in ``pb-rs``; commands over its stdin, answers on stdout."""

    def __init__(self, servers: int) -> None:
        self.process = subprocess.Popen(
            in_ns(RS_NS, PYTHON, __file__, "--serve", str(servers)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._read() != "ready":
            raise RuntimeError("the responder did not start")

    def _read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def command(self, line: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def counts(self) -> dict[str, int]:
        """Requests answered so far, by server address."""
        return dict(json.loads(self.command("counts")))

    def fail(self, address: str, how: str) -> float:
        """Make one server ``refuse`` or ``hang`` (or ``restore`` it); the monotonic time it
        took effect."""
        return float(self.command(f"{how} {address}"))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def serve(servers: int) -> None:
    """The responder's side (runs in ``pb-rs``)."""
    counts: dict[str, int] = {}
    hung: set[str] = set()

    class Server(asyncio.Protocol):
        def __init__(self, address: str) -> None:
            self.address = address

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.seen = b""

        def data_received(self, data: bytes) -> None:
            self.seen += data
            if b"\r\n\r\n" in self.seen and self.address not in hung:
                self.transport.write(RESPONSE)
                self.transport.close()
                counts[self.address] = counts.get(self.address, 0) + 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listeners: dict[str, asyncio.AbstractServer] = {}
        for i in range(servers):
            address = server_address(i)
            listeners[address] = await loop.create_server(
                functools.partial(Server, address), address, PORT, backlog=1024,
                reuse_address=True)
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while words := (await reader.readline()).decode().split():
            if words[0] == "counts":
                print(json.dumps(counts), flush=True)
            elif words[0] == "refuse":
                listeners.pop(words[1]).close()
                print(time.monotonic(), flush=True)
            elif words[0] == "hang":
                hung.add(words[1])
                print(time.monotonic(), flush=True)
            elif words[0] == "restore":
                hung.discard(words[1])
                if words[1] not in listeners:
                    listeners[words[1]] = await loop.create_server(
                        functools.partial(Server, words[1]), words[1], PORT, backlog=1024,
                        reuse_address=True)
                print(time.monotonic(), flush=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# --- the contestants ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its live descendants."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total / TICK


@dataclass
class LogLine:
    at: float
    text: str


class Contestant(abc.ABC):
    """A checker process in ``pb-dir`` whose output lines are stamped as they arrive."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lines: list[LogLine] = []
        self.process: subprocess.Popen[str] | None = None
        self.started = 0.0

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """How the process starts."""

    @abc.abstractmethod
    def down_address(self, text: str) -> str | None:
        """The real server a log line says was set to weight 0, if it says so."""

    @abc.abstractmethod
    def up_address(self, text: str) -> str | None:
        """The real server a log line says was put in rotation, if it says so."""

    def start(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(in_ns(DIR_NS, *self.argv()), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=self.workdir,
                                        start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(LogLine(time.monotonic(), line.rstrip()))

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def downs(self, since: float = 0.0) -> dict[str, float]:
        """First weight-0 line per server after ``since`` (monotonic)."""
        found: dict[str, float] = {}
        for line in list(self.lines):
            if line.at >= since and (address := self.down_address(line.text)) is not None:
                found.setdefault(address, line.at)
        return found

    def ups(self, since: float = 0.0) -> dict[str, float]:
        """First in-rotation line per server after ``since`` (monotonic)."""
        found: dict[str, float] = {}
        for line in list(self.lines):
            if line.at >= since and (address := self.up_address(line.text)) is not None:
                found.setdefault(address, line.at)
        return found

    def in_rotation(self) -> set[str]:
        """The servers whose last state change put them in rotation."""
        state: dict[str, bool] = {}
        for line in list(self.lines):
            if (address := self.up_address(line.text)) is not None:
                state[address] = True
            elif (address := self.down_address(line.text)) is not None:
                state[address] = False
        return {address for address, up in state.items() if up}

    def tail(self) -> str:
        return "\n".join(line.text for line in self.lines[-15:])


class Lvsd(Contestant):
    name = "lvsd"

    def __init__(self, workdir: Path, servers: int, check: bool = True,
                 per_service: int = 0) -> None:
        super().__init__(workdir)
        self.config = workdir / "lvsd.toml"
        lines = [f'[daemon]\nstate_dir = "{workdir / "state"}"\nlisten = "{API}"\n'
                 'resync_interval = "30s"\n']
        per = per_service or servers
        check_line = (f'check = {{ type = "http", path = "/", interval = {INTERVAL}, '
                      f'timeout = {TIMEOUT}, rise = 1, fall = 2, retry_interval = {RETRY} }}\n'
                      if check else "")
        for n in range(servers):
            if n % per == 0:
                index = n // per
                lines.append(f'[[services]]\nname = "vs{index}"\n'
                             f'address = "198.19.{index // 250}.{1 + index % 250}"\n'
                             f'port = {PORT}\nscheduler = "wrr"\n{check_line}')
            lines.append(f'[[services.real_servers]]\naddress = "{server_address(n)}"\n'
                         "weight = 1\n")
        self.config.write_text("".join(lines))

    def argv(self) -> list[str]:
        return [str(Path(PYTHON).parent / "lvsd"), "run", "--config", str(self.config)]

    @staticmethod
    def _change(text: str) -> dict[str, Any] | None:
        if '"table_change"' not in text:
            return None
        with contextlib.suppress(ValueError):
            event = json.loads(text)
            if event.get("op") in ("edit_dest", "add_dest"):  # lvsd.model's Op.name
                return dict(event)
        return None

    def down_address(self, text: str) -> str | None:
        event = self._change(text)
        if event is None or event.get("weight") != 0:
            return None
        return str(event["server"]).rsplit(":", 1)[0]

    def up_address(self, text: str) -> str | None:
        # A pass of more than 100 ops (the first one, at 200 servers) logs a line per service,
        # not per server: its servers' health_change to up (same pass) says when they go in.
        if '"health_change"' in text:
            with contextlib.suppress(ValueError):
                event = json.loads(text)
                if event.get("status") == "up" and event.get("server"):
                    return str(event["server"]).rsplit(":", 1)[0]
            return None
        event = self._change(text)
        if event is None or not event.get("weight"):
            return None
        return str(event["server"]).rsplit(":", 1)[0]


KEEPALIVED_SERVER = """    real_server {address} {port} {{
        weight 1
        inhibit_on_failure
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout {timeout:g}
            retry 1
            delay_before_retry {retry:g}
        }}
    }}
"""


class Keepalived(Contestant):
    """Debian's keepalived, only its checker (``--check``), in the foreground, logging to the
    console; ``alpha``: a server starts down until its first check passes, as lvsd's do."""

    name = "keepalived"
    DOWN = re.compile(r"(?:Disabling|Removing) service \[([0-9.]+)\]:")
    UP = re.compile(r"(?:Enabling|Adding) service \[([0-9.]+)\]:")

    def __init__(self, workdir: Path, servers: int) -> None:
        super().__init__(workdir)
        self.config = workdir / "keepalived.conf"
        body = "".join(KEEPALIVED_SERVER.format(address=server_address(i), port=PORT,
                                                timeout=TIMEOUT, retry=RETRY)
                       for i in range(servers))
        self.config.write_text(
            "global_defs {\n    router_id lvsd_bench\n}\n"
            f"virtual_server {VIP} {PORT} {{\n    delay_loop {INTERVAL:g}\n    lb_algo wrr\n"
            f"    lb_kind DR\n    protocol TCP\n    alpha\n{body}}}\n")

    def argv(self) -> list[str]:
        return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--check",
                "--use-file", str(self.config), "--pid", str(self.workdir / "keepalived.pid"),
                "--checkers_pid", str(self.workdir / "checkers.pid")]

    def down_address(self, text: str) -> str | None:
        found = self.DOWN.search(text)
        return found.group(1) if found else None

    def up_address(self, text: str) -> str | None:
        found = self.UP.search(text)
        return found.group(1) if found else None


def wait_for(condition: Callable[[], bool], limit: float, what: str,
             contestant: Contestant) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > limit:
            raise TimeoutError(f"{contestant.name}: timed out after {limit:.0f} s waiting for "
                               f"{what}; its last lines:\n{contestant.tail()}")
        if contestant.process is not None and contestant.process.poll() is not None:
            raise RuntimeError(f"{contestant.name} exited {contestant.process.returncode}; its "
                               f"last lines:\n{contestant.tail()}")
        time.sleep(0.1)
    return time.monotonic() - began


def scrape_text(address: str) -> str:
    return run(in_ns(DIR_NS, "curl", "-s", "--max-time", "600", f"http://{address}/metrics"))


# --- the parts ----------------------------------------------------------------------------------


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram in an exposition."""
    buckets = []
    for match in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', text, re.M):
        buckets.append((float(match.group(1)), float(match.group(2))))
    return buckets


def checkers_part(servers: int, seconds: float, detect: int, spread: float,
                  rng: random.Random, scrape_runs: int) -> dict[str, Any]:
    """P9, P8 and P2 in one session per checker: start, a CPU window, then ``detect`` servers
    refused at random moments, restored, then hung at random moments. With ``scrape_runs``,
    lvsd's and node_exporter's /metrics over lvsd's table too (the smoke's P6)."""
    results: dict[str, Any] = {"servers": servers, "interval": INTERVAL, "timeout": TIMEOUT,
                               "retry": RETRY, "fall": 2, "window": seconds,
                               "detect_servers": detect, "spread": spread}
    with lab(servers), tempfile.TemporaryDirectory(prefix="lvsd-peers-") as tmp:
        for kind in ("lvsd", "keepalived"):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            results[kind] = session(kind, workdir, servers, seconds, detect, spread, rng,
                                    scrape_runs)
    report_checkers(results)
    if scrape_runs:
        results["metrics"] = results["lvsd"].pop("metrics")
        report_metrics(results["metrics"])
    return results


def session(kind: str, workdir: Path, servers: int, seconds: float, detect: int,
            spread: float, rng: random.Random, scrape_runs: int) -> dict[str, Any]:
    responder = Responder(servers)
    contestant: Contestant = (Lvsd(workdir, servers) if kind == "lvsd"
                              else Keepalived(workdir, servers))
    addresses = [server_address(i) for i in range(servers)]
    progress(f"checkers: {kind} checking {servers} servers every {INTERVAL:g} s")
    try:
        contestant.start()
        checked = in_rotation = float("nan")
        # An overloaded checker may never get there: its figures are taken all the same.
        with contextlib.suppress(TimeoutError):
            checked = wait_for(lambda: len(responder.counts()) >= servers, START_LIMIT,
                               "every server checked once", contestant)
            wait_for(lambda: len(contestant.ups()) >= servers, START_LIMIT,
                     "every server in rotation", contestant)
            in_rotation = max(contestant.ups().values()) - contestant.started
        checked_at = time.monotonic()
        time.sleep(2 * INTERVAL)
        counts, cpu, began = responder.counts(), contestant.cpu(), time.monotonic()
        time.sleep(seconds)
        counts_after, cpu_after = responder.counts(), contestant.cpu()
        wall = time.monotonic() - began
        answered = sum(counts_after.values()) - sum(counts.values())
        figures: dict[str, Any] = {
            "all_checked_s": checked,
            "all_in_rotation_s": in_rotation,
            "checks_per_s": answered / wall,
            "asked_per_s": servers / INTERVAL,
            "cpu_s": cpu_after - cpu,
            "cores": (cpu_after - cpu) / wall,
            "cpu_per_check_ms": (cpu_after - cpu) / answered * 1000 if answered
            else float("nan"),
            "false_downs": len(contestant.downs(since=checked_at)),
            "in_rotation_at_window_end": len(contestant.in_rotation()),
        }
        progress(f"checkers: {kind}: {figures['cpu_per_check_ms']:.2f} ms CPU per check, "
                 f"{figures['checks_per_s']:.0f} checks/s")
        if kind == "lvsd":
            figures["lateness_buckets"] = histogram(scrape_text(API),
                                                    "lvsd_probe_lateness_seconds")
            if scrape_runs:
                figures["metrics"] = measure_scrapes(contestant, 1, servers, scrape_runs)
        up = contestant.in_rotation()
        for how in ("refuse", "hang"):
            failing = [address for address in addresses if address in up][:detect]
            plan = sorted((rng.uniform(0, spread), a) for a in failing)
            began = time.monotonic()
            failed_at: dict[str, float] = {}
            for offset, address in plan:
                time.sleep(max(0.0, began + offset - time.monotonic()))
                failed_at[address] = responder.fail(address, how)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda t=began, f=failing: len(contestant.downs(since=t)) >= len(f),
                         spread + 20, "every failed server at weight 0", contestant)
            downs = contestant.downs(since=began)
            latencies = sorted(downs[a] - failed_at[a] for a in failing if a in downs)
            figures[how] = {"latencies": latencies, "missed": len(failing) - len(latencies)}
            progress(f"checkers: {kind}: {how} detected {len(latencies)} of {len(failing)}")
            restored = time.monotonic()
            for address in failing:
                responder.fail(address, "restore")
            with contextlib.suppress(TimeoutError):
                wait_for(lambda t=restored, f=failing: len(contestant.ups(since=t)) >= len(f),
                         60,
                         "the failed servers back in rotation", contestant)
        return figures
    finally:
        contestant.stop()
        responder.stop()


def report_checkers(results: dict[str, Any]) -> None:
    servers, seconds = results["servers"], results["window"]
    print(f"CPU per HTTP check, {servers} servers every {INTERVAL:g} s, window {seconds:g} s "
          f"({load_note()}):")
    print(f"  {'':<12}{'CPU/check':>11}{'cores':>7}{'checks/s':>10}{'asked':>7}"
          f"{'false downs':>13}{'all checked':>13}{'all in':>9}")
    for kind in ("lvsd", "keepalived"):
        f = results[kind]
        print(f"  {kind:<12}{f['cpu_per_check_ms']:>9.2f}ms{f['cores']:>7.2f}"
              f"{f['checks_per_s']:>10.0f}{f['asked_per_s']:>7.0f}{f['false_downs']:>13d}"
              f"{f['all_checked_s']:>12.1f}s{f['all_in_rotation_s']:>8.1f}s")
    lv, ka = results["lvsd"], results["keepalived"]
    results["ratio_cpu_per_check"] = lv["cpu_per_check_ms"] / ka["cpu_per_check_ms"]
    results["ratio_ready"] = lv["all_in_rotation_s"] / ka["all_in_rotation_s"]
    print(f"  lvsd/keepalived: CPU per check {results['ratio_cpu_per_check']:.2f}x "
          f"(goal <= 0.5x), start to all in rotation {results['ratio_ready']:.2f}x "
          f"(goal <= 1x)")
    print(f"detection, {results['detect_servers']} of them failing at random moments over "
          f"{results['spread']:g} s; timeout {TIMEOUT:g} s, one retry after {RETRY:g} s:")
    print(f"  {'':<24}{'p50':>8}{'p99':>8}{'max':>8}{'missed':>8}")
    for how in ("refuse", "hang"):
        for kind in ("lvsd", "keepalived"):
            f = results[kind][how]
            p50, p99, top = quantiles(f["latencies"])
            f.update(p50=p50, p99=p99, max=top)
            print(f"  {kind + ' ' + ('refused' if how == 'refuse' else 'hung'):<24}"
                  f"{p50:7.2f}s{p99:7.2f}s{top:7.2f}s{f['missed']:>8d}")
        ratio = results["lvsd"][how]["p50"] / results["keepalived"][how]["p50"]
        results[f"ratio_{how}_p50"] = ratio
        print(f"  lvsd/keepalived median, {how}: {ratio:.2f}x", flush=True)


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            ordered[-1])


def scrape(address: str, gzip: bool) -> tuple[float, int]:
    """(curl's time_total, bytes received) of one scrape from inside the director."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "600", "-w",
            "%{time_total} %{size_download}"]
    if gzip:
        argv += ["-H", "Accept-Encoding: gzip"]
    wall, size = run(in_ns(DIR_NS, *argv, f"http://{address}/metrics")).split()
    return float(wall), int(size)


def measure_scrapes(lvsd: Contestant, services: int, per_service: int,
                    runs: int) -> dict[str, Any]:
    """lvsd's and node_exporter's ``GET /metrics`` over the table in ``pb-dir``."""
    dests = services * per_service
    results: dict[str, Any] = {"services": services, "per_service": per_service,
                               "dests": dests, "runs": runs}
    assert lvsd.process is not None
    exporter = subprocess.Popen(
        in_ns(DIR_NS, "prometheus-node-exporter", "--collector.disable-defaults",
              "--collector.ipvs", f"--web.listen-address={NODE_EXPORTER}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: answers(NODE_EXPORTER), 60, "node_exporter", lvsd)
        for name, address, pid in (("lvsd", API, lvsd.process.pid),
                                   ("node_exporter", NODE_EXPORTER, exporter.pid)):
            body = scrape_text(address)
            series = [line for line in body.splitlines() if line and not line.startswith("#")]
            per_dest = [line for line in series if "remote_address=" in line]
            results[f"{name} series"] = len(series)
            results[f"{name} series per destination"] = len(per_dest) / max(dests, 1)
            for gzip in (False, True):
                scrape(address, gzip)  # one first: lazy imports, first buffers
                walls, cpus, size = [], [], 0
                for _ in range(runs):
                    # The process's own background work (probes, timers) is measured over the
                    # pause before the scrape and taken off the scrape's CPU.
                    idle_cpu, idle_at = cpu_seconds(pid), time.monotonic()
                    time.sleep(1.5)
                    before, began = cpu_seconds(pid), time.monotonic()
                    rate = (before - idle_cpu) / (began - idle_at)
                    wall, size = scrape(address, gzip)
                    walls.append(wall)
                    cpus.append(max(0.0, cpu_seconds(pid) - before
                                    - rate * (time.monotonic() - began)))
                results[f"{name} {'gzip' if gzip else 'plain'}"] = {
                    "wall": statistics.median(walls), "cpu": statistics.median(cpus),
                    "bytes": size, "walls": walls, "cpus": cpus}
            progress(f"metrics: {name} scraped")
    finally:
        exporter.kill()
        exporter.wait(10)
    for encoding in ("plain", "gzip"):
        lv, ne = results[f"lvsd {encoding}"], results[f"node_exporter {encoding}"]
        results[f"ratio_{encoding}_wall"] = lv["wall"] / ne["wall"]
        results[f"ratio_{encoding}_cpu"] = lv["cpu"] / ne["cpu"] if ne["cpu"] else float("nan")
    return results


def report_metrics(results: dict[str, Any]) -> None:
    print(f"/metrics at {results['dests']:,} destinations ({results['services']} x "
          f"{results['per_service']}), median of {results['runs']} scrapes 1.5 s apart "
          f"({load_note()}):")
    print(f"  {'':<24}{'wall':>8}{'CPU':>8}{'bytes':>12}{'series':>9}{'per dest':>9}")
    for name in ("lvsd", "node_exporter"):
        for encoding in ("plain", "gzip"):
            f = results[f"{name} {encoding}"]
            print(f"  {name + ' ' + encoding:<24}{f['wall']:7.3f}s{f['cpu']:7.2f}s"
                  f"{f['bytes']:>12,}{results[f'{name} series']:>9,}"
                  f"{results[f'{name} series per destination']:>9.1f}")
    for encoding in ("plain", "gzip"):
        print(f"  lvsd/node_exporter {encoding}: wall {results[f'ratio_{encoding}_wall']:.2f}x, "
              f"CPU {results[f'ratio_{encoding}_cpu']:.2f}x (goal <= 1x)", flush=True)


def metrics_part(services: int, per_service: int, runs: int) -> dict[str, Any]:
    dests = services * per_service
    with lab(0), tempfile.TemporaryDirectory(prefix="lvsd-peers-") as tmp:
        lvsd = Lvsd(Path(tmp), dests, check=False, per_service=per_service)
        progress(f"metrics: lvsd programs {services} x {per_service} destinations")
        lvsd.start()
        try:
            took = wait_for(lambda: ready(API), 900, "lvsd ready", lvsd)
            progress(f"metrics: lvsd ready after {took:.0f} s")
            results = measure_scrapes(lvsd, services, per_service, runs)
        finally:
            lvsd.stop()
    report_metrics(results)
    return results


def answers(address: str) -> bool:
    done = subprocess.run(in_ns(DIR_NS, "curl", "-s", "-o", "/dev/null", "--max-time", "10",
                                f"http://{address}/"),
                          capture_output=True, text=True, check=False, timeout=30)
    return done.returncode == 0


def ready(address: str) -> bool:
    done = subprocess.run(in_ns(DIR_NS, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "10", f"http://{address}/readyz"),
                          capture_output=True, text=True, check=False, timeout=30)
    return done.stdout.strip() == "200"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=("checkers", "metrics"), action="append")
    parser.add_argument("--servers", type=int, default=200, help="checkers part")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="checkers part: the CPU window")
    parser.add_argument("--detect-servers", type=int, default=40,
                        help="checkers part: how many fail (each way)")
    parser.add_argument("--shape", default="1000x10", help="metrics part: SERVICESxSERVERS")
    parser.add_argument("--runs", type=int, default=5, help="metrics part: scrapes per figure")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one session per checker (about a minute)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        parser.error("needs root and a kernel with IPVS: run it in the VM (tests/vm/run-in-vm.sh)")
    services, _, per_service = args.shape.partition("x")
    shape = (int(services), int(per_service))
    if args.smoke:
        args.servers, args.seconds, args.detect_servers, args.runs = 6, 2.0, 2, 1
    args.detect_servers = min(args.detect_servers, args.servers)
    if not 1 <= args.servers <= 2000 or args.detect_servers < 1:
        parser.error("--servers must be 1..2000 and --detect-servers at least 1")
    if not 1 <= shape[0] * shape[1] <= 40_000 or not 1 <= args.runs <= 50:
        parser.error("--shape must have 1..40000 destinations and --runs be 1..50")
    parts = args.only or ["checkers", "metrics"]
    print(f"lvsd beside its peers: kernel {os.uname().release}, {load_note()}", flush=True)
    results: dict[str, Any] = {"machine": machine(), "smoke": args.smoke}
    rng = random.Random(args.seed)
    if "checkers" in parts:
        found = checkers_part(args.servers, args.seconds, args.detect_servers,
                              2.0 if args.smoke else 10.0, rng, args.runs if args.smoke else 0)
        if "metrics" in found:
            results["metrics"] = found.pop("metrics")
        results["checkers"] = found
    if "metrics" in parts and not args.smoke:
        results["metrics"] = metrics_part(*shape, args.runs)
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"{time.monotonic() - STARTED:.0f} s in all; {load_note()}")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release,
            "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    main()
