"""Long work in slices: the loop keeps turning while a 10,000-destination pass runs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import structlog

from lvsd import logs
from lvsd.checks.manual import ManualRunner
from lvsd.config import loads
from lvsd.daemon import LOG_EACH_OP, Daemon, log_ops
from lvsd.ipvs.fake import FakeIpvs
from lvsd.model import (
    AddDest,
    DeleteService,
    Dest,
    DestKey,
    Protocol,
    ServiceKey,
    parse_address,
)
from lvsd.pacing import Pacer, Steps, finish, paced


def counting(n: int, seen: list[int]) -> Steps[int]:
    for i in range(n):
        seen.append(i)
        yield None
    return n * 2


def test_finish_runs_the_steps_at_once_and_returns_their_result() -> None:
    seen: list[int] = []
    assert finish(counting(5, seen)) == 10
    assert seen == [0, 1, 2, 3, 4]


async def test_paced_gives_the_loop_a_turn_between_slices() -> None:
    turns: list[int] = []

    async def other() -> None:
        while True:
            turns.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = len(turns)
    seen: list[int] = []
    assert await paced(counting(50, seen), Pacer(slice_seconds=0.0)) == 100
    assert len(turns) - before >= 49  # a turn after every step with a zero slice
    before = len(turns)
    assert await paced(counting(50, seen), Pacer(slice_seconds=3600.0)) == 100
    assert len(turns) == before  # within one slice: no turn at all
    task.cancel()


def big_config(state_dir: Path) -> str:
    servers = ", ".join(f'{{ address = "198.51.100.{1 + i}" }}' for i in range(100))
    services = "".join(f"""
[[services]]
name = "big{index}"
address = "192.0.2.200"
port = {1000 + index}
scheduler = "wrr"
forward = "masq"
real_servers = [{servers}]
""" for index in range(100))
    return f'[daemon]\nstate_dir = "{state_dir}"\non_stop = "keep"\n{services}'


async def test_a_10k_pass_after_ipvsadm_clear_leaves_the_loop_turning(tmp_path: Path) -> None:
    """The pass that rebuilds 10,000 destinations (seconds under emulation) is done in slices:
    another task gets many turns before it ends, so probes and /healthz go on."""
    backend = FakeIpvs()
    daemon = Daemon(loads(big_config(tmp_path / "state")), backend, runner=ManualRunner)
    await daemon.reconcile(full=True)
    assert backend.table.to_table().dest_count == 10_000
    await backend.apply([DeleteService(vs.key) for vs in backend.table.to_table().services])
    turns = 0
    rebuild = asyncio.create_task(daemon.reconcile(full=True))
    while not rebuild.done():
        turns += 1
        await asyncio.sleep(0)
    assert len(await rebuild) == 10_100
    assert backend.table.to_table().dest_count == 10_000
    assert turns >= 40, turns  # at least once per kernel window of 256 ops


KEY = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)


def adds(n: int) -> list[AddDest]:
    return [AddDest(KEY, Dest(DestKey(parse_address(f"198.51.{i // 250}.{1 + i % 250}"), 80)))
            for i in range(n)]


def test_a_large_pass_logs_a_line_per_service_with_counts() -> None:
    """Up to LOG_EACH_OP ops, a line each; beyond, one line per service (each op at debug):
    an ``ipvsadm -C`` at 10,000 destinations is not 10,000 lines of rendering on the loop."""
    logs.configure("info")
    with structlog.testing.capture_logs() as logged:
        finish(log_ops(adds(LOG_EACH_OP), []))
    assert [e["event"] for e in logged] == ["table_change"] * LOG_EACH_OP
    with structlog.testing.capture_logs() as logged:
        finish(log_ops(adds(5000), []))
    assert logged == [{"event": "table_changes", "log_level": "info", "service": str(KEY),
                       "add_dest": 5000}]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with structlog.testing.capture_logs() as logged:
        finish(log_ops(adds(5000), []))
    summary = [e for e in logged if e["log_level"] == "info"]
    assert summary == [{"event": "table_changes", "log_level": "info",
                        "service": str(KEY), "add_dest": 5000}]
    assert sum(e["log_level"] == "debug" for e in logged) == 5000
    logs.configure("info")
