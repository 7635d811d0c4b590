"""The DR-path check on the real kernel (lvsd.checks.drpath), in the DR lab.

The director gets one IPVS fwmark service per real server (mark → that server only, ``-g``),
as the reconciler makes for ``dr_path = true``, besides the VIP's own service. Probes run in
the director's namespace (a thread that joined it) on uvloop, as the daemon runs them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest
import uvloop

from lvsd.checks import CheckKey, HttpCheck, ProbeResult, TcpCheck, check_key
from lvsd.checks.base import CheckSpec
from lvsd.checks.drpath import director_problems
from lvsd.checks.runner import ProbeRunner
from lvsd.probe import ProbeReport
from tests.integration.conftest import DrLab, dr_lab_context

pytestmark = pytest.mark.kernel

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
MARK_BASE = 0x4C560000


def in_namespace(namespace: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop in a thread that joined ``namespace`` (setns is per thread)."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}")
            outcome["value"] = uvloop.run(make())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"in-{namespace}")
    thread.start()
    thread.join(120)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def first_results(keys: list[CheckKey], within: float = 30.0) -> dict[CheckKey, ProbeResult]:
    """Each check's first result, through the runner (which enforces the timeout)."""
    results: dict[CheckKey, ProbeResult] = {}
    all_in = asyncio.Event()

    def collect(reports: Sequence[ProbeReport]) -> None:
        for report in reports:
            results.setdefault(report.key, report.result)
        if len(results) == len(keys):
            all_in.set()

    runner = ProbeRunner(collect)
    runner.update(keys)
    runner.start()
    try:
        await asyncio.wait_for(all_in.wait(), within)
    finally:
        await runner.stop()
    return results


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    """Two real servers behind the VIP, each with its own probe fwmark service."""
    with dr_lab_context(2) as lab:
        director = lab.director
        director.run("ipvsadm", "-A", "-t", f"{lab.vip}:{lab.port}", "-s", "rr")
        for index, server in enumerate(lab.real_servers, start=1):
            director.run("ipvsadm", "-a", "-t", f"{lab.vip}:{lab.port}", "-r",
                         f"{server.address}:{lab.port}", "-g", "-w", "1")
            director.run("ipvsadm", "-A", "-f", str(MARK_BASE + index), "-s", "rr")
            director.run("ipvsadm", "-a", "-f", str(MARK_BASE + index), "-r",
                         f"{server.address}:0", "-g", "-w", "1")
        director.sysctl("net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.eth0.accept_local=1",
                        "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
        yield lab


def dr_key(lab: DrLab, label: str, spec: CheckSpec) -> CheckKey:
    index = [s.label for s in lab.real_servers].index(label) + 1
    server = ipaddress.ip_address(lab.server(label).address)
    target = spec.target(server, lab.port, vip=ipaddress.ip_address(lab.vip), vport=lab.port,
                         dr_mark=MARK_BASE + index)
    return check_key(target, spec)


def plain_key(lab: DrLab, label: str, spec: CheckSpec) -> CheckKey:
    return check_key(spec.target(ipaddress.ip_address(lab.server(label).address), lab.port),
                     spec)


def summary(results: dict[CheckKey, ProbeResult]) -> dict[str, tuple[bool, str]]:
    return {str(key): (result.ok, result.reason) for key, result in results.items()}


def test_dr_path_check_fails_a_real_server_without_the_vip_on_lo(lab: DrLab) -> None:
    rs2 = lab.server("rs2")
    rs2.ns.ip("addr", "del", f"{lab.vip}/32", "dev", "lo")
    try:
        # expect_body names the server: the probe of each mark reached that server and no other
        dr_rs1 = dr_key(lab, "rs1", HttpCheck(dr_path=True, interval=0.5, timeout=2.0,
                                              expect_body="^rs1$"))
        dr_rs2 = dr_key(lab, "rs2", HttpCheck(dr_path=True, interval=0.5, timeout=2.0,
                                              expect_body="^rs2$"))
        tcp_rs2 = dr_key(lab, "rs2", TcpCheck(dr_path=True, interval=0.5, timeout=2.0))
        plain_rs2 = plain_key(lab, "rs2", HttpCheck(interval=0.5, timeout=2.0,
                                                    expect_body="^rs2$"))
        keys = [dr_rs1, dr_rs2, tcp_rs2, plain_rs2]
        results = in_namespace(lab.director, lambda: first_results(keys))
        table = lab.director.run("ipvsadm", "-Lnc").stdout
        got = summary(results)
        assert results[plain_rs2].ok, got  # rs2 answers on its own address...
        assert (results[dr_rs2].ok, results[dr_rs2].reason) == (False, "timeout (connect)"), got
        assert (results[tcp_rs2].ok, results[tcp_rs2].reason) == (
            False, "timeout (connect)"), got  # ...but not on the VIP: clients would fail too
        assert results[dr_rs1].ok, got
        # the probe went through IPVS: from the director's address, to the VIP, to rs1
        connections = [line.split()[3:6] for line in table.splitlines()
                       if line.startswith("TCP")]
        assert any(source.rsplit(":", 1)[0] == lab.director_address
                   and virtual == f"{lab.vip}:{lab.port}"
                   and dest == f"{lab.server('rs1').address}:{lab.port}"
                   for source, virtual, dest in connections), table
    finally:
        rs2.ns.ip("addr", "add", f"{lab.vip}/32", "dev", "lo")
    again = in_namespace(lab.director, lambda: first_results([dr_rs2, tcp_rs2]))
    assert again[dr_rs2].ok and again[tcp_rs2].ok, summary(again)


@pytest.mark.parametrize(("accept_local", "rp_filter", "vip_on", "passes"), [
    (0, 0, "eth0", False),  # the reply from the VIP is a martian to the director
    (1, 1, "eth0", True),  # strict reverse-path filtering is fine: the VIP is on eth0...
    (1, 1, "lo", False),  # ...but not when another interface holds it
    (1, 2, "lo", True),
    (1, 0, "eth0", True),
])
def test_director_sysctls_the_dr_path_needs(lab: DrLab, accept_local: int, rp_filter: int,
                                            vip_on: str, passes: bool) -> None:
    director = lab.director
    director.sysctl(f"net.ipv4.conf.all.accept_local={accept_local}",
                    f"net.ipv4.conf.eth0.accept_local={accept_local}",
                    f"net.ipv4.conf.all.rp_filter={rp_filter}",
                    f"net.ipv4.conf.eth0.rp_filter={rp_filter}")
    if vip_on != "eth0":
        director.ip("addr", "del", f"{lab.vip}/32", "dev", "eth0")
        director.ip("addr", "add", f"{lab.vip}/32", "dev", vip_on)
    try:
        key = dr_key(lab, "rs1", HttpCheck(dr_path=True, interval=0.5, timeout=2.0))
        rs1 = ipaddress.ip_address(lab.server("rs1").address)
        vip = ipaddress.ip_address(lab.vip)

        async def probe_and_diagnose() -> tuple[ProbeResult, list[str]]:
            results = await first_results([key])
            return results[key], await director_problems(rs1, vip)

        result, problems = in_namespace(director, probe_and_diagnose)
        assert result.ok is passes, result
        assert (problems == []) is passes, problems
        if not passes:  # the SYN reached rs1; its SYN-ACK, from the VIP, was dropped
            assert result.reason == "timeout (connect)", result
    finally:
        if vip_on != "eth0":
            director.ip("addr", "del", f"{lab.vip}/32", "dev", vip_on)
            director.ip("addr", "add", f"{lab.vip}/32", "dev", "eth0")
        director.sysctl("net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.eth0.accept_local=1",
                        "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
