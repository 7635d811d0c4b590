"""Slow start and agent weights on the real kernel: one DR lab, one lvsd for the module.

rs1 has a 10 s slow start, rs2 an agent (a tiny TCP server in rs2's namespace that answers
the contents of a file the test rewrites), rs3 neither; all weigh 100 under wrr. The kernel
table is there before lvsd starts, so lvsd adopts three serving servers: none of them ramps.
Each test leaves the servers as it found them (all serving at 100).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import DrLab, dr_lab_context, get_page_async, in_netns
from tests.integration.daemon_support import LvsdProcess

VIP = "192.0.2.100"
RS1, RS2, RS3 = "192.0.2.11", "192.0.2.12", "192.0.2.13"
AGENT_PORT = 10000
SLOW_START = 10.0

CONFIG = f"""
reconcile_delay = 0

[[services]]
name = "web"
address = "{VIP}"
port = 80
scheduler = "wrr"
on_failure = "remove"
check = {{ type = "tcp", interval = "0.5s", timeout = "0.5s", rise = 1, fall = 1 }}
[[services.real_servers]]
address = "{RS1}"
weight = 100
slow_start = "{SLOW_START:g}s"
[[services.real_servers]]
address = "{RS2}"
weight = 100
agent = {{ port = {AGENT_PORT}, interval = "0.5s", timeout = "0.5s", fall = 1 }}
[[services.real_servers]]
address = "{RS3}"
weight = 100
"""

AGENT = """
import pathlib, socket, sys
answer = pathlib.Path(sys.argv[1])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[2])))
server.listen(64)
while True:
    connection, _ = server.accept()
    try:
        connection.sendall(answer.read_bytes())
    except OSError:
        pass
    connection.close()
"""


def kernel_weights(lab: DrLab) -> dict[str, int]:
    """{real server address: weight} of the VIP's service, from /proc (no process spawned)."""

    def read() -> dict[str, int]:
        weights: dict[str, int] = {}
        inside = False
        for line in Path("/proc/thread-self/net/ip_vs").read_text().splitlines():
            fields = line.split()
            if line.startswith("TCP"):
                inside = fields[1] == f"{int(ipaddress.ip_address(VIP)):08X}:0050"
            elif inside and line.startswith("  -> ") and fields[1] != "RemoteAddress:Port":
                address = str(ipaddress.ip_address(int(fields[1].split(":")[0], 16)))
                weights[address] = int(fields[3])
        return weights

    return in_netns(lab.director, read)


