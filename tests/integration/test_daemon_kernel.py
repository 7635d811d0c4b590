"""``lvsd run`` over the seeds' DR lab on the real kernel: health drives the kernel weights.

One lab (client, director, three real servers serving real HTTP) for the whole module, and one
real daemon in the director's namespace (``running``) that each test reloads into its config
from the empty one, on an emptied table (``lab.reset``): a start costs 20-35 s in the emulated
VM. Tests of restarts and of settings only a start reads start daemons of their own (``lvsd``).
Checks use interval 1 s, timeout 0.5 s, retry interval 0.5 s, rise 2, fall 2: the issue's
bound for taking a failed server out is (fall - 1) * interval + timeout + 1 s = 2.5 s, measured
from the failure to lvsd's write into the kernel. (lvsd's own worst cases with these settings:
a refused server 1.5 s, a black hole interval + fall * timeout = 2 s.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from lvsd.ipvsadm.save import format_table
from tests.integration.conftest import DrLab, dr_lab_context
from tests.integration.daemon_support import LvsdProcess, kernel_weights, weights

VIP = "192.0.2.100"
WEB = f"tcp:{VIP}:80"
INTERVAL, TIMEOUT, RETRY, RISE, FALL = 1.0, 0.5, 0.5, 2, 2
DETECTION_BOUND = (FALL - 1) * INTERVAL + TIMEOUT + 1.0
ORIGIN = str(Path(__file__).with_name("origin_server.py"))


def service(servers: list[str], *, check: str = 'type = "http", path = "/"',
            extra: str = "", port: int = 80, server_extra: str = "",
            timeout: float = TIMEOUT) -> str:
    text = f"""
[[services]]
name = "web"
address = "{VIP}"
port = {port}
scheduler = "rr"
{extra}

