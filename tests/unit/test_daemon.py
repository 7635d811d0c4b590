"""The daemon's logic over the in-memory backend: results are fed by hand, no probe runs.

Kernel behaviour is proven in tests/integration; these tests pin the daemon's decisions:
what it writes, and what it must not write.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from lvsd.checks.manual import ManualRunner
from lvsd.config import load
from lvsd.daemon import Daemon
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
from lvsd.spec import Config

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
    assert daemon.last_reload is not None and not daemon.last_reload.ok
    assert "services[0] (tcp:nope:80).address: not an IP address" in (daemon.last_reload.error
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