class Agent:
    """rs2's agent: answers whatever ``say`` last wrote, until ``stop``."""

    def __init__(self, lab: DrLab) -> None:
        self.lab = lab
        self.answer = Path(tempfile.mkdtemp(prefix="lvsd-agent-")) / "answer"
        self.process: subprocess.Popen[bytes] | None = None

    def say(self, line: str) -> None:
        tmp = self.answer.with_suffix(".tmp")
        tmp.write_text(line + "\r\n")
        tmp.replace(self.answer)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.server("rs2").ns, sys.executable, "-c", AGENT,
             str(self.answer), str(AGENT_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(3) as lab:
        yield lab


@pytest.fixture(scope="module")
def lvsd(lab: DrLab) -> Iterator[LvsdProcess]:
    lab.director.run("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "wrr")
    for address in (RS1, RS2, RS3):
        lab.director.run("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", f"{address}:80", "-g",
                         "-w", "100")
    process = LvsdProcess(lab.director, CONFIG)
    try:
        asyncio.run(process.start(timeout=240))  # a loaded emulator imports slowly
        yield process
    finally:
        process.cleanup()


async def all_serving(lab: DrLab, process: LvsdProcess) -> None:
    await process.wait_for(lambda: kernel_weights(lab) == {RS1: 100, RS2: 100, RS3: 100},
                           30, "every server at weight 100")


async def answers(lab: DrLab, count: int) -> collections.Counter[str | None]:
    return collections.Counter([await get_page_async(lab.client, VIP) for _ in range(count)])


async def test_slow_start_steps_the_kernel_weight_up_and_the_share_of_connections_follows(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    assert kernel_weights(lab) == {RS1: 100, RS2: 100, RS3: 100}, \
        "servers the kernel served when lvsd started do not ramp"
    lab.stop_server("rs1")
    await lvsd.wait_for(lambda: RS1 not in kernel_weights(lab), 20, "rs1 taken out")
    await lab.start_server("rs1")
    await lvsd.wait_for(lambda: RS1 in kernel_weights(lab), 20, "rs1 back")
    back = time.monotonic()
    seen = [kernel_weights(lab)[RS1]]
    shares: list[tuple[int, int, float]] = []  # weight before, weight after, rs1's share
    while seen[-1] < 100 and time.monotonic() - back < 3 * SLOW_START:
        before = kernel_weights(lab)[RS1]
        if len(shares) < 2 and 10 <= before <= 40:
            got = await answers(lab, 24)
            shares.append((before, kernel_weights(lab)[RS1], got["rs1"] / 24))
        await asyncio.sleep(0.1)
        seen.append(kernel_weights(lab)[RS1])
    ramp = time.monotonic() - back
    steps = list(dict.fromkeys(seen))
    assert steps == sorted(steps) and steps[-1] == 100, steps
    assert steps[0] < 20, f"rs1 came back at a small weight: {steps}"
    assert len(steps) >= 5, f"the weight rose in visible steps: {steps}"
    assert ramp >= 0.6 * SLOW_START, f"the ramp took the period, not {ramp:.1f} s"
    assert shares, "no share measured while rs1 ramped"
    for low, high, share in shares:
        # wrr gives rs1 weight/(weight + 200) of new connections; a step may fall in between
        assert low / (low + 200) - 0.1 <= share <= high / (high + 200) + 0.1, shares
    full = await answers(lab, 24)
    assert abs(full["rs1"] / 24 - 1 / 3) <= 0.1, full
    assert max(share for _, _, share in shares) < full["rs1"] / 24
    status = lvsd.status()["services"][0]["servers"][0]
    assert status["slow_start"] is None and status["kernel_weight"] == 100


async def test_the_agent_scales_drains_and_downs_its_server_and_a_dead_one_falls_back(
        lab: DrLab, lvsd: LvsdProcess) -> None:
    await all_serving(lab, lvsd)
    agent = Agent(lab)
    agent.say("50%")
    agent.start()
    try:
        await lvsd.wait_for(lambda: kernel_weights(lab).get(RS2) == 50, 30, "rs2 at 50%")
        status = lvsd.status()["services"][0]["servers"][1]["agent"]
        assert status["answering"] and status["percent"] == 50 and status["line"] == "50%"

        held = []
        for _ in range(6):  # wrr over 100/50/100 sends one of six to rs2
            sock = lab.client.socket()
            sock.settimeout(5)
            sock.connect((VIP, 80))
            held.append(sock)
        agent.say("DRAIN # deploying")
        await lvsd.wait_for(lambda: kernel_weights(lab).get(RS2) == 0, 20, "rs2 drained")
        fresh = await answers(lab, 12)
        assert fresh["rs2"] == 0 and fresh[None] == 0, fresh
        pages = []
        for sock in held:
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
            pages.append(b"".join(iter(lambda s=sock: s.recv(65536), b"")).split(b"\r\n\r\n")
                         [-1].decode().strip())
            sock.close()
        assert "rs2" in pages and len([p for p in pages if p]) == 6, pages

        agent.say("down")
        await lvsd.wait_for(lambda: RS2 not in kernel_weights(lab), 20, "rs2 out")
        agent.stop()
        await lvsd.wait_for(lambda: kernel_weights(lab).get(RS2) == 100, 20,
                            "rs2 back on its health check alone")
        status = lvsd.status()["services"][0]["servers"][1]["agent"]
        assert not status["answering"] and status["error"] == "refused"
    finally:
        agent.stop()
