"""P8: start to ready, and to every server in rotation, of ``lvsd run`` as systemd starts it.

    .venv/bin/python bench/start.py [--servers 10000] [--runs 3] [--profile] [--importtime]
    bash tests/vm/run-in-vm.sh .venv/bin/python bench/start.py --servers 200 --kernel

Needs root: the benchmark moves itself into a network namespace of its own (``lo`` only), where
the responder (bench/daemon.py's, a fixed HTTP 200 on port 18080) answers for every real server
127.1.x.y, and lvsd's API listens. N real servers (N/10 services x 10), HTTP checks every 2 s,
rise 1. Each run starts a fresh ``lvsd run`` process (a new state directory: nothing to adopt)
with ``$NOTIFY_SOCKET`` pointing at a socket of the benchmark's, and measures from just before
the process is started:

- ready: the ``READY=1`` the daemon sends systemd (the API serves and the first pass is done;
  what ``Type=notify`` waits for);
- all in rotation: the last server's ``health_change`` to ``up`` in its log, as it arrives.

On the host (no IPVS) lvsd runs with its in-memory table (``lvsd.ipvs.fake``) put in place of
the netlink backend, every other line of ``lvsd run`` as it is; ``--kernel`` runs the real
console script against the kernel's table (in the VM, where Python is ~10x slower: compare
with keepalived's checkers all succeeding 2.7-4.4 s after start at 200 servers, bench/peers.py
``--only cpu``). ``--profile`` runs one more start under cProfile and prints the top of it;
``--importtime`` prints the slowest imports of that start (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
PORT = 18080
API_PORT = 9173
PER_SERVICE = 10
CLONE_NEWNET = 0x40000000
LOOPBACK_BASE = (127 << 24) | (1 << 16)
VIP_BASE = (198 << 24) | (19 << 16)
LIMIT = 300.0  # seconds for one start, ready and all in rotation
# `lvsd run` with the in-memory table in place of netlink: everything else as systemd runs it.
FAKE_RUN = """
import sys
import lvsd.ipvs.netlink
from lvsd.ipvs.fake import FakeIpvs
lvsd.ipvs.netlink.NetlinkIpvs = FakeIpvs
from lvsd.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def dotted(value: int) -> str:
    return ".".join(str(value >> shift & 255) for shift in (24, 16, 8, 0))


def config_text(state_dir: Path, servers: int) -> str:
    check = ('{ type = "http", path = "/", interval = 2.0, timeout = 1.0, rise = 1, fall = 3, '
             "retry_interval = 1.0 }")
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\nlisten = "127.0.0.1:{API_PORT}"\n'
             'log_level = "info"\n']
    for n in range(servers):
        if n % PER_SERVICE == 0:
            index = n // PER_SERVICE
            lines.append(f'[[services]]\nname = "vs{index}"\naddress = "{dotted(VIP_BASE + index)}"'
                         f'\nport = 80\nscheduler = "wrr"\nforward = "masq"\ncheck = {check}\n')
        lines.append(f'[[services.real_servers]]\naddress = "{dotted(LOOPBACK_BASE + n)}"\n'
                     f"port = {PORT}\nweight = 1\n")
    return "".join(lines)


def enter_own_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)


