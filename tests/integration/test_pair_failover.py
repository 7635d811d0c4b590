"""Director pairs in the kernel (issue 12): lvsd on two directors that keepalived -P pairs,
the kernel's connection sync driven by lvsd, the role learnt from the VIP.

One lab and one lvsd per director are shared by the module (lvsd takes 20-45 s to start under
emulation); each test leaves d1 the master with every daemon lvsd wants running. The flows
are the pair lab's: long-lived TCP connections from the client through the VIP, each echoing a
numbered line every 200 ms.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import pytest_asyncio

from tests.integration.daemon_support import LvsdProcess
from tests.integration.pairlab import (
    ECHO_PORT,
    HTTP_PORT,
    REAL_SERVERS,
    VIP,
    Director,
    FlowHarness,
    PairLab,
    pair_lab,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLOWS = 50
SYNCID = 51
ROLE_BOUND = 0.1  # seconds from the kernel's address event to lvsd's role change (issue 12)
RESYNC = 2.0


def config(mode: str) -> str:
    """The director's config, after LvsdProcess's [daemon] header (which gives each of the two
    lvsd sharing the VM's file system its own control socket)."""
    text = f"""resync_interval = {RESYNC}

[sync]
mode = "{mode}"
interface = "eth0"
syncid = {SYNCID}

[role]
addresses = ["{VIP}"]
"""
    for port, check in ((ECHO_PORT, 'type = "tcp"'), (HTTP_PORT, 'type = "http"\npath = "/"')):
        text += f"""
[[services]]
name = "vip-{port}"
address = "{VIP}"
port = {port}
scheduler = "rr"
[services.check]
{check}
interval = 1.0
timeout = 0.5
"""
        for address in REAL_SERVERS:
            text += f'\n[[services.real_servers]]\naddress = "{address}"\n'
    return text


@dataclass
class Pair:
    lab: PairLab
    lvsd: dict[str, LvsdProcess]

    def of(self, director: Director) -> LvsdProcess:
        return self.lvsd[director.label]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair() -> AsyncIterator[Pair]:
    with pair_lab() as lab:
        processes = {d.label: LvsdProcess(d.ns, "") for d in lab.directors}
        for process in processes.values():
            process.write_config(config("both"))
        try:
            # Two daemons starting at once in a loaded emulator: well past the usual 20-45 s.
            await asyncio.gather(*(p.start(timeout=240) for p in processes.values()))
            lab.sync_sysctls()  # ip_vs is loaded now (lvsd opened the namespace's table)
            lab.start_keepalived()
            await lab.wait_master(lab.d1)
            yield Pair(lab, processes)
        finally:
            for process in processes.values():
                process.cleanup()


def ipvsadm_daemons(director: Director) -> list[dict[str, object]]:
    """``ipvsadm -L --daemon``, e.g. "master sync daemon (mcast=eth0, syncid=51, maxlen=1472,
    group=224.0.0.81, port=8848, ttl=1)", as /status writes a daemon."""
    out = director.ns.run("ipvsadm", "-L", "--daemon").stdout
    found = []
    for line in out.splitlines():
        match = re.fullmatch(r"(master|backup) sync daemon \((.*)\)", line.strip())
        assert match, line
        fields = dict(part.split("=", 1) for part in match.group(2).split(", "))
        found.append({"state": match.group(1), "interface": fields["mcast"],
                      "syncid": int(fields["syncid"]), "maxlen": int(fields["maxlen"]),
                      "group": fields["group"], "port": int(fields["port"]),
                      "ttl": int(fields["ttl"])})
    return found


def lvsd_daemons(process: LvsdProcess) -> list[dict[str, object]]:
    daemons: list[dict[str, object]] = process.status()["sync_daemons"]["daemons"]
    return daemons


def shown_alike(process: LvsdProcess, director: Director) -> bool:
    shown = [{k: v for k, v in d.items() if k != "owner"} for d in lvsd_daemons(process)]
    return shown == ipvsadm_daemons(director)


async def wait_daemons(pair: Pair, states: list[str], timeout: float = 30.0) -> None:
    for director in pair.lab.directors:
        process = pair.of(director)

        def running_as_wanted(d: Director = director, p: LvsdProcess = process) -> bool:
            return [x["state"] for x in ipvsadm_daemons(d)] == states and shown_alike(p, d)

        await process.wait_for(running_as_wanted, timeout, f"{director.label} to run {states}",
                               poll=0.3)


async def reload_all(pair: Pair, mode: str) -> None:
    for process in pair.lvsd.values():
        process.write_config(config(mode))
        process.send(signal.SIGHUP)


def role_metric(process: LvsdProcess) -> float | None:
    # /metrics of a daemon that just started can take seconds under a loaded emulator.
    text = process.http("/metrics", timeout=20) or ""
    match = re.search(r"^lvsd_role (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


class AddressMonitor:
    """``ip -ts monitor address`` in a director: when the kernel announced each VIP change,
    read by a C program with its own timestamp (not by the test's wake-ups)."""

    def __init__(self, director: Director) -> None:
        self.process = subprocess.Popen(
            ["ip", "-n", director.ns, "-ts", "monitor", "address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def added_at(self, address: str) -> float:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        for line in out.splitlines():
            match = re.match(r"\[(\S+)\]\s*(.*)", line)
            if match and "Deleted" not in match.group(2) and f" {address}/" in match.group(2):
                return datetime.fromisoformat(match.group(1)).timestamp()
        raise AssertionError(f"no address event for {address} in:\n{out}")


def role_changed_at(process: LvsdProcess, role: str, after: float) -> float:
    for event in process.events("role_change"):
        at = datetime.fromisoformat(event["timestamp"]).timestamp()
        if event.get("role") == role and at >= after:
            return at
    raise AssertionError(f"no role_change to {role}:\n{process.log_tail()}")


async def test_lvsd_runs_both_sync_daemons_ipvsadm_shows_them_and_a_stopped_one_comes_back(
        pair: Pair) -> None:
    await wait_daemons(pair, ["master", "backup"])
    d1, d2 = pair.of(pair.lab.d1), pair.of(pair.lab.d2)
    for process, role in ((d1, "master"), (d2, "backup")):  # known once the dump answers
        await process.wait_for(lambda p=process, r=role: p.status()["role"]["role"] == r, 30,
                               f"role {role}", poll=0.3)
    assert role_metric(d1) == 1 and role_metric(d2) == 0
    assert all(d["owner"] == "lvsd" for d in lvsd_daemons(d2))

    pair.lab.d2.ns.run("ipvsadm", "--stop-daemon", "backup")  # behind lvsd's back
    await wait_daemons(pair, ["master", "backup"], timeout=RESYNC * 4 + 10)


async def test_failover_with_sync_loses_no_flow_and_the_role_follows_the_vip(
        pair: Pair) -> None:
    lab = pair.lab
    flows = FlowHarness(lab, FLOWS)
    await flows.open()
    await flows.wait_echoed(12, 15)  # > 2 s: every flow's sync buffer went out
    monitor = AddressMonitor(lab.d2)
    died_at = time.time()
    lab.die_silently(lab.d1)
    try:
        report = await flows.finish(run_for=3.0)
    finally:
        lab.revive(lab.d1)
    assert report.lost == [], str(report)

    took_over = monitor.added_at(VIP)
    assert took_over > died_at
    lag = role_changed_at(pair.of(lab.d2), "master", died_at) - took_over
    assert lag < ROLE_BOUND, f"role followed the VIP {lag * 1000:.0f} ms after the event"
    await lab.wait_master(lab.d1)
    await pair.of(lab.d2).wait_for(lambda: role_metric(pair.of(lab.d2)) == 0, 10,
                                   "d2 back to backup")


async def test_failback_with_mode_both_loses_no_flow(pair: Pair) -> None:
    """The flows are opened while d2 is the master: d1 knows them only from d2's master
    daemon, which its backup daemon (running the whole time in mode "both") received."""
    lab = pair.lab
    lab.set_track(lab.d1, 1)  # d1's priority 150 - 100: d2 (100) takes the VIP
    try:
        await lab.wait_master(lab.d2)
        flows = FlowHarness(lab, FLOWS)
        await flows.open()
        await flows.wait_echoed(12, 15)
    finally:
        lab.set_track(lab.d1, 0)  # d1 preempts: the failback
    await lab.wait_master(lab.d1)
    report = await flows.finish(run_for=2.0)
    assert report.lost == [], str(report)


async def test_the_same_failover_with_sync_off_loses_most_flows(pair: Pair) -> None:
    lab = pair.lab
    await reload_all(pair, "off")
    try:
        await wait_daemons(pair, [])
        flows = FlowHarness(lab, FLOWS)
        await flows.open()
        await flows.wait_echoed(12, 15)
        lab.die_silently(lab.d1)
        try:
            report = await flows.finish(run_for=3.0)
        finally:
            lab.revive(lab.d1)
        assert len(report.lost) > FLOWS * 0.8, str(report)
        assert report.reset, str(report)  # the new master's own stack answers with a RST
    finally:
        await reload_all(pair, "both")
    await wait_daemons(pair, ["master", "backup"])
    await lab.wait_master(lab.d1)
