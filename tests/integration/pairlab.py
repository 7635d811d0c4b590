"""The director-pair lab of issue 12: client, router, two directors, three DR real servers.

    with pair_lab(mode="vrrp") as lab:       # keepalived -P moves the VIP between d1 and d2
        lab.start_keepalived()
        await lab.wait_master(lab.d1)
        flows = FlowHarness(lab, 50)
        await flows.open()
        lab.die_silently(lab.d1)
        report = await flows.finish(run_for=3.0)
        assert report.lost == []

Topology (one ``ip -batch`` per namespace, names carry a random tag):

- client 203.0.113.10 <-> router 203.0.113.1; the client's default route is the router;
- router 192.0.2.1 on a bridge ``br0`` in the router namespace, with d1 192.0.2.11, d2
  192.0.2.12 and rs1..rs3 192.0.2.21-23 each on a veth port of it; all default via .1;
- the VIP 198.51.100.10: the real servers hold it on ``lo``/32 (arp_ignore=1, arp_announce=2)
  and each serves a distinct page over HTTP on port 80 and a TCP echo on ``ECHO_PORT``.
- ``mode="vrrp"``: the directors hold nothing until keepalived (VRRP only, ``keepalived -P``,
  VRRPv3 with ``advert_int`` ``ADVERT_INT``) puts the VIP on the master's ``eth0``; the router
  reaches it by ARP. ``mode="ecmp"``: both directors hold the VIP on a dummy ``vip0``; the
  router has a multipath route to it via d1 and d2 (``static_ecmp=False`` leaves the route to
  a routing daemon) with ``fib_multipath_hash_policy=1``.

Every director has ``sync_threshold = "3 10"`` and ``sync_refresh_period = 1``, so a long-lived
flow is (re)synced every second or two instead of every 50 packets.

The echo servers run in one thread of the test process (sockets made inside each real server's
namespace), so the lab costs no Python process per server. A director "dies silently" when its
bridge port is disabled: every frame to and from it is dropped, its links stay up, and nothing
on it notices.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.integration.conftest import (
    Namespace,
    RealServer,
    _httpd_command,
    _require_kernel,
    _run,
    _tag,
    delete_namespaces,
    get_page,
    in_netns,
)

VIP = "198.51.100.10"
HTTP_PORT = 80
ECHO_PORT = 7000
CLIENT, ROUTER_OUTSIDE = "203.0.113.10", "203.0.113.1"
ROUTER, D1, D2 = "192.0.2.1", "192.0.2.11", "192.0.2.12"
REAL_SERVERS = ("192.0.2.21", "192.0.2.22", "192.0.2.23")
VRID = 51
# VRRPv3 takes centiseconds; master-down is ~3.2 adverts (~1.6 s). Not shorter: a loaded
# emulator that misses three adverts in a row would fail the pair over by itself.
ADVERT_INT = 0.5
PRIORITIES = {"d1": 150, "d2": 100}
SYNC_THRESHOLD = "3 10"
SYNC_REFRESH_PERIOD = 1
FLOW_INTERVAL = 0.2
# The flows' client ports, below the ephemeral range: no port is used twice in one lab, so an
# IPVS connection entry left behind by an earlier test never matches a later test's flow.
FIRST_CLIENT_PORT, LAST_CLIENT_PORT = 20000, 32767
CONNECT_ATTEMPTS = 3

Mode = Literal["vrrp", "ecmp"]


@dataclass
class Director:
    label: str  # "d1"
    ns: Namespace
    address: str
    port: str  # its bridge port in the router namespace
    keepalived: subprocess.Popen[bytes] | None = None
    keepalived_conf: Path | None = None
    track_file: Path | None = None
    notify_fifo: Path | None = None


class EchoServers:
    """TCP echo servers on ``ECHO_PORT`` in each real server's namespace, served by one thread."""

    def __init__(self, namespaces: Sequence[Namespace]) -> None:
        self._selector = selectors.DefaultSelector()
        self._stop_r, self._stop_w = socket.socketpair()
        self._selector.register(self._stop_r, selectors.EVENT_READ, None)
        self.connections = 0
        for ns in namespaces:
            listener = in_netns(ns, lambda: socket.create_server(("0.0.0.0", ECHO_PORT),
                                                                 backlog=256))
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, "listen")
        self._thread = threading.Thread(target=self._serve, name="pairlab-echo", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is None:
                    self._close_all()
                    return
                if key.data == "listen":
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self.connections += 1
                    self._selector.register(conn, selectors.EVENT_READ, "conn")
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        sock.sendall(data)
                        continue
                except OSError:
                    pass
                self._selector.unregister(sock)
                sock.close()

    def _close_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            fileobj = key.fileobj
            assert isinstance(fileobj, socket.socket)
            fileobj.close()
        self._selector.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop_w.send(b"x")
            self._thread.join(10)
        self._stop_w.close()


@dataclass
class PairLab:
    tag: str
    mode: Mode = "vrrp"
    static_ecmp: bool = True
    vip: str = VIP
    router: Namespace = field(init=False)
    client: Namespace = field(init=False)
    d1: Director = field(init=False)
    d2: Director = field(init=False)
    real_servers: list[RealServer] = field(default_factory=list)
    echo: EchoServers | None = None
    dir: Path = field(init=False)
    _namespaces: list[Namespace] = field(default_factory=list)
    _client_ports: Iterator[int] = field(
        default_factory=lambda: itertools.count(FIRST_CLIENT_PORT))

    def client_port(self) -> int:
        """A client port no flow of this lab used before."""
        port = next(self._client_ports)
        if port > LAST_CLIENT_PORT:
            raise RuntimeError(f"the lab's client ports {FIRST_CLIENT_PORT}-{LAST_CLIENT_PORT} "
                               "are used up")
        return port

    @property
    def directors(self) -> tuple[Director, Director]:
        return self.d1, self.d2

    def _name(self, role: str) -> Namespace:
        ns = Namespace(f"lvsd-{self.tag}-{role}")
        self._namespaces.append(ns)  # recorded first: cleanup covers a half-built lab
        return ns

    def build(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"lvsd-pair-{self.tag}-"))
        self.router, self.client = self._name("rt"), self._name("cl")
        self.d1 = Director("d1", self._name("d1"), D1, "vd1")
        self.d2 = Director("d2", self._name("d2"), D2, "vd2")
        for index, address in enumerate(REAL_SERVERS, 1):
            label = f"rs{index}"
            directory = self.dir / label
            directory.mkdir()
            (directory / "index.html").write_text(label)
            self.real_servers.append(RealServer(label, self._name(label), address,
                                                str(directory)))
        segment = [(d.port, d.ns, d.address) for d in self.directors] + [
            (f"v{s.label}", s.ns, s.address) for s in self.real_servers]
        rt = self.router
        _run(["ip", "-batch", "-"], "".join(
            [f"netns add {ns}\n" for ns in self._namespaces]
            + [f"link add br0 netns {rt} type bridge\n",
               f"link add vcl netns {rt} type veth peer name eth0 netns {self.client}\n"]
            + [f"link add {port} netns {rt} type veth peer name eth0 netns {ns}\n"
               for port, ns, _ in segment]))
        router_cmds = ["link set lo up", "link set br0 type bridge stp_state 0",
                       f"addr add {ROUTER}/24 dev br0", "link set br0 up",
                       f"addr add {ROUTER_OUTSIDE}/24 dev vcl", "link set vcl up"]
        router_cmds += [f"link set {port} master br0 up" for port, _, _ in segment]
        if self.mode == "vrrp":
            router_cmds.append(f"route add {self.vip}/32 dev br0 scope link")
        elif self.static_ecmp:
            router_cmds.append(f"route add {self.vip}/32 nexthop via {D1} dev br0 "
                               f"nexthop via {D2} dev br0")
        rt.ip_batch(router_cmds)
        rt.sysctl("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
                  "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.br0.send_redirects=0")
        self.client.ip_batch(["link set lo up", f"addr add {CLIENT}/24 dev eth0",
                              "link set eth0 up", f"route add default via {ROUTER_OUTSIDE}"])
        for director in self.directors:
            cmds = ["link set lo up", f"addr add {director.address}/24 dev eth0",
                    "link set eth0 up", f"route add default via {ROUTER}"]
            if self.mode == "ecmp":
                cmds += ["link add vip0 type dummy", "link set vip0 up",
                         f"addr add {self.vip}/32 dev vip0"]
            director.ns.ip_batch(cmds)
            director.ns.sysctl("net.ipv4.conf.all.send_redirects=0",
                               "net.ipv4.conf.default.send_redirects=0",
                               "net.ipv4.conf.eth0.send_redirects=0")
        for server in self.real_servers:
            server.ns.ip_batch(["link set lo up", f"addr add {server.address}/24 dev eth0",
                                "link set eth0 up", f"route add default via {ROUTER}",
                                f"addr add {self.vip}/32 dev lo"])
            server.ns.sysctl("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                             "net.ipv4.conf.eth0.arp_ignore=1",
                             "net.ipv4.conf.eth0.arp_announce=2")
            server.process = subprocess.Popen(
                ["ip", "netns", "exec", server.ns, *_httpd_command(server.directory)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.echo = EchoServers([s.ns for s in self.real_servers])
        self._wait_serving()

    def director_sysctls(self, **settings: str) -> None:
        """IPVS sysctls (``sync_threshold="3 10"``) on both directors (needs the ip_vs module,
        which the first IPVS socket or ipvsadm of the namespace loads)."""
        for director in self.directors:
            director.ns.sysctl(*(f"net.ipv4.vs.{key}={value}" for key, value in settings.items()))

    def sync_sysctls(self) -> None:
        self.director_sysctls(sync_threshold=SYNC_THRESHOLD,
                              sync_refresh_period=str(SYNC_REFRESH_PERIOD))

    def _wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for server in self.real_servers:
            while get_page(self.client, server.address, timeout=1.0) != server.label:
                if server.process is not None and server.process.poll() is not None:
                    raise RuntimeError(f"{server.label}'s HTTP server exited")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server.label} serves no page after {timeout} s")
                time.sleep(0.1)

    # --- keepalived (VRRP only) ---------------------------------------------------------------

    def keepalived_config(self, director: Director, *, priority: int | None = None,
                          extra_global: str = "", extra_instance: str = "",
                          vip: str | None = None) -> str:
        assert director.track_file is not None and director.notify_fifo is not None
        peer = self.d2 if director is self.d1 else self.d1
        return f"""global_defs {{
    router_id {director.label}
    vrrp_version 3
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 2
    vrrp_notify_fifo {director.notify_fifo}
    script_user root
    {extra_global}
}}
track_file lvsd {{
    file {director.track_file}
    weight -100
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {priority or PRIORITIES[director.label]}
    advert_int {ADVERT_INT}
    unicast_src_ip {director.address}
    unicast_peer {{
        {peer.address}
    }}
    track_file {{
        lvsd
    }}
    virtual_ipaddress {{
        {vip or self.vip}/32 dev eth0
    }}
    {extra_instance}
}}
"""

    def start_keepalived(self, *, extra_global: str = "", extra_instance: str = "",
                         vip: str | None = None) -> None:
        """keepalived -P on both directors (d1 has the higher priority, so it becomes master);
        ``vip``: the address VRRP moves, if not the lab's VIP (an ECMP lab's second VIP).

        Each director's keepalived reads ``track_file`` (written 0 here: no penalty) and writes
        state lines to ``notify_fifo``, both under the lab's directory.
        """
        for director in self.directors:
            base = self.dir / director.label
            base.mkdir(exist_ok=True)
            director.track_file = base / "track"
            director.track_file.write_text("0\n")
            director.notify_fifo = base / "notify.fifo"
            if not director.notify_fifo.exists():
                os.mkfifo(director.notify_fifo)
            director.keepalived_conf = base / "keepalived.conf"
            director.keepalived_conf.write_text(self.keepalived_config(
                director, extra_global=extra_global, extra_instance=extra_instance, vip=vip))
            log = (base / "keepalived.log").open("ab")
            director.keepalived = subprocess.Popen(
                ["ip", "netns", "exec", director.ns, "keepalived", "-P", "-n", "-l", "-D", "-G",
                 "-f", str(director.keepalived_conf), "-p", str(base / "keepalived.pid"),
                 "-r", str(base / "vrrp.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def keepalived_log(self, director: Director) -> str:
        path = self.dir / director.label / "keepalived.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_keepalived(self) -> None:
        for director in self.directors:
            if director.keepalived is not None and director.keepalived.poll() is None:
                director.keepalived.send_signal(signal.SIGTERM)
                try:
                    director.keepalived.wait(10)
                except subprocess.TimeoutExpired:
                    director.keepalived.kill()
                    director.keepalived.wait(10)
            director.keepalived = None

    def holds_vip(self, director: Director, vip: str | None = None) -> bool:
        result = director.ns.run("ip", "-o", "-4", "addr", "show", "dev", "eth0", check=False)
        return f" {vip or self.vip}/32 " in result.stdout

    async def wait_master(self, director: Director, timeout: float = 30.0,
                          vip: str | None = None) -> None:
        """Wait until ``director`` holds the VIP (or ``vip``) on eth0 and the other does not."""
        other = self.d2 if director is self.d1 else self.d1
        deadline = time.monotonic() + timeout
        while not (self.holds_vip(director, vip) and not self.holds_vip(other, vip)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{director.label} not the only VIP holder after {timeout} s"
                                   f"; keepalived said:\n{self.keepalived_log(director)[-3000:]}")
            await asyncio.sleep(0.1)

    def set_track(self, director: Director, value: int) -> None:
        """Write the value keepalived's ``track_file`` holds (non-zero: priority -100)."""
        assert director.track_file is not None
        tmp = director.track_file.with_suffix(".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, director.track_file)

    # --- failures -------------------------------------------------------------------------------

    def die_silently(self, director: Director) -> None:
        """Drop every frame to and from ``director`` at its bridge port (links stay up)."""
        # `ip link set … type bridge_slave state` is silently ignored on a port with carrier.
        _run(["bridge", "-n", self.router, "link", "set", "dev", director.port, "state", "0"])

    def revive(self, director: Director) -> None:
        _run(["bridge", "-n", self.router, "link", "set", "dev", director.port, "state", "3"])

    def withdraw_nexthop(self, director: Director) -> None:
        """ECMP: the router's route to the VIP keeps only the other director."""
        other = self.d2 if director is self.d1 else self.d1
        self.router.ip_batch([f"route replace {self.vip}/32 via {other.address} dev br0"])

    def restore_nexthops(self) -> None:
        self.router.ip_batch([f"route replace {self.vip}/32 nexthop via {D1} dev br0 "
                              f"nexthop via {D2} dev br0"])

    def connections(self, director: Director, port: int = ECHO_PORT) -> dict[int, Connection]:
        """``director``'s IPVS connection entries to VIP:``port`` by client port."""
        return in_netns(director.ns, lambda: read_connections(self.vip, port))

    def close(self) -> None:
        self.stop_keepalived()
        if self.echo is not None:
            self.echo.close()
        for server in self.real_servers:
            if server.process is not None and server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
        delete_namespaces(list(reversed(self._namespaces)))
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Connection:
    """One IPVS connection entry: its TCP state and the real server it goes to."""

    state: str
    real_server: str


def read_connections(vip: str, port: int) -> dict[int, Connection]:
    """The calling thread's namespace's IPVS connections to ``vip``:``port`` by client port,
    from /proc/net/ip_vs_conn (hex fields: proto caddr cport vaddr vport daddr dport state
    expires); no process spawned, so it is cheap enough to read while flows run."""
    vip_hex, port_hex = f"{int(ipaddress.IPv4Address(vip)):08X}", f"{port:04X}"
    found: dict[int, Connection] = {}
    for line in Path("/proc/thread-self/net/ip_vs_conn").read_text().splitlines()[1:]:
        words = line.split()
        if len(words) >= 8 and words[0] == "TCP" and (words[3], words[4]) == (vip_hex, port_hex):
            found[int(words[2], 16)] = Connection(
                words[7], str(ipaddress.IPv4Address(int(words[5], 16))))
    return found


@contextmanager
def pair_lab(mode: Mode = "vrrp", *, static_ecmp: bool = True) -> Iterator[PairLab]:
    _require_kernel()
    lab = PairLab(_tag(), mode, static_ecmp)
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


# --- the flow harness ------------------------------------------------------------------------


@dataclass
class FlowReport:
    """What became of each flow: ``lost`` holds every flow that was reset, closed, or left a
    message unanswered (sorted flow numbers); ``reset`` those the peer reset or closed."""

    flows: int
    lost: list[int]
    reset: list[int]
    sent: list[int]
    echoed: list[int]
    longest_stall: float  # seconds, the longest wait for one echo across all flows

    def __str__(self) -> str:
        return (f"{len(self.lost)} of {self.flows} flows lost ({len(self.reset)} reset); "
                f"{sum(self.echoed)}/{sum(self.sent)} messages echoed; longest stall "
                f"{self.longest_stall:.2f} s")


@dataclass
class _Flow:
    index: int
    port: int  # the client's
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0
    echoed: int = 0
    broken: str = ""
    reset: bool = False
    waiting_since: float | None = None
    longest_stall: float = 0.0


class FlowHarness:
    """``count`` long-lived TCP flows from the client to VIP:``ECHO_PORT``, each sending a
    numbered line every ``FLOW_INTERVAL`` and checking that each comes back, in order."""

    def __init__(self, lab: PairLab, count: int, port: int = ECHO_PORT) -> None:
        self.lab = lab
        self.count = count
        self.port = port
        self._flows: list[_Flow] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = asyncio.Event()

    async def open(self, timeout: float = 20.0) -> None:
        """Connect every flow (through whichever director holds the VIP) and start them."""
        loop = asyncio.get_running_loop()

        async def connect(index: int, port: int) -> _Flow:
            # A refused connect happens before any death and says nothing about one (seen once
            # in the rr control, cause not found): the flow tries again on a fresh port.
            attempt = 1
            while True:
                sock = self.lab.client.socket()
                sock.setblocking(False)
                try:
                    sock.bind((CLIENT, port))
                    await loop.sock_connect(sock, (self.lab.vip, self.port))
                except ConnectionRefusedError:
                    sock.close()
                    if attempt == CONNECT_ATTEMPTS:
                        raise
                except BaseException:
                    sock.close()
                    raise
                else:
                    reader, writer = await asyncio.open_connection(sock=sock)
                    return _Flow(index, port, reader, writer)
                attempt += 1
                port = self.lab.client_port()
                await asyncio.sleep(0.2)

        async with asyncio.timeout(timeout):
            self._flows = list(await asyncio.gather(
                *(connect(i, self.lab.client_port()) for i in range(self.count))))
        self._sending.set()
        self._tasks = [asyncio.create_task(self._send_all())]
        self._tasks += [asyncio.create_task(self._read(flow)) for flow in self._flows]
        # A flow is synced once it is established and its third packet has passed.
        await self.wait_echoed(3, timeout)

    async def _send_all(self) -> None:
        next_at = time.monotonic()
        while self._sending.is_set():
            now = time.monotonic()
            # A new order every round, as independent clients would send: in lock-step order
            # the flows reach a director taking them over in the order they first reached the
            # one that died, and two rr schedulers whose rotations happen to line up then pick
            # the same real server for every moved flow.
            for flow in random.sample(self._flows, len(self._flows)):
                if flow.broken:
                    continue
                flow.sent += 1
                if flow.waiting_since is None:
                    flow.waiting_since = now
                try:
                    flow.writer.write(f"{flow.sent}\n".encode())
                except (OSError, RuntimeError) as exc:
                    flow.broken = f"write: {exc}"
            next_at += FLOW_INTERVAL
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _read(self, flow: _Flow) -> None:
        while not flow.broken:
            try:
                line = await flow.reader.readline()
            except ConnectionResetError:
                flow.broken, flow.reset = "reset", True
                return
            except OSError as exc:
                flow.broken = f"read: {exc}"
                return
            if not line:
                flow.broken, flow.reset = "closed by the peer", True
                return
            if line != f"{flow.echoed + 1}\n".encode():
                flow.broken = f"message {flow.echoed + 1} came back as {line!r}"
                return
            flow.echoed += 1
            now = time.monotonic()
            if flow.waiting_since is not None:
                flow.longest_stall = max(flow.longest_stall, now - flow.waiting_since)
            flow.waiting_since = now if flow.echoed < flow.sent else None

    def lost_so_far(self) -> list[int]:
        """The flows broken until now (reset, closed or out of order), while still running."""
        return [flow.index for flow in self._flows if flow.broken]

    @property
    def ports(self) -> list[int]:
        """Each flow's client port, by flow number."""
        return [flow.port for flow in self._flows]

    async def wait_echoed(self, messages: int, timeout: float) -> list[int]:
        """Wait until every unbroken flow has had ``messages`` more echoes than now; return
        the flows that did not (stalled: neither broken nor echoing) within ``timeout``."""
        targets = {flow.index: flow.echoed + messages for flow in self._flows}

        def stalled() -> list[int]:
            return [f.index for f in self._flows if not f.broken and f.echoed < targets[f.index]]

        deadline = time.monotonic() + timeout
        while stalled() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return stalled()

    async def finish(self, run_for: float = 0.0, grace: float = 8.0) -> FlowReport:
        """Keep sending for ``run_for`` s, stop, wait up to ``grace`` s for the last echoes,
        close every flow and report."""
        await asyncio.sleep(run_for)
        self._sending.clear()
        deadline = time.monotonic() + grace
        while any(not f.broken and f.echoed < f.sent for f in self._flows) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for flow in self._flows:
            flow.writer.transport.abort()
        lost = [f.index for f in self._flows if f.broken or f.echoed < f.sent]
        return FlowReport(
            self.count, lost, [f.index for f in self._flows if f.reset],
            [f.sent for f in self._flows], [f.echoed for f in self._flows],
            max((f.longest_stall for f in self._flows), default=0.0))


# --- a director of an ECMP pair dies --------------------------------------------------------


@dataclass
class DirectorDeath:
    """What became of flows spread over an ECMP pair while one director was dead (and after
    it came back). Flow numbers, sorted; who carried a flow comes from the directors' IPVS
    connection tables, not from the flows."""

    flows: int
    through_dead: list[int]  # the flows the dying director carried
    misplaced: list[int]  # flows on neither director's table, or on both, before the death
    same_server: list[int]  # of through_dead: the survivor sent them to the same real server
    lost_on_death: list[int]  # reset, closed or out of order while it was dead
    stalled_on_death: list[int]  # neither broken nor echoing while it was dead
    stalled_on_return: list[int]  # the same once it was back (empty if it did not return)
    report: FlowReport  # at the end: after the return, or still during the death

    @property
    def moved_server(self) -> list[int]:
        """The dead director's flows that the survivor sent to another real server."""
        return sorted(set(self.through_dead) - set(self.same_server))

    def __str__(self) -> str:
        return (f"{len(self.through_dead)} of {self.flows} flows through the dying director, "
                f"{len(self.same_server)} of them kept their real server on the survivor; "
                f"during the death {len(self.lost_on_death)} lost {self.lost_on_death}, "
                f"{len(self.stalled_on_death)} stalled {self.stalled_on_death}; stalled after "
                f"the return {self.stalled_on_return}; misplaced {self.misplaced}; "
                f"at the end {self.report}")


async def ecmp_director_death(lab: PairLab, count: int, *, returns: bool, echoes: int = 10,
                              timeout: float = 15.0) -> DirectorDeath:
    """``count`` flows spread by the router's multipath route over both directors; d1 dies
    silently (the router's next hop via it withdrawn, its frames dropped) until every unbroken
    flow has had ``echoes`` more echoes (at most ``timeout`` s); with ``returns`` it comes back
    for ``echoes`` more, otherwise the flows are finished while it is still dead. d1 is alive
    and both next hops are back when this returns."""
    dead, survivor = lab.d1, lab.d2
    flows = FlowHarness(lab, count)
    await flows.open()
    try:
        ports = flows.ports
        on_dead, on_survivor = lab.connections(dead), lab.connections(survivor)
        lab.withdraw_nexthop(dead)
        lab.die_silently(dead)
        try:
            stalled_on_death = await flows.wait_echoed(echoes, timeout)
            lost_on_death = flows.lost_so_far()
            taken_over = lab.connections(survivor)
            if not returns:
                report = await flows.finish()
        finally:
            lab.revive(dead)
            lab.restore_nexthops()
        stalled_on_return = await flows.wait_echoed(echoes, timeout) if returns else []
        if returns:
            report = await flows.finish()
    except BaseException:
        await flows.finish(grace=0.0)
        raise
    through_dead = [i for i, port in enumerate(ports) if port in on_dead]
    misplaced = [i for i, port in enumerate(ports) if (port in on_dead) == (port in on_survivor)]
    same_server = [i for i in through_dead
                   if (entry := taken_over.get(ports[i])) is not None
                   and entry.real_server == on_dead[ports[i]].real_server]
    return DirectorDeath(count, through_dead, misplaced, same_server, lost_on_death,
                         stalled_on_death, stalled_on_return, report)
