"""Fixtures for tests against the real kernel: run them inside the VM (tests/vm/run-integration.sh).

``netns``   a fresh network namespace with ``lo`` up: a fresh, empty IPVS table.
``ipvs``    a ``NetlinkIpvs`` on that namespace.
``dr_lab``  the seeds' direct-routing topology: client, director holding the VIP, real servers
            with the VIP on lo/32, each serving a distinct page over real HTTP. Parametrise the
            number of real servers with ``@pytest.mark.parametrize("dr_lab", [3], indirect=True)``.
            A module that wants one lab for several tests builds its own module-scoped fixture
            with ``with dr_lab_context(count) as lab: yield lab`` and calls ``lab.reset()``;
            ``dr_lab_context(count, real_server_setup=False)`` leaves the real servers without
            the VIP on lo and the ARP sysctls (they serve only their own address).

Every name carries a random tag, so labs and namespaces of concurrent tests never collide, and
everything a fixture made (processes, namespaces, the links inside them) is removed even when
the test fails. Addresses are TEST-NET and exist only inside the namespaces.

Under emulation every process costs ~0.3-1 s, so the lab is built with one ``ip -batch`` per
namespace, and sysctls, sockets and HTTP requests are made from Python threads that entered the
namespace (a thread's network namespace is its own) rather than with ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from lvsd.ipvs.netlink import NetlinkIpvs

NO_KERNEL_REASON = "needs a kernel with IPVS (run tests/vm/run-integration.sh)"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


# With TEST_WORKERS=2, run-integration.sh runs the modules on two pytest-xdist workers (on one,
# the guest idled a third of the time). Each module stays whole on one worker, so its shared
# lab is built once, and the modules that need every scheduler module loaded run on the same
# worker as the fault test that unloads one (test_faults_kernel's scheduler_the_kernel_lacks).
# A scheduler of our own: pytest 9.2 ignores the node ids that xdist's --dist loadgroup rewrites.
NEEDS_EVERY_SCHEDULER = frozenset({"test_faults_kernel", "test_saveformat_kernel",
                                   "test_config_kernel", "test_plan_kernel", "test_netlink"})


def work_unit_of(nodeid: str) -> str:
    """The unit one worker runs whole: the test's module, or the scheduler group."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return "every-scheduler" if module in NEEDS_EVERY_SCHEDULER else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit_of(nodeid)

    return ByModule(config, log)  # type: ignore[arg-type]


def _require_kernel() -> None:
    if os.environ.get("RUN_IN_VM") != "1" and not os.path.exists("/proc/net/ip_vs"):
        pytest.skip(NO_KERNEL_REASON)


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns({name}): {os.strerror(code)}")
    finally:
        os.close(fd)