class Responder:
    def __init__(self) -> None:
        self.process = subprocess.Popen([PYTHON, str(BENCH / "daemon.py"), "--serve", str(PORT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the responder did not start")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


class Start:
    """One ``lvsd run``: when it said READY=1 and when each server's first ``up`` arrived."""

    def __init__(self, workdir: Path, servers: int, kernel: bool, prefix: list[str]) -> None:
        self.servers = servers
        self.ups: set[str] = set()
        self.all_up_at: float | None = None
        self.ready_at: float | None = None
        self.ready_cpu = 0.0  # the process's CPU seconds when it said READY=1
        self.tail: list[str] = []
        self.imports: list[str] = []  # -X importtime's lines
        notify_path = workdir / "notify"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        config = workdir / "lvsd.toml"
        state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
        config.write_text(config_text(state, servers))
        if kernel:
            argv = [PYTHON, *prefix, "-m", "lvsd"] if prefix else [str(Path(PYTHON).with_name(
                "lvsd"))]
        else:
            script = workdir / "fake_run.py"
            script.write_text(FAKE_RUN)
            argv = [PYTHON, *prefix, str(script)]
        argv += ["run", "--config", str(config)]
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
        threading.Thread(target=self._read_log, daemon=True).start()
        threading.Thread(target=self._read_notify, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("import time:"):
                self.imports.append(line)
                continue
            self.tail = [*self.tail[-20:], line.rstrip()]
            if '"health_change"' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line[line.index("{"):])
                if event.get("status") == "up":
                    self.ups.add(str(event.get("server")))
                    if len(self.ups) == self.servers and self.all_up_at is None:
                        self.all_up_at = time.monotonic()

    def _read_notify(self) -> None:
        """Read every message, as systemd does: a full socket would block the daemon's sends."""
        with contextlib.suppress(OSError):
            while message := self.notify.recv(4096).decode(errors="replace"):
                if "READY=1" in message.split("\n") and self.ready_at is None:
                    self.ready_cpu = cpu_seconds(self.process.pid)
                    self.ready_at = time.monotonic()

    def wait(self) -> tuple[float, float]:
        """Seconds from start to ready and to all in rotation."""
        while self.ready_at is None or self.all_up_at is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"lvsd exited {self.process.returncode}:\n"
                                   + "\n".join(self.tail))
            if time.monotonic() - self.started > LIMIT:
                raise RuntimeError(f"not ready and all up after {LIMIT:.0f} s "
                                   f"({len(self.ups)} up):\n" + "\n".join(self.tail))
            time.sleep(0.01)
        return self.ready_at - self.started, self.all_up_at - self.started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.notify.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (a figure the machine's load does not inflate
    much, unlike its wall time)."""
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def flush(kernel: bool) -> None:
    if kernel:
        subprocess.run(["ipvsadm", "-C"], check=True, timeout=60)


def median_range(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f} s (min {min(values):.2f}, "
            f"max {max(values):.2f})")


def profiled_start(workdir: Path, servers: int, kernel: bool) -> None:
    out = workdir / "start.prof"
    flush(kernel)
    start = Start(workdir, servers, kernel, ["-m", "cProfile", "-o", str(out)])
    start.wait()
    start.stop()
    import pstats

    print("  profile of one start (cumulative, to all in rotation and stop; lvsd lines):")
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(r"lvsd|aiohttp|pyroute2|tomllib|pydantic", 30)


def imports_of_a_start(workdir: Path, servers: int, kernel: bool) -> None:
    flush(kernel)
    start = Start(workdir, servers, kernel, ["-X", "importtime"])
    start.wait()
    rows = []
    start.stop()
    for line in start.imports:
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), int(parts[0].split(":")[1]), parts[2].rstrip()))
    total = sum(own for _, own, _ in rows)
    print(f"  imports of one start: {len(rows)} modules, {total / 1e6:.2f} s in all; "
          "the slowest (cumulative / own, ms):")
    for cumulative, own, name in sorted(rows, reverse=True)[:25]:
        print(f"    {cumulative / 1000:8.1f} {own / 1000:8.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel", action="store_true",
                        help="the kernel's IPVS table (the real `lvsd run`; in the VM)")
    parser.add_argument("--profile", action="store_true", help="one more start under cProfile")
    parser.add_argument("--importtime", action="store_true",
                        help="one more start under -X importtime")
    args = parser.parse_args()
    if not 10 <= args.servers <= 30_000 or not 1 <= args.runs <= 20:
        parser.error("--servers must be 10..30000 and --runs 1..20")
    if args.kernel and not os.path.exists("/proc/net/ip_vs"):
        parser.error("--kernel needs a kernel with IPVS: run it in the VM")
    if os.geteuid() != 0:
        parser.error("needs root: it creates a network namespace for its traffic")
    enter_own_netns()
    one, five, _ = os.getloadavg()
    backend = "kernel" if args.kernel else "in-memory fake"
    print(f"lvsd start to ready: {args.servers:,} servers ({args.servers // PER_SERVICE:,} "
          f"services), HTTP checks every 2 s, {backend} table; load average {one:.2f} / "
          f"{five:.2f} on {os.cpu_count()} CPUs", flush=True)
    responder = Responder()
    try:
        with tempfile.TemporaryDirectory(prefix="lvsd-bench-start-") as name:
            workdir = Path(name)
            ready, all_up, cpu = [], [], []
            for run in range(args.runs):
                flush(args.kernel)
                start = Start(workdir, args.servers, args.kernel, [])
                took_ready, took_all = start.wait()
                start.stop()
                ready.append(took_ready)
                all_up.append(took_all)
                cpu.append(start.ready_cpu)
                print(f"  run {run + 1}: ready after {took_ready:.2f} s ({start.ready_cpu:.2f} s "
                      f"of CPU), all {args.servers:,} in rotation after {took_all:.2f} s",
                      flush=True)
            print(f"  start to ready (READY=1): {median_range(ready)}")
            print(f"  CPU of lvsd to ready: {median_range(cpu)}")
            print(f"  start to all in rotation: {median_range(all_up)}")
            if args.importtime:
                imports_of_a_start(workdir, args.servers, args.kernel)
            if args.profile:
                profiled_start(workdir, args.servers, args.kernel)
    finally:
        responder.stop()


if __name__ == "__main__":
    main()
