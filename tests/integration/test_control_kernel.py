"""``lvsd ctl`` against the real daemon and the real kernel: one DR lab and one daemon (restarted
once, by ``kill -9``) for the module; each test leaves every server enabled.

The web service (port 80) has an HTTP check; a second service on port 8080 shares rs1 and rs2
without checks, so ``--host`` has two services to act on.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsd.cli_ctl import ControlClient
from tests.integration.conftest import DrLab, dr_lab_context
from tests.integration.control_lab import (
    ALL_SERVING,
    ALT,
    CONFIG,
    RS1,
    RS2,
    VIP,
    WEB,
    adopt_serving,
    table_weights,
)
from tests.integration.daemon_support import LvsdProcess

START_TIMEOUT = 180.0  # seconds: lvsd's imports alone take over a minute in a loaded emulator


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(2) as lab:
        yield lab


@pytest.fixture(scope="module")
def lvsd(lab: DrLab) -> Iterator[LvsdProcess]:
    # Adopted as serving: the servers need no first probe before they take traffic.
    adopt_serving(lab)
    for server in lab.real_servers:  # a download that lasts while the client reads slowly
        Path(server.directory, "big").write_bytes(server.label.encode() * (BIG // 3))
    process = LvsdProcess(lab.director, CONFIG)
    try:
        asyncio.run(process.start(timeout=START_TIMEOUT))
        yield process
    finally:
        process.cleanup()


@pytest.fixture(autouse=True)
async def every_server_enabled(lvsd: LvsdProcess) -> AsyncIterator[None]:
    """Each test starts, and leaves, with no override (pass or fail)."""
    yield
    for host in (RS1, RS2):
        for action in ("enable", "clear-weight"):
            await call(lvsd, {"action": action, "host": host})




def ctl_ok(lvsd: LvsdProcess, *args: str) -> str:
    done = lvsd.ctl(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr, lvsd.log_tail())
    return done.stdout


async def call(lvsd: LvsdProcess, body: dict[str, Any] | None = None, *,
               data: bytes | None = None, path: str = "/admin") -> tuple[int, dict[str, Any]]:
    async with ControlClient(lvsd.control_socket) as client:
        return await client.call("POST", path, body, data=data)


BIG = 6_000_000  # bytes: far more than the socket buffers hold


def held_connection(lab: DrLab) -> tuple[socket.socket, bytes]:
    """A connection to the VIP in the middle of a download the client reads slowly: the
    server blocks in its write, the connection stays established as long as the test wants."""
    sock = lab.client.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect((VIP, 80))
    sock.sendall(f"GET /big HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
    return sock, sock.recv(1024)


def server_of(lab: DrLab, sock: socket.socket) -> str:
    """The real server IPVS forwards ``sock``'s connection to (``ipvsadm -Lcn``)."""
    port = sock.getsockname()[1]
    for line in lab.director.run("ipvsadm", "-Lcn").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == "TCP" and fields[3].endswith(f":{port}"):
            return fields[5].rsplit(":", 1)[0]
    raise AssertionError(f"no IPVS connection for client port {port}")


def finish(sock: socket.socket, first: bytes) -> str:
    """Read the rest of the download; the label of the server whose file it was."""
    chunks = [first]
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    assert len(body) == BIG // 3 * 3, f"the download was cut: {len(body)} bytes"
    return body[:3].decode()


