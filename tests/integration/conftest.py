"""Fixtures for tests against the real kernel: run them inside the VM (tests/vm/run-integration.sh).

``netns``   a fresh network namespace with ``lo`` up: a fresh, empty IPVS table.
``ipvs``    a ``NetlinkIpvs`` on that namespace.
``dr_lab``  the seeds' direct-routing topology: client, director holding the VIP, real servers
            with the VIP on lo/32, each serving a distinct page over real HTTP. Parametrise the
            number of real servers with ``@pytest.mark.parametrize("dr_lab", [3], indirect=True)``.
            A module that wants one lab for several tests builds its own module-scoped fixture
            with ``with dr_lab_context(count) as lab: yield lab`` and calls ``lab.reset()``.

Every name carries a random tag, so labs and namespaces of concurrent tests never collide, and
everything a fixture made (processes, namespaces, the links inside them) is removed even when
the test fails. Addresses are TEST-NET and exist only inside the namespaces.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsd.ipvs.netlink import NetlinkIpvs

NO_KERNEL_REASON = "needs a kernel with IPVS (run tests/vm/run-integration.sh)"


def _require_kernel() -> None:
    if os.environ.get("RUN_IN_VM") != "1" and not os.path.exists("/proc/net/ip_vs"):
        pytest.skip(NO_KERNEL_REASON)


def _tag() -> str:
    return uuid.uuid4().hex[:6]


class Namespace(str):
    """A network namespace's name that can run commands inside it."""

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ip", "netns", "exec", self, *cmd], check=False,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode:
            raise RuntimeError(f"in {self}: {' '.join(cmd)!r} exited {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self, *args], check=True, capture_output=True, timeout=30)

    def sysctl(self, *settings: str) -> None:
        self.run("sysctl", "-qw", *settings)


def create_namespace(name: str) -> Namespace:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    ns = Namespace(name)
    # Without lo up, adding an IPVS destination fails with EINVAL (no local routes yet).
    ns.ip("link", "set", "lo", "up")
    return ns


def delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh network namespace (and so a fresh, empty IPVS table) with lo up."""
    _require_kernel()
    ns = create_namespace(f"lvsd-{_tag()}")
    try:
        yield ns
    finally:
        delete_namespace(ns)


@pytest.fixture
async def ipvs(netns: Namespace) -> AsyncIterator[NetlinkIpvs]:
    backend = NetlinkIpvs(netns)
    try:
        yield backend
    finally:
        await backend.close()


# --- the direct-routing lab ---------------------------------------------------------------------


@functools.cache
def _busybox_httpd() -> str | None:
    busybox = shutil.which("busybox")
    if busybox and "httpd" in subprocess.run([busybox, "--list"], capture_output=True,
                                             text=True, check=False).stdout.split():
        return busybox
    return None


def _httpd_command(directory: str) -> list[str]:
    busybox = _busybox_httpd()
    if busybox:
        return [busybox, "httpd", "-f", "-p", "80", "-h", directory]  # starts in milliseconds
    return [sys.executable, "-m", "http.server", "-b", "0.0.0.0", "-d", directory, "80"]


def _shell(script: str, timeout: float = 120) -> None:
    """Run a whole setup script in one process: each Python spawn costs dearly in the VM."""
    done = subprocess.run(["bash", "-euc", script], capture_output=True, text=True,
                          check=False, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"lab setup failed ({done.returncode}): {done.stderr.strip()}\n"
                           f"{done.stdout.strip()}")


@dataclass
class RealServer:
    label: str  # "rs1": also the page it serves
    ns: Namespace
    address: str
    directory: str
    process: subprocess.Popen[bytes] | None = None


@dataclass
class DrLab:
    """Client, director and real servers on one bridge; the director holds the VIP."""

    tag: str
    count: int
    vip: str = "192.0.2.100"
    port: int = 80
    client_address: str = "192.0.2.10"
    director_address: str = "192.0.2.1"
    switch: Namespace = field(init=False)
    client: Namespace = field(init=False)
    director: Namespace = field(init=False)
    real_servers: list[RealServer] = field(default_factory=list)
    _namespaces: list[Namespace] = field(default_factory=list)
    _tmp: str = ""

    def build(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix=f"lvsd-lab-{self.tag}-")
        # The bridge lives in a namespace of its own: nothing of the lab touches the root one.
        self.switch = self._name("sw")
        self.client = self._name("cl")
        self.director = self._name("lb")
        hosts = [("cl", self.client, self.client_address),
                 ("lb", self.director, self.director_address)]
        for index in range(1, self.count + 1):
            label, address = f"rs{index}", f"192.0.2.{10 + index}"
            directory = os.path.join(self._tmp, label)
            os.mkdir(directory)
            Path(directory, "index.html").write_text(label)
            server = RealServer(label, self._name(label), address, directory)
            self.real_servers.append(server)
            hosts.append((label, server.ns, address))
        sw = self.switch
        script = [f"ip netns add {ns}; ip -n {ns} link set lo up" for ns in self._namespaces]
        script.append(f"ip -n {sw} link add br0 type bridge; ip -n {sw} link set br0 up")
        for role, ns, address in hosts:
            script.append(
                f"ip -n {sw} link add v{role} type veth peer name eth0 netns {ns}\n"
                f"ip -n {sw} link set v{role} master br0 up\n"
                f"ip -n {ns} addr add {address}/24 dev eth0; ip -n {ns} link set eth0 up")
        script.append(
            f"ip -n {self.director} addr add {self.vip}/32 dev eth0\n"
            f"ip netns exec {self.director} sysctl -qw net.ipv4.conf.all.send_redirects=0 "
            "net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0")
        for server in self.real_servers:
            script.append(
                f"ip -n {server.ns} addr add {self.vip}/32 dev lo\n"
                f"ip netns exec {server.ns} sysctl -qw net.ipv4.conf.all.arp_ignore=1 "
                "net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_ignore=1 "
                "net.ipv4.conf.eth0.arp_announce=2")
        _shell("\n".join(script))
        for server in self.real_servers:
            self._spawn(server)
        self._wait_serving(self.real_servers)

    def _name(self, role: str) -> Namespace:
        ns = Namespace(f"lvsd-{self.tag}-{role}")
        self._namespaces.append(ns)  # recorded first: cleanup covers a half-built lab
        return ns

    def _spawn(self, server: RealServer) -> None:
        server.process = subprocess.Popen(
            ["ip", "netns", "exec", server.ns, *_httpd_command(server.directory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_serving(self, servers: Sequence[RealServer]) -> None:
        """Wait (bounded: 20 s a server) until the client fetches each server's page directly."""
        probe = Path(self._tmp, "wait-serving.sh")
        probe.write_text(
            'ready() { for i in $(seq 100); do\n'
            '  [ "$(curl -s -m 1 "http://$1/" || true)" = "$2" ] && return 0; sleep 0.2\n'
            'done; echo "$2 serves no page"; return 1; }\n'
            + "".join(f"ready {s.address} {s.label}\n" for s in servers))
        _shell(f"ip netns exec {self.client} bash -eu {probe}")
        for server in servers:
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError(f"{server.label}'s HTTP server exited "
                                   f"({server.process.returncode})")

    def server(self, label: str) -> RealServer:
        return next(s for s in self.real_servers if s.label == label)

    def stop_server(self, label: str) -> None:
        """Stop one real server's HTTP process (its host stays up: connections are refused)."""
        server = self.server(label)
        if server.process is not None:
            server.process.terminate()
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=10)
            server.process = None

    async def start_server(self, label: str) -> None:
        server = self.server(label)
        if server.process is None:
            self._spawn(server)
        await asyncio.to_thread(self._wait_serving, [server])

    async def fetch(self, count: int, per_request: float = 2.0) -> list[str | None]:
        """GET the VIP ``count`` times from the client, each on a new connection; the label
        of the server that answered each request, or None where it failed."""
        urls = [f"http://{self.vip}:{self.port}/"] * count
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.client, "curl", "-s", "-m", str(per_request),
            "--no-keepalive", "-H", "Connection: close", "-w", "|%{http_code}\\n", *urls,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), per_request * count + 10)
        answers: list[str | None] = []
        for line in out.decode().splitlines():
            body, _, code = line.rpartition("|")
            answers.append(body if code == "200" and body else None)
        answers += [None] * (count - len(answers))
        return answers

    async def count_answers(self, count: int) -> collections.Counter[str | None]:
        return collections.Counter(await self.fetch(count))

    def reset(self) -> None:
        """Empty the director's IPVS table and restart every stopped server."""
        self.director.run("ipvsadm", "-C")
        stopped = [s for s in self.real_servers
                   if s.process is None or s.process.poll() is not None]
        for server in stopped:
            self._spawn(server)
        if stopped:
            self._wait_serving(stopped)

    def close(self) -> None:
        for server in self.real_servers:
            self.stop_server(server.label)
        subprocess.run(["bash", "-c", "".join(f"ip netns del {ns} 2>/dev/null; "
                                              for ns in reversed(self._namespaces))],
                       check=False, timeout=60)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


@contextmanager
def dr_lab_context(count: int = 2) -> Iterator[DrLab]:
    _require_kernel()
    lab = DrLab(_tag(), count)
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def dr_lab(request: pytest.FixtureRequest) -> Iterator[DrLab]:
    count = getattr(request, "param", 2)
    with dr_lab_context(count) as lab:
        yield lab


@pytest.fixture(scope="session")
def kernel_schedulers() -> Sequence[str]:
    """The schedulers this kernel has modules (or built-ins) for."""
    from lvsd.model import SCHEDULERS

    release = os.uname().release
    modules = Path("/lib/modules", release)
    builtin = modules / "modules.builtin"
    builtins = builtin.read_text() if builtin.exists() else ""
    return tuple(
        s for s in SCHEDULERS
        if any((modules / "kernel/net/netfilter/ipvs").glob(f"ip_vs_{s}.ko*"))
        or f"/ip_vs_{s}.ko" in builtins
    )
