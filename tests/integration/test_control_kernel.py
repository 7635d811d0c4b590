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
from collections.abc import Iterator
from typing import Any

import pytest

from lvsd.cli_ctl import ControlClient
from tests.integration.conftest import DrLab, dr_lab_context
from tests.integration.daemon_support import LvsdProcess, kernel_table, weights

VIP = "192.0.2.100"
RS1, RS2 = "192.0.2.11", "192.0.2.12"
WEB, ALT = f"tcp:{VIP}:80", f"tcp:{VIP}:8080"

CONFIG = f"""
[daemon]
resync_interval = "5s"

[[services]]
name = "web"
address = "{VIP}"
port = 80
scheduler = "rr"
check = {{ type = "http", path = "/", interval = "1s", timeout = "1s", rise = 1, fall = 2 }}
[[services.real_servers]]
address = "{RS1}"
[[services.real_servers]]
address = "{RS2}"

[[services]]
name = "alt"
address = "{VIP}"
port = 8080
scheduler = "rr"
[[services.real_servers]]
address = "{RS1}"
[[services.real_servers]]
address = "{RS2}"
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(2) as lab:
        yield lab


@pytest.fixture(scope="module")
def lvsd(lab: DrLab) -> Iterator[LvsdProcess]:
    # Adopted as serving: the servers need no first probe before they take traffic.
    for port in (80, 8080):
        lab.director.run("ipvsadm", "-A", "-t", f"{VIP}:{port}", "-s", "rr")
        for address in (RS1, RS2):
            lab.director.run("ipvsadm", "-a", "-t", f"{VIP}:{port}", "-r",
                             f"{address}:{port}", "-g", "-w", "1")
    process = LvsdProcess(lab.director, CONFIG)
    try:
        asyncio.run(process.start())
        yield process
    finally:
        process.cleanup()


def table_weights(lab: DrLab) -> dict[str, int]:
    return weights(kernel_table(lab.director))


ALL_SERVING = {f"{WEB} -> {RS1}:80": 1, f"{WEB} -> {RS2}:80": 1,
               f"{ALT} -> {RS1}:8080": 1, f"{ALT} -> {RS2}:8080": 1}


def ctl_ok(lvsd: LvsdProcess, *args: str) -> str:
    done = lvsd.ctl(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr, lvsd.log_tail())
    return done.stdout


async def call(lvsd: LvsdProcess, body: dict[str, Any] | None = None, *,
               data: bytes | None = None, path: str = "/admin") -> tuple[int, dict[str, Any]]:
    async with ControlClient(lvsd.control_socket) as client:
        return await client.call("POST", path, body, data=data)


def held_connection(lab: DrLab) -> socket.socket:
    """A connection to the VIP that has sent half a request: established, not finished."""
    sock = lab.client.socket()
    sock.settimeout(20)
    sock.connect((VIP, 80))
    sock.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n".encode())
    return sock


def server_of(lab: DrLab, sock: socket.socket) -> str:
    """The real server IPVS forwards ``sock``'s connection to (``ipvsadm -Lcn``)."""
    port = sock.getsockname()[1]
    for line in lab.director.run("ipvsadm", "-Lcn").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == "TCP" and fields[3].endswith(f":{port}"):
            return fields[5].rsplit(":", 1)[0]
    raise AssertionError(f"no IPVS connection for client port {port}")


def finish(sock: socket.socket) -> str:
    sock.sendall(b"Connection: close\r\n\r\n")
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    return body.decode().strip()


async def test_drain_keeps_the_held_connection_sends_new_ones_elsewhere_and_outlives_kill_9(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    assert table_weights(lab) == ALL_SERVING
    held = await asyncio.to_thread(held_connection, lab)
    target = server_of(lab, held)
    label = "rs1" if target == RS1 else "rs2"
    out = ctl_ok(lvsd, "drain", "web", target)
    assert f"web {target}:80: drained; kernel weight 0" in out, out
    assert table_weights(lab)[f"{WEB} -> {target}:80"] == 0, "applied before ctl returned"
    answers = await lab.count_answers(8)
    assert answers[label] == 0 and sum(answers.values()) == 8 and None not in answers, answers
    assert await asyncio.to_thread(finish, held) == label, "the held connection completed"

    await lvsd.stop(signal.SIGKILL)
    lab.director.run("ipvsadm", "-e", "-t", f"{VIP}:80", "-r", f"{target}:80", "-g", "-w", "1")
    await lvsd.start()
    await lvsd.wait_for(lambda: table_weights(lab)[f"{WEB} -> {target}:80"] == 0, 20,
                        "the drain restored after kill -9")
    server = next(s for s in lvsd.status()["services"][0]["servers"]
                  if s["address"] == target)
    assert server["admin"]["state"] == "drained", server
    assert server["health"] == "up", "probes go on while drained"

    out = ctl_ok(lvsd, "undrain", "web", f"{target}:80")
    assert f"web {target}:80: enabled; kernel weight 1" in out, out
    assert table_weights(lab) == ALL_SERVING
    answers = await lab.count_answers(8)
    assert answers[label] >= 2, answers


async def test_host_drains_that_server_in_every_service(lab: DrLab, lvsd: LvsdProcess) -> None:
    out = ctl_ok(lvsd, "drain", "--host", RS1)
    assert len(out.splitlines()) == 2, out
    assert table_weights(lab) == {**ALL_SERVING, f"{WEB} -> {RS1}:80": 0,
                                  f"{ALT} -> {RS1}:8080": 0}
    ctl_ok(lvsd, "undrain", "--host", RS1)
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


async def test_a_caller_who_is_not_root_is_refused(lab: DrLab, lvsd: LvsdProcess) -> None:
    assert lvsd.control_socket.stat().st_mode & 0o777 == 0o600
    lvsd.control_socket.parent.chmod(0o755)
    lvsd.control_socket.chmod(0o666)  # past the file mode: the daemon's own check refuses
    done = lvsd.ctl("drain", "web", RS1, user=65534)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "uid 65534" in done.stderr and "may not control lvsd" in done.stderr, done.stderr
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
    ctl_ok(lvsd, "weight", "alt", RS2, "--clear")
    ctl_ok(lvsd, "undrain", "--host", RS1)
    assert table_weights(lab) == ALL_SERVING
