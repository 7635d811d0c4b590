"""A reload builds the new config's state in slices, the loop running between them, and puts
it in use in one step: at every turn of the loop the config, the health book and the probes
agree; reports taken meanwhile count; a failure at any slice leaves the old config whole; a
reload asked for during one runs after it.

Every slice is made one step long here (``one_step_slices``), so that the loop turns between
every two steps of the reload, as it does at 10,000 servers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lvsd.checks.manual import ManualRunner
from lvsd.config import load
from lvsd.daemon import Daemon
from lvsd.health import Status
from lvsd.ipvs.fake import FakeIpvs
from lvsd.pacing import Pacer, Steps
from lvsd.spec import Config, ServerRef

SERVICES = 6
PER_SERVICE = 4


def config_text(state_dir: Path, *, weight: int = 1, extra: int = 0) -> str:
    """SERVICES services of PER_SERVICE servers (+ ``extra`` in the last), weight ``weight``."""
    text = f'[daemon]\nstate_dir = "{state_dir}"\nreconcile_delay = 0\n'
    for service in range(SERVICES):
        text += (f'[[services]]\nname = "vs{service}"\naddress = "192.0.2.{100 + service}"\n'
                 'port = 80\nscheduler = "wrr"\nforward = "masq"\n'
                 'check = { type = "tcp", rise = 1, fall = 1 }\n')
        count = PER_SERVICE + (extra if service == SERVICES - 1 else 0)
        for server in range(count):
            text += (f'[[services.real_servers]]\naddress = "198.51.100.{server + 1}"\n'
                     f"port = {8000 + service}\nweight = {weight}\n")
    return text


@pytest.fixture
def one_step_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    async def every_step(self: Pacer) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(Pacer, "tick", every_step)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lvsd.toml"
    path.write_text(config_text(tmp_path / "state"))
    return path


async def started(config_file: Path) -> tuple[Daemon, FakeIpvs]:
    backend = FakeIpvs()
    daemon = Daemon(load(config_file), backend, config_path=config_file, runner=ManualRunner)
    await daemon.start()
    manual(daemon).report_all(True, "up")
    await daemon.reconcile(full=False)
    return daemon, backend


def manual(daemon: Daemon) -> ManualRunner:
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    return runner


def configured(config: Config) -> set[ServerRef]:
    return {(spec.key, server.key) for spec in config.services for server in spec.servers}


def agreement(daemon: Daemon) -> str | None:
    """What is out of step between the config in force, the health book, the probes and the
    snapshot /status serves; None when they agree."""
    refs = configured(daemon.config)
    if missing := [ref for ref in refs if not daemon.health.checks_of(ref)]:
        return f"{len(missing)} configured servers without a probe"
    if len(daemon.health) != len(refs):
        return f"{len(daemon.health)} probes for {len(refs)} servers"
    if set(manual(daemon).keys) != set(daemon.health.keys()):
        return "the runner probes other checks than the health book holds"
    shown = {(vs.key, rs.key): rs.configured_weight for vs in daemon.status.snapshot().services
             for rs in vs.servers}
    wanted = {(spec.key, server.key): server.dest.weight for spec in daemon.config.services
              for server in spec.servers}
    if shown != wanted:
        return "/status shows other servers or weights than the config in force"
    return None


class Watcher:
    """Looks at the daemon at every turn of the loop until stopped."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.turns = 0
        self.configs: list[Config] = []  # each config seen in force, in order
        self.problems: list[str] = []
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            self.turns += 1
            if not self.configs or self.configs[-1] is not self.daemon.config:
                self.configs.append(self.daemon.config)
            if (problem := agreement(self.daemon)) is not None:
                self.problems.append(f"turn {self.turns}: {problem}")
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


@pytest.mark.usefixtures("one_step_slices")
async def test_at_every_turn_of_the_loop_during_a_reload_config_probes_and_status_agree(
        config_file: Path, tmp_path: Path) -> None:
    daemon, backend = await started(config_file)
    old = daemon.config
    config_file.write_text(config_text(tmp_path / "state", weight=3, extra=5))
    watcher = Watcher(daemon)
    assert await daemon.reload()
    await watcher.stop()
    assert watcher.problems == []
    assert watcher.turns > SERVICES * 3, "the reload let the loop turn between its slices"
    assert watcher.configs == [old, daemon.config], "one swap, from the old config to the new"
    assert len(daemon.health) == SERVICES * PER_SERVICE + 5
    weights = [d.weight for entry in backend.table.entries.values() for d in entry.dests.values()]
    assert sorted(weights) == [0] * 5 + [3] * SERVICES * PER_SERVICE, \
        "every old server kept its health (up) and got its new weight; new ones await a probe"
    await daemon.stop()


