"""Run the real ``lvsd run`` inside a lab's director namespace and watch the kernel table.

``LvsdProcess`` starts the installed console script (the same entry point systemd runs) with a
config written to a temp dir, waits for /readyz, sends signals, reads its JSON log lines, and
reads the director's IPVS table with the real ``ipvsadm`` (parsed by lvsd's own save-format
parser, which the save-format tests hold byte-exact against ipvsadm).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from lvsd.ipvsadm.restore import parse
from lvsd.model import Address, DestKey, Family, Protocol, ServiceKey, Table
from tests.integration.conftest import http_get_in_netns, in_netns

LVSD = str(Path(sys.executable).with_name("lvsd"))


class LvsdProcess:
    def __init__(self, director: str, config_text: str, *, listen_port: int = 9163) -> None:
        self.director = director
        self.dir = Path(tempfile.mkdtemp(prefix="lvsd-daemon-"))
        self.state_dir = self.dir / "state"
        self.config_path = self.dir / "lvsd.toml"
        self.log_path = self.dir / "lvsd.log"
        self.listen_port = listen_port
        self.control_socket = self.dir / "lvsd.sock"  # its own: daemons of other tests may run
        self.write_config(config_text)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # events() reads the log from here: see mark_log()

    def mark_log(self) -> None:
        """From now on ``events()`` (and ``write_time``) see only lines logged after this call:
        a daemon shared by several tests shows each test its own events."""
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    async def reload(self, config_text: str, *, timeout: float = 60.0) -> None:
        """Write ``config_text`` as the config, SIGHUP, and wait for the ``reloaded`` line of a
        reload that read it (its service count matches; a reload already under way when the
        file was written reads the old one). Events before it are no longer seen."""
        self.mark_log()
        self.write_config(config_text)
        expected = config_text.count("[[services]]")
        self.send(signal.SIGHUP)
        await self.wait_for(
            lambda: self.exited() or any(e.get("services") == expected
                                         for e in self.events("reloaded")),
            timeout, f"reload with {expected} services")
        if self.exited():
            raise RuntimeError(f"lvsd exited on reload:\n{self.log_tail()}")

    def write_config(self, config_text: str, *, encoding: str = "utf-8") -> None:
        """Write the config after a ``[daemon]`` header with this process's state dir and
        listen port (``config_text`` may go on with more ``[daemon]`` keys)."""
        header = (f'[daemon]\nstate_dir = "{self.state_dir}"\n'
                  f'listen = "127.0.0.1:{self.listen_port}"\n'
                  f'control_socket = "{self.control_socket}"\n')
        if config_text.lstrip().startswith("[daemon]"):
            config_text = config_text.lstrip()[len("[daemon]"):]
            text = header + config_text
        else:
            text = header + "\n" + config_text
        self.write_config_bytes(text.encode(encoding))

    def write_config_bytes(self, data: bytes) -> None:
        """Replace the config file with exactly ``data`` (atomically, as config management does)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.config_path)

    @property
    def save_file(self) -> Path:
        return self.state_dir / "ipvsadm.rules"

    async def start(self, *, timeout: float = 90.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.director, LVSD, "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        log.close()
        try:
            await self.wait_for(lambda: self.http("/readyz") == "ready" or self.exited(),
                                timeout, "lvsd ready")
        except AssertionError:
            # Where is it stuck? faulthandler prints every thread's stack on SIGABRT.
            if not self.exited():
                self.send(signal.SIGABRT)
                await asyncio.sleep(3)
            raise AssertionError(f"lvsd not ready after {timeout} s; log and stacks:\n"
                                 f"{self.log_tail(80)}") from None
        if self.exited():
            raise RuntimeError(f"lvsd exited with {self.process.returncode}:\n{self.log_tail()}")

    async def run_to_exit(self, *, timeout: float = 90.0) -> int:
        """Start lvsd and wait for it to exit (a start-up it must refuse); its exit code."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.director, LVSD, "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        await self.wait_for(self.exited, timeout, "lvsd to exit")
        return self.process.returncode

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        # `ip netns exec` execs lvsd: the pid is lvsd's own.
        os.kill(self.process.pid, sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None or self.exited():
            return self.process.returncode if self.process else 0
        self.send(sig)
        deadline = time.monotonic() + timeout
        while not self.exited() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.exited():
            self.process.kill()
            self.process.wait(10)
        return self.process.returncode

    def http(self, path: str, *, timeout: float = 2.0) -> str | None:
        """The body of ``GET path`` on lvsd's API (whatever the status), or None if nothing
        answered within ``timeout`` s. Asked from a thread in the director's namespace: no process
        spawned, which under emulation costs lvsd CPU while it starts."""
        status, body = http_get_in_netns(self.director, self.listen_port, path, timeout=timeout)
        return None if status is None else body.strip()

    def ctl(self, *args: str, user: int | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``lvsd ctl --socket THIS ARGS…`` (as uid ``user`` when given): its result."""
        return subprocess.run(
            [LVSD, "ctl", "--socket", str(self.control_socket), *args],
            capture_output=True, text=True, check=False, timeout=timeout,
            user=user, env={**os.environ, "NO_COLOR": "1"})

    def status(self) -> dict[str, Any]:
        text = self.http("/status")
        assert text, "no /status answer"
        data: dict[str, Any] = json.loads(text)
        return data

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = []
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
        for line in text.splitlines():
            start = line.find("{")
            if start < 0:
                continue
            try:
                event = json.loads(line[start:])
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                events.append(event)
        return events

    def write_time(self, server: str, weight: int, after: float) -> float | None:
        """When lvsd's log says it wrote ``weight`` for ``server`` (``"192.0.2.11:80"``) into
        the kernel, at or after ``after`` (epoch seconds): the moment ``apply`` returned."""
        for event in self.events("table_change"):
            if event.get("server") == server and event.get("weight") == weight:
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                if at >= after:
                    return at
        return None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def table(self) -> Table:
        return kernel_table(self.director)

    def weights(self) -> dict[str, int]:
        """The director's table as ``weights()`` gives it, without spawning a process."""
        return kernel_weights(self.director)

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str,
                       poll: float = 0.05) -> float:
        """Seconds until ``condition()`` held; AssertionError with the log after ``timeout``."""
        started = time.monotonic()
        while True:
            if condition():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n"
                                     f"--- lvsd log tail:\n{self.log_tail()}")
            await asyncio.sleep(poll)

    def cleanup(self) -> None:
        if self.process is not None and not self.exited():
            self.process.kill()
            self.process.wait(10)