[services.check]
{check.replace(", ", chr(10))}
interval = {INTERVAL}
timeout = {timeout}
retry_interval = {RETRY}
rise = {RISE}
fall = {FALL}
"""
    for address in servers:
        text += f'\n[[services.real_servers]]\naddress = "{address}"\n{server_extra}\n'
    return text


RS1, RS2, RS3 = "192.0.2.11", "192.0.2.12", "192.0.2.13"


def w(table_weights: dict[str, int], address: str, port: int = 80) -> int | None:
    return table_weights.get(f"tcp:{VIP}:{port} -> {address}:{port}")


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(3) as lab:
        yield lab


def restore_servers(lab: DrLab) -> None:
    """Undo what tests do to the real servers: a VIP removed, a black-hole route."""
    for server in lab.real_servers:
        server.ns.run("ip", "addr", "replace", f"{VIP}/32", "dev", "lo", check=False)
        server.ns.run("ip", "route", "del", "blackhole", f"{lab.director_address}/32",
                      check=False)


@pytest.fixture
async def lvsd(lab: DrLab) -> AsyncIterator[list[LvsdProcess]]:
    """Started daemons are stopped and the lab reset after the test, pass or fail."""
    lab.reset()
    started: list[LvsdProcess] = []
    yield started
    for process in started:
        process.cleanup()
    restore_servers(lab)
    lab.reset()


async def start(lab: DrLab, started: list[LvsdProcess], config: str) -> LvsdProcess:
    process = LvsdProcess(lab.director, config)
    started.append(process)
    await process.start()
    return process


# Between tests the shared daemon reloads this first: every service of the last test is deleted
# with its checks' health, weights and drains, so the next test's config starts from nothing.
EMPTY = "[daemon]\nallow_empty = true\n"


class SharedDaemon:
    """One ``lvsd run`` for the tests that need only "lvsd running config X": each reload costs
    a second or two in the emulated VM, a start 20-35 s. Between tests it runs the empty
    config, so the tests with daemons of their own have the kernel to themselves."""

    def __init__(self, director: str) -> None:
        self.director = director
        self.process: LvsdProcess | None = None
        self.empty = False

    def unhealthy(self) -> str | None:
        """Why the daemon cannot take the next test, if it cannot."""
        if self.process is None:
            return None
        if self.process.exited():
            return f"exited with {self.process.process and self.process.process.returncode}"
        if self.process.http("/healthz", timeout=10) != "ok":
            return "/healthz does not answer ok"
        return None

    async def empty_or_fresh(self) -> str | None:
        """The daemon running the empty config; a new one if it was dead or unhealthy (then
        why, with its log)."""
        replaced = None
        if self.process is not None and (why := self.unhealthy()):
            replaced = (f"shared lvsd {why}; started a fresh one. Its log:\n"
                        f"{self.process.log_tail()}")
            self.close()
        if self.process is None:
            # Its own API port: the tests with daemons of their own use the default one.
            self.process = LvsdProcess(self.director, EMPTY, listen_port=9164)
            # One start for the module: on a loaded emulator it has taken over 90 s.
            await self.process.start(timeout=300)
        elif not self.empty:
            await self.process.reload(EMPTY)
        self.empty = True
        return replaced

    async def run(self, config: str) -> LvsdProcess:
        assert self.process is not None
        self.empty = False
        await self.process.reload(config)
        return self.process

    def close(self) -> None:
        if self.process is not None:
            self.process.cleanup()
            self.process = None


@pytest.fixture(scope="module")
def shared_daemon(lab: DrLab) -> Iterator[SharedDaemon]:
    shared = SharedDaemon(lab.director)
    yield shared
    shared.close()


RunConfig = Callable[[str], Awaitable[LvsdProcess]]


@pytest.fixture
async def running(lab: DrLab, shared_daemon: SharedDaemon) -> AsyncIterator[RunConfig]:
    """``await running(config)``: the shared daemon reloaded into ``config``, its events from
    that reload on. Around the test it runs the empty config (a fresh one if the last test left
    it dead) and the lab is reset; a test that leaves it dead or unhealthy fails."""
    replaced = await shared_daemon.empty_or_fresh()
    if replaced:
        warnings.warn(replaced, stacklevel=1)
    lab.reset()
    yield shared_daemon.run
    restore_servers(lab)
    if why := shared_daemon.unhealthy():
        assert shared_daemon.process is not None
        log = shared_daemon.process.log_tail()
        shared_daemon.close()
        raise AssertionError(f"the shared lvsd {why} after this test; its log:\n{log}")
    await shared_daemon.empty_or_fresh()
    lab.reset()


async def taken_out_within_bound(process: LvsdProcess, address: str, failed_at: float,
                                 what: str, port: int = 80) -> None:
    """The kernel got weight 0 for the server within the detection bound of ``failed_at``.

    Measured to the moment lvsd's write returned (its log timestamp), so the test's own
    polling, slow in the emulated VM, does not count against lvsd."""
    await weight_becomes(process, address, 0, DETECTION_BOUND + 10, port)
    written = process.write_time(f"{address}:{port}", 0, failed_at)
    assert written is not None, f"{what}: no logged write of weight 0"
    took = written - failed_at
    assert took <= DETECTION_BOUND, f"{what}: out after {took:.2f} s, bound {DETECTION_BOUND} s"


async def weight_becomes(process: LvsdProcess, address: str, weight: int | None,
                         timeout: float, port: int = 80) -> float:
    return await process.wait_for(lambda: w(process.weights(), address, port) == weight,
                                  timeout, f"{address}:{port} weight {weight}")


async def test_converges_saves_like_ipvsadm_and_takes_a_killed_server_out_and_back(
        lab: DrLab, lvsd: list[LvsdProcess]) -> None:
    # A start of its own: run after the black-hole test, the shared daemon's save file
    # differed from ipvsadm-save -n (not yet explained).
    process = await start(lab, lvsd, service([RS1, RS2]))
    await weight_becomes(process, RS1, 1, 10)
    await weight_becomes(process, RS2, 1, 10)

    def saved_equals_kernel() -> bool:
        dump = subprocess.run(["ip", "netns", "exec", lab.director, "ipvsadm-save", "-n"],
                              capture_output=True, text=True, check=True).stdout
        return process.save_file.exists() and process.save_file.read_text() == dump
    await process.wait_for(saved_equals_kernel, 10, "save file == ipvsadm-save -n")

    answers = await lab.count_answers(6)
    assert answers == {"rs1": 3, "rs2": 3}

    lab.stop_server("rs1")  # returns once the server process is gone: the failure
    failed_at = time.time()
    await taken_out_within_bound(process, RS1, failed_at, "killed rs1")
    assert await lab.count_answers(6) == {"rs2": 6}
    (change,) = [e for e in process.events("health_change") if e.get("status") == "down"]
    assert change["server"] == f"{RS1}:80" and change["service"] == "web"
    assert "refused" in change["reason"]

    await lab.start_server("rs1")
    await weight_becomes(process, RS1, 1, RISE * INTERVAL + 5)
    assert await lab.count_answers(6) == {"rs1": 3, "rs2": 3}


async def test_black_hole_503_and_wrong_body_are_each_taken_out_and_back(
        lab: DrLab, running: RunConfig) -> None:
    rs1 = lab.server("rs1")
    lab.stop_server("rs1")
    origin = subprocess.Popen(["ip", "netns", "exec", rs1.ns, sys.executable, ORIGIN,
                               "--dir", rs1.directory], stdin=subprocess.DEVNULL)
    try:
        check = 'type = "http", path = "/", expect_status = [200], expect_body = "^rs[0-9]$"'
        process = await running(service([RS1, RS2], check=check))
        await weight_becomes(process, RS1, 1, 20)
        await weight_becomes(process, RS2, 1, 10)
        status_file = Path(rs1.directory, "status")
        page = Path(rs1.directory, "index.html")

        async def out_and_back(break_it: str, expected_reason: str, server: str,
                               fix: object, failed_at: float) -> None:
            await taken_out_within_bound(process, server, failed_at, break_it)
            reasons = [e["reason"] for e in process.events("health_change")
                       if e.get("status") == "down" and e.get("server") == f"{server}:80"]
            assert expected_reason in reasons[-1], (break_it, reasons)
            assert None not in await lab.fetch(4), "clients are answered by the others"
            assert callable(fix)
            fix()
            await weight_becomes(process, server, 1, RISE * INTERVAL + 5)

        failed_at = time.time()
        status_file.write_text("503")
        await out_and_back("503", "status 503", RS1, status_file.unlink, failed_at)

        failed_at = time.time()
        page.write_text("under maintenance")
        await out_and_back("wrong body", "body", RS1, lambda: page.write_text("rs1"), failed_at)

        # Black hole: rs2's answers to the director vanish; its probes time out.
        lab.server("rs2").ns.run("ip", "route", "add", "blackhole", f"{lab.director_address}/32")
        failed_at = time.time()  # the route exists from here on
        await out_and_back("black hole", "timeout", RS2, lambda: lab.server("rs2").ns.run(
            "ip", "route", "del", "blackhole", f"{lab.director_address}/32"), failed_at)
    finally:
        origin.terminate()
        origin.wait(10)


def make_certificates(directory: Path) -> None:
    """A CA, a certificate for www.lab.example and one for another name, signed by the CA."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=lvsd test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("www.lab.example", "other.example"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")


