"""The daemon with a consistent-hash service over the in-memory backend: two directors with
different histories show the same mh fingerprint, in /status and in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

from lvsd.api import status_document
from lvsd.checks.manual import ManualRunner
from lvsd.config import load
from lvsd.daemon import Daemon
from lvsd.ipvs.fake import FakeIpvs
from lvsd.kernelconfig import MhTableSize
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address

VIP = ServiceKey.virtual(Protocol.TCP, "198.51.100.10", 80)
SERVERS = [DestKey(parse_address(f"192.0.2.{n}"), 80) for n in (21, 22, 23)]


def write_config(directory: Path) -> Path:
    path = directory / "lvsd.toml"
    rows = "\n".join(f'  {{ address = "{key.address}", weight = {n} }},'
                     for n, key in enumerate(SERVERS, start=1))
    path.write_text(f"""
[daemon]
state_dir = "{directory / 'state'}"
reconcile_delay = 0

[[services]]
name = "web"
address = "198.51.100.10"
port = 80
consistent_hash = true
sched_flags = ["mh-port"]
check = {{ type = "tcp", rise = 1, fall = 1 }}
real_servers = [
{rows}
]
""")
    return path


async def start(directory: Path, backend: FakeIpvs) -> Daemon:
    path = write_config(directory)
    daemon = Daemon(load(path), backend, config_path=path, runner=ManualRunner,
                    mh_size=MhTableSize(4093, "test"))
    await daemon.start()
    return daemon


async def report(daemon: Daemon, up: set[DestKey]) -> None:
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    for server in SERVERS:
        runner.report(daemon.health.checks_of((VIP, server))[0], server in up)
    await daemon.reconcile(full=False)


def fingerprint(daemon: Daemon) -> str | None:
    (table,) = daemon.status.snapshot().mh_tables
    assert table.in_order
    return table.fingerprint


async def test_a_director_started_while_a_server_is_down_has_the_long_running_ones_table(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    long_running = await start(tmp_path / "a", FakeIpvs())
    await report(long_running, set(SERVERS))
    await report(long_running, {SERVERS[0], SERVERS[2]})
    fresh = await start(tmp_path / "b", FakeIpvs())
    await report(fresh, {SERVERS[0], SERVERS[2]})
    assert fingerprint(long_running) == fingerprint(fresh) is not None

    state = json.loads((tmp_path / "b" / "state" / "state.json").read_text())
    assert {item["weight"] for item in state["mh_last_weights"]} == {1, 2, 3}


async def test_a_restart_over_the_kept_table_reads_the_last_weights_and_writes_nothing(
        tmp_path: Path) -> None:
    backend = FakeIpvs()
    first = await start(tmp_path, backend)
    await report(first, {SERVERS[0]})
    before = fingerprint(first)
    await first.stop()
    backend.applied.clear()
    again = await start(tmp_path, backend)
    assert backend.applied == []
    assert fingerprint(again) == before is not None


async def test_status_and_metrics_show_the_fingerprint(tmp_path: Path) -> None:
    daemon = await start(tmp_path, FakeIpvs())
    await report(daemon, {SERVERS[1]})
    snapshot = daemon.status.snapshot()
    (entry,) = status_document(snapshot, 0.0)["consistent_hash"]
    assert entry["name"] == "web" and entry["in_canonical_order"] is True
    assert entry["table_size"] == 4093
    body = daemon.metrics.exposition(snapshot).decode()
    line = next(row for row in body.splitlines()
                if row.startswith("lvsd_mh_table_fingerprint{"))
    assert 'local_address="198.51.100.10"' in line and 'name="web"' in line
    assert int(line.rsplit(" ", 1)[1]) == int(entry["fingerprint"], 16)
    assert "lvsd_mh_table_size 4093" in body