async def test_drain_keeps_the_held_connection_sends_new_ones_elsewhere_and_outlives_kill_9(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    assert table_weights(lab) == ALL_SERVING
    held, first = await asyncio.to_thread(held_connection, lab)
    target = server_of(lab, held)
    label = "rs1" if target == RS1 else "rs2"
    out = ctl_ok(lvsd, "drain", "web", target)
    assert f"web {target}:80: drained; kernel weight 0" in out, out
    assert table_weights(lab)[f"{WEB} -> {target}:80"] == 0, "applied before ctl returned"
    answers = await lab.count_answers(6)
    assert answers[label] == 0 and sum(answers.values()) == 6 and None not in answers, answers
    assert await asyncio.to_thread(finish, held, first) == label, "the held one completed"

    await lvsd.stop(signal.SIGKILL)
    lab.director.run("ipvsadm", "-e", "-t", f"{VIP}:80", "-r", f"{target}:80", "-g", "-w", "1")
    await lvsd.start(timeout=START_TIMEOUT)
    await lvsd.wait_for(lambda: table_weights(lab)[f"{WEB} -> {target}:80"] == 0, 20,
                        "the drain restored after kill -9")
    server = next(s for s in lvsd.status()["services"][0]["servers"]
                  if s["address"] == target)
    assert server["admin"]["state"] == "drained", server

    status, answer = await call(lvsd, {"action": "undrain", "service": "web",
                                       "server": f"{target}:80"})
    assert status == 200 and answer["servers"][0]["kernel_weight"] == 1, answer
    assert table_weights(lab) == ALL_SERVING
    answers = await lab.count_answers(6)
    assert answers[label] >= 2, answers


async def test_host_drains_that_server_in_every_service(lab: DrLab, lvsd: LvsdProcess) -> None:
    status, answer = await call(lvsd, {"action": "drain", "host": RS1})
    assert status == 200 and len(answer["servers"]) == 2, answer
    assert table_weights(lab) == {**ALL_SERVING, f"{WEB} -> {RS1}:80": 0,
                                  f"{ALT} -> {RS1}:8080": 0}
    await call(lvsd, {"action": "undrain", "host": RS1})
    assert table_weights(lab) == ALL_SERVING


async def test_a_broken_reload_exits_non_zero_with_the_problem_and_the_old_config_runs_on(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    good = lvsd.config_path.read_bytes()
    lvsd.write_config(CONFIG.replace('scheduler = "rr"', 'scheduler = "nope"', 1))
    try:
        done = lvsd.ctl("reload")
    finally:
        lvsd.write_config_bytes(good)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "reload rejected, the old config runs on" in done.stderr
    assert "nope" in done.stderr, done.stderr
    assert table_weights(lab) == ALL_SERVING
    assert "-s rr" in lab.director.run("ipvsadm-save", "-n").stdout
    assert not lvsd.exited()


CALLER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = b'{"action": "drain", "host": "192.0.2.11"}'
s.sendall(b"POST /v1/admin HTTP/1.1\\r\\nHost: lvsd\\r\\nConnection: close\\r\\n"
          b"Content-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
print(s.makefile("rb").read().decode())
"""


async def test_a_caller_who_is_not_root_is_refused(lab: DrLab, lvsd: LvsdProcess) -> None:
    assert lvsd.control_socket.stat().st_mode & 0o777 == 0o600
    lvsd.control_socket.parent.chmod(0o755)
    lvsd.control_socket.chmod(0o666)  # past the file mode: the daemon's own check refuses
    done = subprocess.run(["/usr/bin/python3", "-c", CALLER, str(lvsd.control_socket)],
                          capture_output=True, text=True, check=True, timeout=60, user=65534)
    assert done.stdout.startswith("HTTP/1.1 403"), done.stdout
    assert "uid 65534" in done.stdout and "may not control lvsd" in done.stdout, done.stdout
    assert table_weights(lab) == ALL_SERVING


@pytest.mark.parametrize(("body", "data", "status", "error"), [
    (None, b'{"action": "drain", "service": "web", ', 400, "body: not JSON"),
    ({"action": "drain", "service": "shop", "server": RS1}, None, 404,
     "service: no service 'shop' in the config"),
    ({"action": "weight", "service": "web", "server": RS1, "weight": 65536}, None, 400,
     "weight: weight 65536 is out of range 0..65535"),
    ({"action": "weight", "service": "web", "server": RS1, "weight": 3, "for": "soon"}, None,
     400, "for: not a duration: 'soon'"),
], ids=["malformed", "unknown-service", "weight-out-of-range", "bad-duration"])
async def test_a_bad_request_changes_nothing_and_says_what_is_wrong(
        lab: DrLab, lvsd: LvsdProcess, body: dict[str, Any] | None, data: bytes | None,
        status: int, error: str) -> None:
    before = lab.director.run("ipvsadm-save", "-n").stdout
    state = (lvsd.state_dir / "state.json").read_text()
    got, answer = await call(lvsd, body, data=data)
    assert (got, answer["error"][:len(error)]) == (status, error), answer
    assert lab.director.run("ipvsadm-save", "-n").stdout == before
    assert (lvsd.state_dir / "state.json").read_text() == state


async def test_ten_clients_at_once_leave_a_consistent_table(lab: DrLab,
                                                           lvsd: LvsdProcess) -> None:
    requests = [{"action": "weight", "service": "alt", "server": RS2, "weight": n}
                for n in range(2, 7)]
    requests += [{"action": "drain" if n % 2 else "undrain", "host": RS1} for n in range(5)]
    answers = await asyncio.gather(*(call(lvsd, body) for body in requests))
    assert [status for status, _ in answers] == [200] * 10, answers
    for body, (_, answer) in zip(requests[:5], answers[:5], strict=True):
        assert answer["servers"][0]["kernel_weight"] == body["weight"], answer
    overrides = json.loads((lvsd.state_dir / "state.json").read_text())["overrides"]
    kept = {(tuple(s["service"]), tuple(s["server"])): s for s in overrides["servers"]}
    rs2_weight = next(s["weight"] for key, s in kept.items() if key[1] == (RS2, 8080))
    rs1_drained = any(s["state"] == "drained" for key, s in kept.items() if key[1][0] == RS1)
    table = table_weights(lab)
    assert table[f"{ALT} -> {RS2}:8080"] == rs2_weight
    assert table[f"{WEB} -> {RS1}:80"] == table[f"{ALT} -> {RS1}:8080"] == (
        0 if rs1_drained else 1)
    await call(lvsd, {"action": "clear-weight", "service": "alt", "server": RS2})
    await call(lvsd, {"action": "undrain", "host": RS1})
    assert table_weights(lab) == ALL_SERVING