async def wait_serving_tls(lab: DrLab, label: str, timeout: float = 60.0) -> None:
    server = lab.server(label)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = lab.director.run("curl", "-sk", "-m", "2", f"https://{server.address}/",
                                  check=False)
        if answer.stdout == label:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{label} did not serve HTTPS within {timeout} s")


async def test_https_server_whose_certificate_does_not_match_stays_out(
        lab: DrLab, running: RunConfig, tmp_path: Path) -> None:
    make_certificates(tmp_path)
    origins = []
    for label, name in (("rs1", "www.lab.example"), ("rs2", "other.example")):
        server = lab.server(label)
        origins.append(subprocess.Popen(
            ["ip", "netns", "exec", server.ns, sys.executable, ORIGIN, "--dir", server.directory,
             "--port", "443", "--tls", str(tmp_path / f"{name}.pem"),
             str(tmp_path / f"{name}.key")], stdin=subprocess.DEVNULL))
    try:
        for label in ("rs1", "rs2"):  # a Python TLS server takes a while to start in the VM
            await wait_serving_tls(lab, label)
        check = (f'type = "https", path = "/", server_name = "www.lab.example", '
                 f'ca_file = "{tmp_path / "ca.pem"}"')
        process = await running(service([RS1, RS2], check=check, port=443, timeout=2.0))
        await weight_becomes(process, RS1, 1, 20, port=443)
        await asyncio.sleep(3 * INTERVAL)
        assert w(weights(process.table()), RS2, 443) == 0
        (rs2,) = [s for s in process.status()["services"][0]["servers"]
                  if s["server"] == f"{RS2}:443"]
        assert rs2["health"] == "down"
        reason = rs2["last_probe"]["reason"].lower()
        assert "tls" in reason and ("hostname" in reason or "mismatch" in reason), reason
    finally:
        for origin in origins:
            origin.terminate()
            origin.wait(10)


