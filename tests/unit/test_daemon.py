"""The daemon's logic over the in-memory backend: results are fed by hand, no probe runs.

Kernel behaviour is proven in tests/integration; these tests pin the daemon's decisions:
what it writes, and what it must not write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from lvsd import daemon as daemon_module
from lvsd import statussource as statussource_module
from lvsd.checks.manual import ManualRunner
from lvsd.config import load
from lvsd.daemon import Daemon, run_daemon, serve
from lvsd.errors import IpvsError, IpvsUnavailable, LvsdError
from lvsd.health import Status
from lvsd.ipvs.fake import FakeIpvs
from lvsd.ipvs.memory import MemoryTable
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    Dest,
    DestKey,
    DestStats,
    EditDest,
    Forward,
    Op,
    Protocol,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    parse_address,
)
from lvsd.snapshot import Snapshot, shows_the_same
from lvsd.spec import Config, ServerSpec, ServiceSpec

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
RS1 = DestKey(parse_address("192.0.2.11"), 80)
RS2 = DestKey(parse_address("192.0.2.12"), 80)


def config_text(state_dir: Path, *servers: str, weight2: int = 1) -> str:
    text = f"""
[daemon]
state_dir = "{state_dir}"
reconcile_delay = 0

[[services]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "rr"
check = {{ type = "http", path = "/", rise = 2, fall = 2 }}
"""
    for address in servers:
        weight = weight2 if address.endswith(".12") else 1
        text += f'[[services.real_servers]]\naddress = "{address}"\nweight = {weight}\n'
    return text


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lvsd.toml"
    path.write_text(config_text(tmp_path / "state", "192.0.2.11", "192.0.2.12"))
    return path


async def make(config_file: Path, table: Table | None = None) -> tuple[Daemon, FakeIpvs]:
    backend = FakeIpvs(table)
    daemon = Daemon(load(config_file), backend, config_path=config_file,
                    runner=ManualRunner)
    await daemon.start()
    return daemon, backend


def feed(daemon: Daemon, server: DestKey, ok: bool, times: int = 1) -> None:
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(daemon.health.checks_of((WEB, server))[0], ok, times=times)


def kernel_weights(backend: FakeIpvs) -> dict[str, int]:
    entry = backend.table.entries.get(WEB)
    return {} if entry is None else {str(k): d.weight for k, d in entry.dests.items()}


def healthy_table(weight: int = 1) -> Table:
    service = Service(WEB, "rr")
    dests = tuple(Dest(k, weight=weight, forward=Forward.ROUTE) for k in (RS1, RS2))
    return Table((VirtualService(service, dests),))


async def test_new_servers_get_no_traffic_until_their_first_passing_probe(
        config_file: Path) -> None:
    daemon, backend = await make(config_file)
    assert kernel_weights(backend) == {"192.0.2.11:80": 0, "192.0.2.12:80": 0}
    feed(daemon, RS1, ok=True)
    backend.applied.clear()
    await daemon.reconcile(full=False)
    assert backend.applied == [EditDest(WEB, Dest(RS1, weight=1))]
    assert backend.dumps == 1, "a health change is planned against the view, not a new dump"


async def test_restart_over_a_healthy_table_writes_nothing(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    assert backend.applied == []
    assert daemon.health.all_up()
    feed(daemon, RS1, ok=False)  # one failure is below fall = 2
    await daemon.reconcile(full=False)
    assert backend.applied == []


async def test_fall_failures_set_weight_zero_and_rise_passes_restore_it(
        config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    feed(daemon, RS2, ok=False, times=2)
    await daemon.reconcile(full=False)
    assert backend.applied == [EditDest(WEB, Dest(RS2, weight=0))]
    feed(daemon, RS2, ok=True)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.12:80"] == 0
    feed(daemon, RS2, ok=True)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.12:80"] == 1


async def test_a_full_pass_repairs_a_flushed_table_and_spares_foreign_services(
        config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    foreign = ServiceKey.mark(8)
    backend.table = MemoryTable.from_table(
        Table((VirtualService(Service(foreign, "wlc"), (Dest(RS1, forward=Forward.ROUTE),)),)))
    await daemon.reconcile(full=True)
    assert kernel_weights(backend) == {"192.0.2.11:80": 1, "192.0.2.12:80": 1}
    assert foreign in backend.table.entries


async def test_a_failed_operation_is_retried_on_the_next_pass(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    backend.fail = lambda op: errno.ENOMEM if isinstance(op, EditDest) else None
    feed(daemon, RS1, ok=False, times=2)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 1
    assert not daemon.view.status().in_sync
    backend.fail = lambda op: None
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 0


async def test_reload_with_one_weight_changed_is_one_edit_and_keeps_health(
        config_file: Path, tmp_path: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    feed(daemon, RS1, ok=False, times=2)
    await daemon.reconcile(full=False)
    backend.applied.clear()
    config_file.write_text(config_text(tmp_path / "state", "192.0.2.11", "192.0.2.12",
                                       weight2=5))
    assert await daemon.reload()
    assert backend.applied == [EditDest(WEB, Dest(RS2, weight=5))]
    assert kernel_weights(backend)["192.0.2.11:80"] == 0, "a server that was down stays down"


async def test_a_broken_reload_keeps_the_old_config_and_says_why(
        config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    old: Config = daemon.config
    config_file.write_text("[[services]]\naddress = 'nope'\nport = 80\n")
    assert not await daemon.reload()
    assert daemon.config is old
    assert daemon.reloads.last is not None and not daemon.reloads.last.ok
    assert "services[0] (tcp:nope:80).address: not an IP address" in (daemon.reloads.last.error
                                                                     or "")
    assert backend.applied == []


async def test_a_removed_server_is_drained_then_deleted(config_file: Path,
                                                         tmp_path: Path) -> None:
    busy = DestStats(active=1)
    service = Service(WEB, "rr")
    table = Table((VirtualService(service, (
        Dest(RS1, forward=Forward.ROUTE),
        Dest(RS2, forward=Forward.ROUTE, stats=busy))),))
    daemon, backend = await make(config_file, table)
    config_file.write_text(config_text(tmp_path / "state", "192.0.2.11"))
    assert await daemon.reload()
    assert kernel_weights(backend) == {"192.0.2.11:80": 1, "192.0.2.12:80": 0}
    await daemon.reconcile(full=True)
    assert "192.0.2.12:80" in kernel_weights(backend), "still has a connection"
    entry = backend.table.entries[WEB]
    entry.dests[RS2] = Dest(RS2, weight=0, forward=Forward.ROUTE)  # the connection closed
    await daemon.reconcile(full=True)
    assert kernel_weights(backend) == {"192.0.2.11:80": 1}
    ops: list[Op] = backend.applied
    assert DeleteDest(WEB, RS2) in ops


async def test_ownership_survives_a_restart_so_a_removed_service_is_deleted(
        config_file: Path, tmp_path: Path) -> None:
    _daemon, backend = await make(config_file)
    assert isinstance(backend.applied[0], AddService)
    assert any(isinstance(op, AddDest) for op in backend.applied)
    config_file.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nallow_empty = true\n')
    restarted = Daemon(load(config_file), backend, config_path=config_file,
                       runner=ManualRunner)
    await restarted.start()
    assert WEB not in backend.table.entries


async def test_on_change_hook_runs_with_the_servers_details(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    config = tmp_path / "hook.toml"
    config.write_text(config_text(tmp_path / "state", "192.0.2.11").replace(
        'scheduler = "rr"', 'scheduler = "rr"\non_change = ["/bin/sh", "-c", '
        f'"env | grep ^LVSD_ | sort > {out}"]'))
    daemon, _ = await make(config, healthy_table())
    feed(daemon, RS1, ok=False, times=2)
    for _ in range(100):
        if out.exists() and "LVSD_STATUS" in out.read_text():
            break
        await asyncio.sleep(0.05)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["LVSD_SERVICE"] == "web" and env["LVSD_SERVER"] == "192.0.2.11:80"
    assert env["LVSD_STATUS"] == "down" and env["LVSD_REASON"] == "refused"


async def test_stop_keeps_the_table_unless_told_to_withdraw(config_file: Path,
                                                            tmp_path: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    await daemon.stop()
    assert WEB in backend.table.entries, "keep: traffic keeps flowing"
    config_file.write_text(config_file.read_text().replace(
        "reconcile_delay = 0", 'reconcile_delay = 0\non_stop = "withdraw"'))
    daemon, backend = await make(config_file, healthy_table())
    await daemon.stop()
    assert WEB not in backend.table.entries


async def test_an_inconclusive_report_leaves_health_alone(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(daemon.health.checks_of((WEB, RS1))[0], False, times=2, inconclusive=True)
    await daemon.reconcile(full=False)
    assert backend.applied == []
    assert kernel_weights(backend)["192.0.2.11:80"] == 1


def probes_counted(daemon: Daemon, result: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "lvsd_probes_total", {"check_type": "http", "result": result})
    return value or 0.0


async def test_every_report_is_counted_the_inconclusive_ones_apart(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    key = daemon.health.checks_of((WEB, RS1))[0]
    runner.report(key, False, times=3, inconclusive=True, lateness=2.0)
    runner.report(key, True, times=2)
    assert probes_counted(daemon, "inconclusive") == 3
    assert probes_counted(daemon, "fail") == 0 and probes_counted(daemon, "ok") == 2
    lateness = daemon.metrics.registry.get_sample_value("lvsd_probe_lateness_seconds_count")
    assert lateness == 5  # the latest probes are in the lateness histogram too
    await daemon.reconcile(full=False)
    assert backend.applied == []


async def test_an_overloaded_probe_engine_shows_in_the_snapshot(config_file: Path) -> None:
    daemon, _ = await make(config_file, healthy_table())
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    key = daemon.health.checks_of((WEB, RS1))[0]
    assert not daemon.status.snapshot().probing.overloaded
    # The check's timeout is 1 s: a probe 1.5 s late is late, its failure inconclusive.
    runner.report(key, True, lateness=1.5)
    runner.report(key, False, lateness=1.5, inconclusive=True)
    runner.report(key, True, lateness=0.01)
    probing = daemon.status.sample_probe_load()
    assert probing.overloaded
    assert (probing.probes, probing.late, probing.inconclusive) == (3, 2, 1)
    assert probing.max_lateness == 1.5 and probing.window >= 0.0
    assert daemon.status.snapshot().probing == probing
    runner.report(key, True, lateness=0.01)
    assert not daemon.status.sample_probe_load().overloaded  # each sample covers its own window
    assert not daemon.status.snapshot().probing.overloaded


async def test_the_daemon_samples_the_probe_load_without_a_reader(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "LOAD_WINDOW", 0.01)
    daemon, _ = await make(config_file, healthy_table())
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(daemon.health.checks_of((WEB, RS1))[0], False, lateness=1.5,
                  inconclusive=True)
    await wait_for(lambda: daemon.status.probing.overloaded)
    assert daemon.status.snapshot().probing.inconclusive == 1
    await wait_for(lambda: not daemon.status.probing.overloaded)  # the next window saw no probe
    await daemon.stop()


def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    builds: list[int] = []
    build = statussource_module.build_snapshot

    def counted(**parts: Any) -> Snapshot:
        builds.append(1)
        return build(**parts)

    monkeypatch.setattr(statussource_module, "build_snapshot", counted)
    return builds


async def test_a_poll_loop_rebuilds_the_snapshot_only_when_something_changed(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, backend = await make(config_file, healthy_table())
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    builds = count_builds(monkeypatch)
    first = await daemon.status.fresh_snapshot(0.0)
    dumps = backend.dumps
    for _ in range(3):  # each poll re-reads the kernel, finds it as it was: no rebuild
        snapshot = await daemon.status.fresh_snapshot(0.0)
        assert snapshot.services == first.services and snapshot.taken_at >= first.taken_at
        assert snapshot.taken_at == daemon.view.dumped_at
    assert backend.dumps == dumps + 3 and len(builds) == 1
    daemon.status.sample_probe_load()  # a new probing window is one field, not a rebuild
    assert len(builds) == 1
    runner.report(daemon.health.checks_of((WEB, RS1))[0], True)  # a probe: a new last probe
    await daemon.status.fresh_snapshot(0.0)
    assert len(builds) == 2
    entry = backend.table.entries[WEB]  # traffic: the counters moved
    entry.dests[RS2] = dataclasses.replace(entry.dests[RS2], stats=DestStats(active=7))
    snapshot = await daemon.status.fresh_snapshot(0.0)
    assert len(builds) == 3
    assert [s.kernel.stats.active for s in snapshot.services[0].servers if s.kernel] == [0, 7]


def test_shows_the_same_compares_the_counters_too() -> None:
    table = healthy_table()
    (vs,) = table.services
    busy = dataclasses.replace(vs.dests[0], stats=DestStats(active=1))
    assert shows_the_same(table, healthy_table())
    assert busy == vs.dests[0]  # the model's == leaves the counters out
    assert not shows_the_same(table, Table((VirtualService(vs.service, (busy, vs.dests[1])),)))
    assert not shows_the_same(table, Table((VirtualService(vs.service, vs.dests[::-1]),)))
    assert not shows_the_same(table, Table((VirtualService(vs.service, vs.dests[:1]),)))
    assert not shows_the_same(table, Table(()))


# --- the loop survives: reloads (defect 1) and kernel faults (defect 3) ----------------------


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("content", [
    "# caf\xe9\n".encode("latin-1"),
    b"[[services]]\naddress = '192.0.2.1'\nport = 80\ncheck = { type = 'http', headers = 5 }\n",
    b"[[services]]\naddress = '192.0.2.1'\nport = 80\n"
    b"check = { type = 'http', expect_body = 'a{99999999999}' }\n",
    b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n",
])
async def test_a_reload_of_a_broken_file_keeps_the_loop_and_the_old_config(
        config_file: Path, content: bytes) -> None:
    daemon, backend = await make(config_file, healthy_table())
    old = daemon.config
    loop = asyncio.create_task(daemon.run())
    config_file.write_bytes(content)
    daemon.request_reload()
    await wait_for(lambda: daemon.reloads.last is not None)
    assert not loop.done(), "the daemon's loop survives"
    assert daemon.config is old and backend.applied == []
    status = daemon.status.snapshot().last_reload
    assert status is not None and not status.ok and status.error
    daemon.request_stop()
    await loop


async def test_a_reload_that_shortens_the_resync_interval_brings_the_next_resync_forward(
        config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    assert daemon.config.daemon.resync_interval == 30
    loop = asyncio.create_task(daemon.run())
    config_file.write_text(config_file.read_text().replace(
        "reconcile_delay = 0", "reconcile_delay = 0\nresync_interval = 0.2"))
    daemon.request_reload()
    await wait_for(lambda: daemon.reloads.last is not None)
    assert daemon.config.daemon.resync_interval == 0.2
    backend.table = MemoryTable.from_table(Table(()))  # flushed: only a full pass sees it
    await wait_for(lambda: kernel_weights(backend) == {"192.0.2.11:80": 1,
                                                       "192.0.2.12:80": 1}, limit=2.0)
    daemon.request_stop()
    await loop


async def test_any_exception_while_loading_is_a_failed_reload(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, _ = await make(config_file, healthy_table())

    def broken(path: Path) -> Config:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("lvsd.reloader.load", broken)
    assert not await daemon.reload()
    assert daemon.reloads.last is not None
    assert daemon.reloads.last.error == "RecursionError: maximum recursion depth exceeded"


@pytest.mark.parametrize("error", [
    IpvsError("dump", "table", errno.EIO, "input/output error"),
    IpvsUnavailable("netlink socket closed"),
    OSError(errno.ENOBUFS, "No buffer space available"),
    RuntimeError("a garbled reply"),
])
async def test_a_failed_dump_leaves_the_loop_running_and_the_table_converges(
        config_file: Path, error: Exception) -> None:
    daemon, backend = await make(config_file, healthy_table())
    loop = asyncio.create_task(daemon.run())
    backend.dump_error = error
    backend.table = MemoryTable()  # ipvsadm -C behind lvsd's back
    daemon.view.stale = True
    daemon.wake.set()
    await wait_for(lambda: daemon.view.failures > 0)
    status = daemon.status.snapshot().sync
    assert not status.in_sync and status.last_error and status.consecutive_failures == 1
    assert not loop.done()
    backend.dump_error = None
    await wait_for(lambda: daemon.view.status().in_sync, limit=5)
    assert kernel_weights(backend) == {"192.0.2.11:80": 1, "192.0.2.12:80": 1}
    daemon.request_stop()
    await loop


async def test_an_apply_that_raises_is_a_failed_pass(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    backend.apply_error = OSError(errno.EBADF, "Bad file descriptor")
    feed(daemon, RS1, ok=False, times=2)
    assert await daemon.reconcile(full=False) == []
    assert daemon.view.stale and daemon.retry_at is not None
    backend.apply_error = None
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 0


async def test_a_refused_op_is_retried_with_one_pending_retry_backing_off(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lvsd.kernelview.BACKOFF_FIRST", 0.02)
    monkeypatch.setattr("lvsd.kernelview.BACKOFF_MAX", 0.16)
    daemon, backend = await make(config_file, healthy_table())
    passes = 0
    apply = backend.apply

    async def counting(ops: Sequence[Op]) -> list[IpvsError]:
        nonlocal passes
        passes += 1
        return await apply(ops)

    backend.apply = counting  # type: ignore[method-assign]
    backend.fail = lambda op: errno.ENOENT if isinstance(op, EditDest) else None
    loop = asyncio.create_task(daemon.run())
    feed(daemon, RS1, ok=False, times=2)
    await asyncio.sleep(1.0)
    # 0.02 + 0.04 + 0.08, then every 0.16 s: about 8 passes; multiplying retries make dozens.
    assert 5 <= passes <= 11
    assert daemon.view.failures == passes
    assert not daemon.status.snapshot().sync.in_sync
    backend.fail = lambda op: None
    await wait_for(lambda: daemon.view.status().in_sync)
    assert kernel_weights(backend)["192.0.2.11:80"] == 0
    daemon.request_stop()
    await loop


# --- stable probe marks (defect 4), another's fwmark service (defect 5) ------------------------


def dr_config(state_dir: Path, above: bool = False) -> str:
    text = f'[daemon]\nstate_dir = "{state_dir}"\nreconcile_delay = 0\n' \
           f"dr_check_mark_base = {MARK_BASE}\n"
    if above:
        text += ('[[services]]\nname = "new"\naddress = "192.0.2.200"\nport = 80\n'
                 'check = { type = "http", dr_path = true }\n'
                 '[[services.real_servers]]\naddress = "192.0.2.21"\n')
    return text + (
        '[[services]]\nname = "web"\naddress = "192.0.2.100"\nport = 80\n'
        'check = { type = "http", dr_path = true, rise = 2, fall = 2 }\n'
        '[[services.real_servers]]\naddress = "192.0.2.11"\n'
        '[[services.real_servers]]\naddress = "192.0.2.12"\n')


MARK_BASE = 5000


def probe_marks(backend: FakeIpvs) -> dict[int, str]:
    return {key.fwmark: str(next(iter(entry.dests)))
            for key, entry in backend.table.entries.items() if key.is_fwmark}


async def test_a_service_inserted_above_keeps_marks_and_health(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(dr_config(tmp_path / "state"))
    daemon, backend = await make(path)
    assert probe_marks(backend) == {MARK_BASE: "192.0.2.11:80", MARK_BASE + 1: "192.0.2.12:80"}
    feed(daemon, RS1, ok=True)  # the first pass: up
    await daemon.reconcile(full=False)
    feed(daemon, RS1, ok=False)  # one failure of fall = 2
    path.write_text(dr_config(tmp_path / "state", above=True))
    assert await daemon.reload()
    assert probe_marks(backend) == {MARK_BASE: "192.0.2.11:80", MARK_BASE + 1: "192.0.2.12:80",
                                    MARK_BASE + 2: "192.0.2.21:80"}
    key = daemon.health.checks_of((WEB, RS1))[0]
    assert key.target.mark == MARK_BASE
    assert daemon.health.state(key).fails == 1, "the probe's rise/fall state carried over"
    feed(daemon, RS1, ok=False)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 0


async def test_marks_survive_a_restart_with_the_config_reordered(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(dr_config(tmp_path / "state"))
    _, backend = await make(path)
    path.write_text(dr_config(tmp_path / "state", above=True))
    restarted = Daemon(load(path), backend, config_path=path, runner=ManualRunner)
    await restarted.start()
    assert probe_marks(backend) == {MARK_BASE: "192.0.2.11:80", MARK_BASE + 1: "192.0.2.12:80",
                                    MARK_BASE + 2: "192.0.2.21:80"}


async def test_a_fwmark_service_lvsd_did_not_create_is_never_touched(tmp_path: Path) -> None:
    theirs = VirtualService(Service(ServiceKey.mark(MARK_BASE), "wlc"),
                            (Dest(DestKey(parse_address("203.0.113.9"), 0), weight=3),))
    path = tmp_path / "lvsd.toml"
    path.write_text(dr_config(tmp_path / "state"))
    daemon, backend = await make(path, Table((theirs,)))
    assert backend.table.to_table().by_key()[theirs.key] == theirs
    assert probe_marks(backend)[MARK_BASE + 1] == "192.0.2.11:80"
    assert [vs.key for vs in daemon.status.snapshot().foreign] == [theirs.key]
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nallow_empty = true\n')
    assert await daemon.reload()
    assert list(backend.table.entries) == [theirs.key]


# --- refusing to empty the table (defect 8) ----------------------------------------------------


async def test_a_reload_to_an_empty_config_is_refused(config_file: Path, tmp_path: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    config_file.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n# truncated\n')
    assert not await daemon.reload()
    assert daemon.reloads.last is not None and "allow_empty" in (daemon.reloads.last.error or "")
    assert WEB in backend.table.entries and backend.applied == []


async def test_an_empty_config_that_got_past_validation_is_refused_too(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, backend = await make(config_file, healthy_table())
    empty = dataclasses.replace(daemon.config, services=())
    monkeypatch.setattr("lvsd.reloader.load", lambda path: empty)
    assert not await daemon.reload()
    assert daemon.reloads.last is not None and "allow_empty" in (daemon.reloads.last.error or "")
    assert WEB in backend.table.entries and backend.applied == []


async def test_a_start_with_an_empty_config_over_owned_services_is_refused(
        config_file: Path) -> None:
    daemon, backend = await make(config_file)
    backend.applied.clear()
    empty = dataclasses.replace(daemon.config, services=())
    restarted = Daemon(empty, backend, config_path=config_file, runner=ManualRunner)
    with pytest.raises(LvsdError, match="allow_empty"):
        await restarted.start()
    assert WEB in backend.table.entries and backend.applied == []


# --- files and start-up (defect 10) ------------------------------------------------------------


async def test_a_corrupt_save_file_is_replaced_and_stop_still_withdraws(
        config_file: Path, tmp_path: Path) -> None:
    config_file.write_text(config_file.read_text().replace(
        "reconcile_delay = 0", 'reconcile_delay = 0\non_stop = "withdraw"'))
    save = tmp_path / "state" / "ipvsadm.rules"
    save.parent.mkdir(parents=True)
    save.write_bytes(b"\xff\xfe\x00 not a save file")
    daemon, backend = await make(config_file, healthy_table())
    feed(daemon, RS1, ok=False, times=2)
    await daemon.reconcile(full=False)
    await wait_for(lambda: save.read_bytes().startswith(b"-A"), limit=5)
    await daemon.stop()
    assert WEB not in backend.table.entries
    assert b"192.0.2.100" not in save.read_bytes()


async def test_a_reload_does_not_move_the_files_or_the_listener(config_file: Path,
                                                                tmp_path: Path) -> None:
    daemon, _ = await make(config_file, healthy_table())
    before = daemon.config.daemon
    config_file.write_text(config_text(tmp_path / "elsewhere", "192.0.2.11", "192.0.2.12")
                           .replace("[daemon]", '[daemon]\nlisten = "127.0.0.1:9999"'))
    assert await daemon.reload()
    after = daemon.config.daemon
    assert (after.state_dir, after.save_file, after.listen_port) == (
        before.state_dir, before.save_file, before.listen_port)
    assert not (tmp_path / "elsewhere").exists()


def test_a_daemon_traceback_is_not_chained_to_the_missing_uvloop(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(path: Path, config: Config, early: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    monkeypatch.setattr("lvsd.daemon.serve", failing)
    with pytest.raises(RuntimeError) as caught:
        run_daemon(config_file)
    assert caught.value.__context__ is None


async def test_an_api_port_in_use_fails_before_the_kernel_is_touched(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeIpvs()
    monkeypatch.setattr("lvsd.ipvs.netlink.NetlinkIpvs", lambda: backend)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_file.write_text(config_file.read_text().replace(
            "[daemon]", f'[daemon]\nlisten = "127.0.0.1:{port}"'))
        assert await serve(config_file, load(config_file)) == 2
    assert backend.dumps == 0 and backend.applied == []


# --- several checks per server (defect 12) -----------------------------------------------------


async def test_a_maintenance_file_is_in_addition_to_the_health_check(tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(config_text(tmp_path / "state", "192.0.2.11", "192.0.2.12").replace(
        'address = "192.0.2.11"\n',
        'address = "192.0.2.11"\n'
        'checks = [{ type = "file", path = "/run/m", rise = 1, fall = 1 }]\n'))
    daemon, backend = await make(path, healthy_table())
    http, maintenance = daemon.health.checks_of((WEB, RS1))
    assert (http.spec.type, maintenance.spec.type) == ("http", "file")
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(http, True, times=2)
    runner.report(maintenance, False)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 0
    runner.report(maintenance, True)
    await daemon.reconcile(full=False)
    assert kernel_weights(backend)["192.0.2.11:80"] == 1
    server = daemon.status.snapshot().services[0].servers[0]
    assert server.check_type == "http, file" and server.health == "up"


async def test_a_reload_logs_the_configs_warnings(config_file: Path) -> None:
    daemon, _ = await make(config_file, healthy_table())
    config_file.write_text(config_file.read_text().replace(
        'rise = 2, fall = 2', 'rise = 2, fall = 2, interval = "1s", timeout = "5s"'))
    with structlog.testing.capture_logs() as logged:
        assert await daemon.reload()
    (warning,) = [event for event in logged if event["event"] == "config_warning"]
    assert "longer than the interval" in warning["warning"]


async def test_a_table_change_is_logged_with_its_op_service_and_server(
        config_file: Path) -> None:
    daemon, _ = await make(config_file, healthy_table())
    feed(daemon, RS1, ok=False, times=2)
    with structlog.testing.capture_logs() as logged:
        await daemon.reconcile(full=False)
    (change,) = [event for event in logged if event["event"] == "table_change"]
    assert change == {"event": "table_change", "log_level": "info", "op": "edit_dest",
                      "service": str(WEB), "server": "192.0.2.11:80", "weight": 0}


async def test_the_daemon_runs_the_sync_daemons_its_config_asks_for_and_shows_them(
        tmp_path: Path) -> None:
    path = tmp_path / "lvsd.toml"
    track = tmp_path / "lvsd.track"
    path.write_text(config_text(tmp_path / "state", "192.0.2.11").replace(
        "[[services]]", f'[sync]\nmode = "both"\ninterface = "eth0"\nsyncid = 9\n\n'
                        f'[role]\ntrack_file = "{track}"\n\n[[services]]', 1))
    daemon, backend = await make(path)

    assert [(d.state.label, d.syncid) for d in backend.sync.daemons()] == [
        ("master", 9), ("backup", 9)]
    from lvsd.api import status_document

    document = status_document(daemon.status.snapshot(), 0.0)
    assert [d["state"] for d in document["sync_daemons"]["daemons"]] == ["master", "backup"]
    assert document["role"]["addresses"] == ["192.0.2.100"]
    assert track.read_text() == "1\n"  # its one server is not up yet: below quorum
    feed(daemon, RS1, True, times=2)
    await daemon.reconcile(full=False)
    assert track.read_text() == "0\n"

    path.write_text(path.read_text().replace('mode = "both"', 'mode = "off"'))
    assert await daemon.reload()
    assert backend.sync.daemons() == ()
    await daemon.stop()


def test_no_garbage_collection_runs_during_a_reload() -> None:
    """A reload's parse made a full collection due, which stalled the loop (parse thread or
    loop); collections resume after the reload, as someone else left them."""
    import gc

    from lvsd.daemon import collections_paused

    assert gc.isenabled()
    with collections_paused(True):
        assert not gc.isenabled()
    assert gc.isenabled()
    with collections_paused(False):
        assert gc.isenabled()
    gc.disable()
    try:
        with collections_paused(True):
            assert not gc.isenabled()
        assert not gc.isenabled(), "a collector someone else disabled stays disabled"
    finally:
        gc.enable()


def test_the_config_is_parsed_at_start_with_the_collector_paused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Collections during a 10,000-server parse cost ~10% of it and free nothing: what it
    builds lives as long as the process."""
    import gc

    from lvsd.errors import ConfigError

    seen: list[bool] = []

    def parse(path: Path) -> Config:
        seen.append(gc.isenabled())
        raise ConfigError(str(path), [])

    monkeypatch.setattr(daemon_module, "load", parse)
    assert run_daemon(tmp_path / "lvsd.toml") == 2
    assert seen == [False]
    assert gc.isenabled()


async def test_a_health_event_plans_its_server_alone_and_the_table_stays_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lvsd.toml"
    servers = [f"192.0.2.{i}" for i in range(11, 211)]
    path.write_text(config_text(tmp_path / "state", *servers))
    daemon, backend = await make(path)
    for address in servers:
        feed(daemon, DestKey(parse_address(address), 80), ok=True, times=2)
    await daemon.reconcile(full=False)
    asked: list[str] = []
    health_of = daemon.intake.health_of

    def counted(spec: ServiceSpec, server: ServerSpec) -> Status:
        asked.append(str(server.key))
        return health_of(spec, server)

    monkeypatch.setattr(daemon.intake, "health_of", counted)
    backend.applied.clear()
    feed(daemon, RS1, ok=False, times=2)
    await daemon.reconcile(full=False)
    assert backend.applied == [EditDest(WEB, Dest(RS1, weight=0))]
    assert asked == ["192.0.2.11:80"], "one server moved: one server planned"
    assert daemon.decisions[WEB].healthy_weight == 199
    backend.applied.clear()
    assert await daemon.reconcile(full=True) == [], "the full pass agrees with the partial one"
    assert daemon.decisions[WEB].healthy_weight == 199