def kernel_table(namespace: str) -> Table:
    out = subprocess.run(["ip", "netns", "exec", namespace, "ipvsadm-save", "-n"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return parse(out, "ipvsadm-save -n")


def weights(table: Table) -> dict[str, int]:
    """``{"tcp:192.0.2.100:80 -> 192.0.2.11:80": 1, …}`` for every destination."""
    return {f"{vs.key} -> {d.key}": d.weight for vs in table.services for d in vs.dests}


PROC_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}


def proc_endpoint(text: str) -> tuple[Address, int]:
    """``C000020B:0050`` or ``[2001:0db8:…:0001]:0050`` as /proc/net/ip_vs prints them."""
    address, _, port = text.rpartition(":")
    if address.startswith("["):
        return ipaddress.ip_address(address[1:-1]), int(port, 16)
    return ipaddress.ip_address(int(address, 16)), int(port, 16)


def kernel_weights(namespace: str) -> dict[str, int]:
    """``weights(kernel_table(namespace))``, read from /proc/net/ip_vs in a thread in the
    namespace: no process spawned, so it can be polled while lvsd starts or probes under
    emulation, where an ``ip netns exec ipvsadm-save`` every 50 ms costs lvsd CPU."""

    def read() -> dict[str, int]:
        found: dict[str, int] = {}
        service: ServiceKey | None = None
        for line in Path("/proc/thread-self/net/ip_vs").read_text().splitlines():
            words = line.split()
            if words and words[0] in PROC_PROTOCOLS:
                address, port = proc_endpoint(words[1])
                service = ServiceKey.virtual(PROC_PROTOCOLS[words[0]], address, port)
            elif words and words[0] == "FWM":
                family = Family.INET6 if "IPv6" in words[2:] else Family.INET
                service = ServiceKey.mark(int(words[1], 16), family)
            elif len(words) >= 4 and words[0] == "->" and words[1] != "RemoteAddress:Port":
                assert service is not None, f"a destination before any service: {line!r}"
                dest = DestKey(*proc_endpoint(words[1]))
                found[f"{service} -> {dest}"] = int(words[3])
        return found

    return in_netns(namespace, read)


def destination_count(namespace: str) -> int:
    """Destinations in ``namespace``'s IPVS table, from /proc (no process spawned: cheap
    enough to poll while a 10,000-destination pass is being written)."""

    def count() -> int:
        text = Path("/proc/thread-self/net/ip_vs").read_text()
        return sum(1 for line in text.splitlines() if line.startswith("  -> ")
                   and not line.startswith("  -> RemoteAddress"))

    return in_netns(namespace, count)


NETLINK_GENERIC = 16
SYS_PIDFD_GETFD = 438  # x86-64 and aarch64 (asm-generic) alike


def netlink_sockets_of(pid: int, protocol: int = NETLINK_GENERIC) -> list[socket.socket]:
    """Copies of process ``pid``'s netlink sockets of ``protocol`` (pidfd_getfd(2), root).

    A copy is the same kernel socket: options set through it (a receive buffer) apply to
    the process's own file descriptor."""
    inodes = set()
    for line in Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1]) == protocol:
            inodes.add(fields[-1])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    copies = []
    try:
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if not (target.startswith("socket:[") and target[8:-1] in inodes):
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
            if fd < 0:
                code = ctypes.get_errno()
                raise OSError(code, f"pidfd_getfd({pid}, {entry.name}): {os.strerror(code)}")
            copies.append(socket.socket(fileno=fd))
    finally:
        os.close(pidfd)
    return copies