async def test_dr_path_check_keeps_a_server_without_the_vip_out(
        lab: DrLab, running: RunConfig) -> None:
    # Replies to DR-path probes come from the VIP, which the director holds itself.
    lab.director.sysctl("net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.eth0.accept_local=1")
    rs2 = lab.server("rs2")
    rs2.ns.run("ip", "addr", "del", f"{VIP}/32", "dev", "lo")
    check = 'type = "http", path = "/", dr_path = true'
    process = await running(service([RS1, RS2], check=check))
    await weight_becomes(process, RS1, 1, 20)
    await asyncio.sleep(3 * INTERVAL)
    assert w(weights(process.table()), RS2, 80) == 0
    # A plain probe to rs2's own address passes: only the DR path shows the mistake.
    plain = lab.director.run("curl", "-s", "-m", "2", f"http://{RS2}/")
    assert plain.stdout == "rs2"
    assert await lab.count_answers(6) == {"rs1": 6}

    rs2.ns.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    await weight_becomes(process, RS2, 1, RISE * INTERVAL + 5)
    assert await lab.count_answers(6) == {"rs1": 3, "rs2": 3}


async def test_all_down_fail_open_keeps_servers_and_sorry_server_takes_over(
        lab: DrLab, running: RunConfig) -> None:
    process = await running(service([RS1, RS2], extra="fail_open = true"))
    await weight_becomes(process, RS1, 1, 20)
    await weight_becomes(process, RS2, 1, 10)
    lab.stop_server("rs1")
    lab.stop_server("rs2")
    await process.wait_for(
        lambda: all(s["health"] == "down" for svc in process.status()["services"]
                    for s in svc["servers"]), DETECTION_BOUND + 5, "both down")
    table_weights = weights(process.table())
    assert (w(table_weights, RS1), w(table_weights, RS2)) == (1, 1), "fail-open keeps them in"

    process.write_config(service([RS1, RS2], extra=(
        f'sorry_server = {{ address = "{RS3}" }}')))
    process.send(signal.SIGHUP)
    await weight_becomes(process, RS3, 1, 10)
    table_weights = weights(process.table())
    assert (w(table_weights, RS1), w(table_weights, RS2)) == (0, 0)
    assert await lab.count_answers(4) == {"rs3": 4}

    await lab.start_server("rs1")
    await weight_becomes(process, RS1, 1, RISE * INTERVAL + 5)
    await weight_becomes(process, RS3, None, 5)


async def poll_weights(director: str, seen: list[dict[str, int]],
                       stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.append(await asyncio.to_thread(kernel_weights, director))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_restart_and_kill_9_change_no_weight_at_any_moment(
        lab: DrLab, lvsd: list[LvsdProcess]) -> None:
    process = await start(lab, lvsd, service([RS1, RS2]))
    await weight_becomes(process, RS1, 1, 20)
    await weight_becomes(process, RS2, 1, 10)
    healthy = weights(process.table())
    writes_before = len(process.events("table_change"))
    seen: list[dict[str, int]] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_weights(lab.director, seen, stop))
    try:
        assert await process.stop(signal.SIGTERM) == 0
        await process.start()
        await asyncio.sleep(3 * INTERVAL)  # first results come in
        await process.stop(signal.SIGKILL)
        await process.start()
        await asyncio.sleep(3 * INTERVAL)
    finally:
        stop.set()
        await poller
    assert len(seen) > 20
    changed = [snapshot for snapshot in seen if snapshot != healthy]
    assert not changed, f"{len(changed)} of {len(seen)} polls differed, e.g. {changed[0]}"
    assert process.events("table_change")[writes_before:] == [], "restarts wrote nothing"


