"""Probing sharded across worker processes: real workers probing a listener on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lvsd.checks import CheckKey, HttpCheck, TcpCheck, check_key
from lvsd.checks.runner import ProbeRunner
from lvsd.checks.target import ProbeTarget
from lvsd.checks.workers import (
    AUTO_SHARD_RATE,
    AutoRunner,
    FrameReader,
    ShardedRunner,
    frame,
    make_runner,
    resolve_workers,
)
from lvsd.config import loads
from lvsd.errors import ConfigError
from lvsd.probe import ProbeReport

LOCAL = ipaddress.ip_address("127.0.0.1")
DEADLINE = 30.0  # generous: worker start-up on a loaded 2-core machine


class _Closing(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(_Closing, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


def tcp_keys(port: int, count: int, interval: float = 0.2) -> list[CheckKey]:
    """``count`` distinct checks of one listener (distinct specs: one key each)."""
    return [check_key(ProbeTarget(LOCAL, port), TcpCheck(interval=interval, timeout=0.5 + i / 1e4))
            for i in range(count)]


class Collector:
    def __init__(self) -> None:
        self.reports: list[ProbeReport] = []

    def __call__(self, reports: Any) -> None:
        self.reports.extend(reports)

    async def until(self, condition: Callable[[], bool]) -> None:
        end = time.monotonic() + DEADLINE
        while not condition():
            assert time.monotonic() < end, "timed out waiting for probe reports"
            await asyncio.sleep(0.02)

    def keys_since(self, index: int) -> set[CheckKey]:
        return {report.key for report in self.reports[index:]}


async def test_every_check_is_probed_by_one_of_the_workers(port: int) -> None:
    collected = Collector()
    runner = ShardedRunner(collected, workers=2)
    keys = tcp_keys(port, 40)
    runner.start()
    try:
        await asyncio.wait_for(runner.wait_up(), DEADLINE)  # up before it has any check
        runner.update(keys)
        # A worker the machine starves may time a probe out; it reports that one inconclusive
        # (lvsd, not the server, was late), and the check's next probe must then connect.
        await collected.until(lambda: {r.key for r in collected.reports
                                       if not r.inconclusive} == set(keys))
        assert len(set(runner.pids())) == 2 and os.getpid() not in runner.pids()
        for report in collected.reports:
            assert ((report.result.ok, report.result.reason) == (True, "connected")
                    or (not report.result.ok and report.inconclusive)), report
            assert report.scheduled - 0.002 <= report.started <= report.finished  # ms ticks
    finally:
        await runner.stop()
    assert runner.pids() == []


async def test_a_failure_reason_crosses_the_pipe(port: int) -> None:
    collected = Collector()
    runner = ShardedRunner(collected, workers=2)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    refused = check_key(ProbeTarget(LOCAL, closed_port), HttpCheck(interval=0.2))
    runner.update([refused])
    runner.start()
    try:
        await collected.until(lambda: len(collected.reports) >= 2)
        assert {(r.key, r.result.ok, r.result.reason) for r in collected.reports} == {
            (refused, False, "refused")}
    finally:
        await runner.stop()


async def test_a_worker_that_dies_is_restarted_and_its_checks_resume(port: int) -> None:
    collected = Collector()
    runner = ShardedRunner(collected, workers=2)
    keys = tcp_keys(port, 40)
    runner.update(keys)
    runner.start()
    try:
        await collected.until(lambda: collected.keys_since(0) == set(keys))
        victim = runner.pids()[0]
        os.kill(victim, signal.SIGKILL)
        await collected.until(lambda: runner.restarted == 1 and len(runner.pids()) == 2)
        assert victim not in runner.pids()
        after = len(collected.reports)
        await collected.until(lambda: collected.keys_since(after) == set(keys))
    finally:
        await runner.stop()


async def test_update_moves_only_what_changed(port: int) -> None:
    collected = Collector()
    runner = ShardedRunner(collected, workers=2)
    first, second = tcp_keys(port, 30), tcp_keys(port + 0, 60)[30:]
    runner.update(first)
    runner.start()
    try:
        await collected.until(lambda: collected.keys_since(0) == set(first))
        runner.update(first[:10] + second)
        assert len(runner) == 40 and first[20] not in runner and second[0] in runner
        # Reports of removed checks sent before a worker read the update may still arrive; a
        # worker's pipe is in order, so once every new check has reported (each worker got
        # some), every worker has applied its removals and no stale report can follow.
        updated = len(collected.reports)
        await collected.until(lambda: collected.keys_since(updated) >= set(second))
        settled = len(collected.reports)
        await collected.until(lambda: collected.keys_since(settled) >= set(first[:10] + second))
        assert collected.keys_since(settled) == set(first[:10] + second)
    finally:
        await runner.stop()


async def test_stop_then_start_resumes_every_check(port: int) -> None:
    collected = Collector()
    runner = ShardedRunner(collected, workers=2)
    keys = tcp_keys(port, 10)
    runner.update(keys)
    runner.start()
    await collected.until(lambda: collected.keys_since(0) == set(keys))
    await runner.stop()
    runner.start()
    try:
        after = len(collected.reports)
        await collected.until(lambda: collected.keys_since(after) == set(keys))
    finally:
        await runner.stop()


def test_frames_survive_any_split() -> None:
    stream = frame(1, b"hello") + frame(2, b"") + frame(3, struct.pack("<I", 7) * 100)
    for size in (1, 3, 7, len(stream)):
        reader = FrameReader()
        frames = []
        for start in range(0, len(stream), size):
            frames += reader.feed(stream[start:start + size])
        assert frames == [(1, b"hello"), (2, b""), (3, struct.pack("<I", 7) * 100)]


def test_auto_is_one_worker_per_core_and_none_on_one_core() -> None:
    assert resolve_workers("auto", cpus=1) == 0
    assert resolve_workers("auto", cpus=2) == 2
    assert resolve_workers("auto", cpus=16) == 16
    assert resolve_workers(3, cpus=16) == 3
    assert resolve_workers(0, cpus=16) == 0


async def test_no_workers_means_probing_in_process() -> None:
    assert isinstance(make_runner(lambda reports: None, workers=0), ProbeRunner)
    assert isinstance(make_runner(lambda reports: None, workers=2), ShardedRunner)


async def test_auto_shards_only_when_the_probe_rate_needs_it(port: int) -> None:
    runner = AutoRunner(lambda reports: None, workers=2)
    few = tcp_keys(port, 100, interval=1.0)
    spec = TcpCheck(interval=1.0)
    many = [check_key(ProbeTarget(ipaddress.ip_address(f"127.0.{i // 250}.{1 + i % 250}"), port),
                      spec) for i in range(int(AUTO_SHARD_RATE) + 1)]
    runner.update(few)
    assert not runner.sharded and len(runner) == 100
    runner.update(few + many)
    assert runner.sharded and len(runner) == len(few) + len(many)
    runner.update(few)
    assert not runner.sharded and few[0] in runner
    await runner.stop()
    assert not AutoRunner(lambda reports: None, workers=0).sharded


def test_probe_workers_in_the_config() -> None:
    def workers(text: str) -> object:
        return loads(f"[daemon]\n{text}allow_empty = true\n").daemon.probe_workers

    assert workers("") == "auto"
    assert workers('probe_workers = "auto"\n') == "auto"
    assert workers("probe_workers = 0\n") == 0
    assert workers("probe_workers = 4\n") == 4
    for bad in ("probe_workers = -1\n", 'probe_workers = "many"\n', "probe_workers = 2.5\n",
                "probe_workers = true\n"):
        with pytest.raises(ConfigError, match="probe_workers"):
            loads(f"[daemon]\n{bad}allow_empty = true\n")


async def test_a_worker_outlives_sigterm(port: int) -> None:
    """systemd signals the whole unit on stop: the daemon, not the signal, ends its workers."""
    collected = Collector()
    runner = ShardedRunner(collected, workers=1)
    keys = tcp_keys(port, 5)
    runner.start()
    try:
        await asyncio.wait_for(runner.wait_up(), DEADLINE)
        (pid,) = runner.pids()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(pid, number)
        runner.update(keys)
        await collected.until(lambda: collected.keys_since(0) == set(keys))
        assert runner.pids() == [pid] and runner.restarted == 0
    finally:
        await runner.stop()