@pytest.mark.usefixtures("one_step_slices")
async def test_a_report_taken_between_the_slices_of_a_reload_counts(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, backend = await started(config_file)
    spec = daemon.config.services[0]
    ref = (spec.key, spec.servers[0].key)
    (key,) = daemon.health.checks_of(ref)
    staged: list[int] = []
    staging = daemon.health.stage_steps

    def counted(*args: object, **kwargs: object) -> Steps[object]:
        steps = staging(*args, **kwargs)  # type: ignore[arg-type]
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            staged.append(1)
            yield None

    monkeypatch.setattr(daemon.health, "stage_steps", counted)
    config_file.write_text(config_text(tmp_path / "state", weight=2))
    reloading = asyncio.create_task(daemon.reload())
    while len(staged) < 2:  # the new book is half built
        await asyncio.sleep(0)
    manual(daemon).report(key, False, "refused")  # fall 1: down at once, in the old book
    assert await reloading
    assert daemon.health.status(ref) is Status.DOWN, "the new book carried the report over"
    probe = daemon.health.last_probe(key)
    assert probe is not None and probe.reason == "refused"
    assert daemon.health.not_up == 1
    assert backend.table.entries[spec.key].dests[ref[1]].weight == 0
    await daemon.stop()


@pytest.mark.usefixtures("one_step_slices")
@pytest.mark.parametrize("failing_after", [0, 1, 3, SERVICES - 1])
async def test_a_reload_that_fails_in_any_slice_leaves_the_old_config_whole(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        failing_after: int) -> None:
    daemon, backend = await started(config_file)
    old, probes = daemon.config, dict.fromkeys(daemon.health.keys())
    states = {key: daemon.health.state(key) for key in probes}
    backend.applied.clear()
    book = daemon.health
    staging = book.stage_steps

    def breaking(*args: object, **kwargs: object) -> Steps[object]:
        steps = staging(*args, **kwargs)  # type: ignore[arg-type]
        for _ in range(failing_after):
            next(steps)
            yield None
        raise RuntimeError("a bug in the middle of a reload")

    monkeypatch.setattr(book, "stage_steps", breaking)
    config_file.write_text(config_text(tmp_path / "state", weight=4, extra=3))
    watcher = Watcher(daemon)
    assert not await daemon.reload()
    await watcher.stop()
    assert watcher.problems == [] and watcher.configs == [old]
    assert daemon.config is old
    assert set(daemon.health.keys()) == set(probes)
    assert {key: daemon.health.state(key) for key in probes} == states
    assert backend.applied == []
    assert daemon.reloads.last is not None and not daemon.reloads.last.ok
    assert daemon.reloads.last.error == "RuntimeError: a bug in the middle of a reload"
    await daemon.stop()


@pytest.mark.usefixtures("one_step_slices")
async def test_a_reload_asked_for_during_a_reload_runs_after_it_with_the_file_as_then(
        config_file: Path, tmp_path: Path) -> None:
    daemon, backend = await started(config_file)
    loop = asyncio.create_task(daemon.run())
    config_file.write_text(config_text(tmp_path / "state", weight=2))
    watcher = Watcher(daemon)
    daemon.request_reload()
    while not daemon._control_lock.locked():  # the first reload has begun
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    config_file.write_text(config_text(tmp_path / "state", weight=5, extra=2))
    daemon.request_reload()  # SIGHUP again, mid-reload
    for _ in range(2000):
        if daemon.config.services[0].servers[0].dest.weight == 5 and \
                not daemon._control_lock.locked():
            break
        await asyncio.sleep(0.001)
    await watcher.stop()
    assert watcher.problems == []
    weights = [config.services[0].servers[0].dest.weight for config in watcher.configs]
    assert weights[-1] == 5, "the second reload read the file as it was then"
    assert len(daemon.health) == SERVICES * PER_SERVICE + 2
    assert {d.weight for entry in backend.table.entries.values()
            for d in entry.dests.values()} == {0, 5}
    daemon.request_stop()
    await loop
    await daemon.stop()


@pytest.mark.usefixtures("one_step_slices")
async def test_two_reloads_at_once_apply_one_after_the_other(
        config_file: Path, tmp_path: Path) -> None:
    daemon, _ = await started(config_file)
    config_file.write_text(config_text(tmp_path / "state", weight=6))
    watcher = Watcher(daemon)
    assert await asyncio.gather(daemon.reload(), daemon.reload()) == [True, True]
    await watcher.stop()
    assert watcher.problems == []
    assert len(watcher.configs) == 3, "two whole swaps, never interleaved"
    await daemon.stop()