async def test_reload_edits_once_keeps_health_and_survives_broken_files(
        lab: DrLab, running: RunConfig) -> None:
    process = await running(service([RS1, RS2]))
    await weight_becomes(process, RS1, 1, 20)
    await weight_becomes(process, RS2, 1, 10)
    lab.stop_server("rs1")
    await weight_becomes(process, RS1, 0, DETECTION_BOUND + 5)
    before = len(process.events("table_change"))

    process.write_config(service([RS1, RS2], server_extra="weight = 1").replace(
        f'address = "{RS2}"\nweight = 1', f'address = "{RS2}"\nweight = 3'))
    process.send(signal.SIGHUP)
    await weight_becomes(process, RS2, 3, 10)
    await asyncio.sleep(1)
    changes = process.events("table_change")[before:]
    assert [(c["op"], c.get("server"), c.get("weight")) for c in changes] == [
        ("edit_dest", f"{RS2}:80", 3)]
    assert w(weights(process.table()), RS1) == 0, "a server that was down stays down"

    good = process.config_path.read_text()
    process.write_config("[[services]]\naddress = 'not-an-address'\nport = 80\n")
    process.send(signal.SIGHUP)
    await process.wait_for(lambda: bool(process.events("reload_failed")), 10, "reload_failed")
    reload_status = process.status()["last_reload"]
    assert reload_status["ok"] is False
    assert "services[0] " in reload_status["error"]
    assert ".address: not an IP address" in reload_status["error"]
    assert w(weights(process.table()), RS2) == 3, "the old config keeps running"

    # 100 SIGHUPs in 10 s, valid and broken files alternating.
    broken = "[[services]]\nport = 'eighty'\n"
    for index in range(100):
        process.config_path.write_text(good if index % 2 else broken)
        process.send(signal.SIGHUP)
        await asyncio.sleep(0.1)
    process.config_path.write_text(good)
    process.send(signal.SIGHUP)
    await asyncio.sleep(2)
    assert not process.exited()
    assert process.http("/healthz") == "ok"
    await lab.start_server("rs1")
    await weight_becomes(process, RS1, 1, RISE * INTERVAL + 5)
    assert w(weights(process.table()), RS2) == 3


async def test_ipvsadm_clear_is_repaired_and_a_foreign_service_survives(
        lab: DrLab, lvsd: list[LvsdProcess]) -> None:
    resync = 3.0
    config = f'[daemon]\nresync_interval = "{resync}s"\n' + service([RS1, RS2])
    process = await start(lab, lvsd, config)
    await weight_becomes(process, RS1, 1, 20)
    await weight_becomes(process, RS2, 1, 10)
    expected = weights(process.table())

    lab.director.run("ipvsadm", "-C")
    lab.director.run("ipvsadm", "-A", "-t", "192.0.2.200:80", "-s", "wlc")
    lab.director.run("ipvsadm", "-a", "-t", "192.0.2.200:80", "-r", f"{RS3}:80", "-g")
    took = await process.wait_for(
        lambda: {k: v for k, v in process.weights().items() if k.startswith(WEB)}
        == expected, resync + 5, "table repaired")
    assert took <= resync + 2
    await asyncio.sleep(2 * resync)
    table = process.table()
    assert weights(table)[f"tcp:192.0.2.200:80 -> {RS3}:80"] == 1, "foreign service untouched"
    assert len(table.services) == 2
    assert format_table(table).count("-A ") == 2


async def test_a_removed_server_is_drained_before_it_is_deleted(
        lab: DrLab, running: RunConfig) -> None:
    config = "[timeouts]\ntcp = 900\ntcpfin = 2\nudp = 300\n" + service([RS1, RS2])
    process = await running(config)
    await weight_becomes(process, RS1, 1, 20)
    await weight_becomes(process, RS2, 1, 10)

    holder = (
        "import socket, sys\n"
        f"conns = [socket.create_connection(('{VIP}', 80), timeout=5) for _ in range(2)]\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "for c in conns:\n"
        "    c.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    data = b''\n"
        "    while chunk := c.recv(4096):\n"
        "        data += chunk\n"
        "    print(data.split(b'\\r\\n\\r\\n', 1)[-1].decode(), flush=True)\n"
        "    c.close()\n")
    client = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lab.client, sys.executable, "-c", holder,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert client.stdin is not None and client.stdout is not None
    assert (await asyncio.wait_for(client.stdout.readline(), 30)).strip() == b"open"
    try:
        process.write_config(config.replace(f'\n[[services.real_servers]]\naddress = "{RS2}"\n',
                                            "\n"))
        process.send(signal.SIGHUP)
        await weight_becomes(process, RS2, 0, 10)
        assert any(e.get("server") == f"{RS2}:80" for e in process.events("drain_start"))
        client.stdin.write(b"go\n")
        await client.stdin.drain()
        out, _ = await asyncio.wait_for(client.communicate(), 30)
        assert sorted(out.decode().split()) == ["rs1", "rs2"], "held connections complete"
    finally:
        if client.returncode is None:
            client.kill()
    await weight_becomes(process, RS2, None, 30)
    ends = [e for e in process.events("drain_end") if e.get("server") == f"{RS2}:80"]
    assert ends and ends[-1]["reason"] in ("idle", "gone")