def in_netns(name: str, work: Callable[[], T]) -> T:
    """Run ``work`` in a new thread that has entered network namespace ``name``.

    Sockets keep the namespace they were created in, so a socket made here can be used from
    any thread afterwards; /proc/sys/net read or written here is the namespace's.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            enter_netns(name)
            outcome.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=enter_and_work, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def http_get_in_netns(name: str, port: int, path: str, *, timeout: float
                      ) -> tuple[int | None, str]:
    """(status, body) of ``GET path`` on 127.0.0.1:``port`` in namespace ``name``, asked from
    a thread there (no process: under emulation each costs about half a second), or (None,
    why) if nothing answered within ``timeout`` s."""

    def get() -> tuple[int | None, str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            return None, str(exc)
        finally:
            connection.close()

    return in_netns(name, get)


def run_in_netns(name: str, cmd: Sequence[str], stdin: bytes | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """``cmd`` run inside namespace ``name``, spawned from a thread that entered it: no
    ``ip netns exec`` process in between (the child inherits the thread's network namespace)."""
    return in_netns(name, lambda: subprocess.run(list(cmd), input=stdin, capture_output=True,
                                                 timeout=timeout, check=False))


class Namespace(str):
    """A network namespace's name that can run commands inside it."""

    def run(self, *cmd: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ip", "netns", "exec", self, *cmd], check=False, input=stdin,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode:
            raise RuntimeError(f"in {self}: {' '.join(cmd)!r} exited {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def ip(self, *args: str) -> None:
        _run(["ip", "-n", self, *args])

    def ip_batch(self, commands: Sequence[str]) -> None:
        """Several ``ip`` commands (without the leading ``ip``) in one process."""
        _run(["ip", "-n", self, "-batch", "-"], "\n".join(commands) + "\n")

    def sysctl(self, *settings: str) -> None:
        """``sysctl -w`` for settings like ``net.ipv4.conf.all.arp_ignore=1``."""

        def write() -> None:
            for setting in settings:
                key, value = setting.split("=", 1)
                Path("/proc/sys", *key.split(".")).write_text(value)

        in_netns(self, write)

    def socket(self, family: int = socket.AF_INET,
               kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket inside this namespace."""
        return in_netns(self, lambda: socket.socket(family, kind))


def _run(cmd: Sequence[str], stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False,
                          timeout=60)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}"
                           + (f"\n{stdin}" if stdin else ""))


def create_namespace(name: str) -> Namespace:
    ns = Namespace(name)
    _run(["ip", "netns", "add", ns])
    # Without lo up, adding an IPVS destination fails with EINVAL (no local routes yet).
    ns.ip("link", "set", "lo", "up")
    return ns


def delete_namespaces(names: Sequence[str]) -> None:
    if names:
        subprocess.run(["ip", "-force", "-batch", "-"], capture_output=True, check=False,
                       input="".join(f"netns del {name}\n" for name in names), text=True,
                       timeout=60)


@pytest.fixture
def ipvs_kernel() -> None:
    """Skips (and so fails run-integration.sh) where the kernel has no IPVS."""
    _require_kernel()


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh network namespace (and so a fresh, empty IPVS table) with lo up."""
    _require_kernel()
    ns = create_namespace(f"lvsd-{_tag()}")
    try:
        yield ns
    finally:
        delete_namespaces([ns])


@pytest.fixture
async def ipvs(netns: Namespace) -> AsyncIterator[NetlinkIpvs]:
    backend = NetlinkIpvs(netns)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(scope="session")
def kernel_schedulers() -> Sequence[str]:
    """The schedulers this kernel has modules (or built-ins) for."""
    from lvsd.model import SCHEDULERS

    modules = Path("/lib/modules", os.uname().release)
    builtin = modules / "modules.builtin"
    builtins = builtin.read_text() if builtin.exists() else ""
    return tuple(
        s for s in SCHEDULERS
        if any((modules / "kernel/net/netfilter/ipvs").glob(f"ip_vs_{s}.ko*"))
        or f"/ip_vs_{s}.ko" in builtins
    )


# --- HTTP from inside a namespace ---------------------------------------------------------------


def _request(host: str) -> bytes:
    return f"GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def _page(response: bytes) -> str | None:
    """The body of a 200 response, else None."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return None
    return body.decode(errors="replace").strip()


def get_page(ns: Namespace, address: str, port: int = 80, timeout: float = 2.0) -> str | None:
    """GET / from ``address`` on a new connection made inside ``ns`` (blocking)."""
    sock = ns.socket()
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.sendall(_request(address))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return _page(b"".join(chunks))
    except OSError:
        return None
    finally:
        sock.close()


async def get_page_async(ns: Namespace, address: str, port: int = 80,
                         per_request: float = 2.0) -> str | None:
    """GET / from ``address`` on a new connection made inside ``ns``, without blocking the loop."""
    loop = asyncio.get_running_loop()
    sock = ns.socket()
    try:
        sock.setblocking(False)
        async with asyncio.timeout(per_request):
            await loop.sock_connect(sock, (address, port))
            await loop.sock_sendall(sock, _request(address))
            chunks = []
            while chunk := await loop.sock_recv(sock, 65536):
                chunks.append(chunk)
        return _page(b"".join(chunks))
    except (OSError, TimeoutError):
        return None
    finally:
        sock.close()


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
    real_server_setup: bool = True  # the VIP on lo/32 and the ARP sysctls, as the seeds do
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
        _run(["ip", "-batch", "-"], "".join(
            [f"netns add {ns}\n" for ns in self._namespaces]
            + [f"link add br0 netns {sw} type bridge\n"]
            + [f"link add v{role} netns {sw} type veth peer name eth0 netns {ns}\n"
               for role, ns, _ in hosts]))
        sw.ip_batch(["link set lo up", "link set br0 up"]
                    + [f"link set v{role} master br0 up" for role, _, _ in hosts])
        for _, ns, address in hosts:
            commands = ["link set lo up", f"addr add {address}/24 dev eth0", "link set eth0 up"]
            if ns == self.director:
                commands.append(f"addr add {self.vip}/32 dev eth0")
            elif ns != self.client and self.real_server_setup:
                commands.append(f"addr add {self.vip}/32 dev lo")
            ns.ip_batch(commands)
        self.director.sysctl("net.ipv4.conf.all.send_redirects=0",
                             "net.ipv4.conf.default.send_redirects=0",
                             "net.ipv4.conf.eth0.send_redirects=0")
        for server in self.real_servers:
            if self.real_server_setup:
                server.ns.sysctl("net.ipv4.conf.all.arp_ignore=1",
                                 "net.ipv4.conf.all.arp_announce=2",
                                 "net.ipv4.conf.eth0.arp_ignore=1",
                                 "net.ipv4.conf.eth0.arp_announce=2")
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

    def _wait_serving(self, servers: Sequence[RealServer], timeout: float = 30.0) -> None:
        """Wait until the client fetches each server's page from its own address."""
        deadline = time.monotonic() + timeout
        for server in servers:
            while get_page(self.client, server.address, timeout=1.0) != server.label:
                if server.process is not None and server.process.poll() is not None:
                    raise RuntimeError(f"{server.label}'s HTTP server exited "
                                       f"({server.process.returncode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server.label} serves no page after {timeout} s")
                time.sleep(0.1)

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
        """Start one real server's HTTP process again and wait until it serves its page."""
        server = self.server(label)
        if server.process is None:
            self._spawn(server)
        await asyncio.to_thread(self._wait_serving, [server])

    async def fetch(self, count: int, per_request: float = 2.0) -> list[str | None]:
        """GET the VIP ``count`` times from the client, one after the other, each on a new
        connection; the label of the server that answered each, or None where one failed."""
        return [await get_page_async(self.client, self.vip, self.port, per_request)
                for _ in range(count)]

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
        delete_namespaces(list(reversed(self._namespaces)))
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


@contextmanager
def dr_lab_context(count: int = 2, *, real_server_setup: bool = True) -> Iterator[DrLab]:
    _require_kernel()
    lab = DrLab(_tag(), count, real_server_setup=real_server_setup)
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
