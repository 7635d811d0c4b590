"""Slow start: the ramps' owner on a fake clock, and the daemon stepping a recovered server's
kernel weight up through its passes (in-memory backend, reports fed by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd import daemon as daemon_module
from lvsd.checks.manual import ManualRunner
from lvsd.config import load, loads
from lvsd.daemon import Daemon
from lvsd.errors import ConfigError
from lvsd.ipvs.fake import FakeIpvs
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.probe import CheckKey
from lvsd.slowstart import Ramps
from lvsd.spec import Config, ServerRef

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
API = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 8080)
RS1 = DestKey(parse_address("192.0.2.11"), 80)
RS2 = DestKey(parse_address("192.0.2.12"), 80)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(slow_start: str = '"10s"', extra: str = "", checked: bool = True) -> Config:
    check = 'check = { type = "tcp" }' if checked else ""
    return loads(f"""
[daemon]
state_dir = "/tmp/lvsd-slowstart-test"
[[services]]
address = "192.0.2.100"
port = 80
scheduler = "wrr"
slow_start = {slow_start}
{check}
[[services.real_servers]]
address = "192.0.2.11"
weight = 100
[[services.real_servers]]
address = "192.0.2.12"
weight = 100
slow_start = 0
{extra}
[[services]]
address = "192.0.2.100"
port = 8080
scheduler = "wrr"
[[services.real_servers]]
address = "192.0.2.11"
port = 8080
""")


def never(ref: ServerRef) -> bool:
    return False


def ramps_of(cfg: Config) -> tuple[Ramps, Clock]:
    clock = Clock()
    ramps = Ramps(clock=clock, wall=lambda: 5000.0 + clock.now)
    ramps.rebuild(cfg, never)
    return ramps, clock


def test_a_ramp_steps_at_its_step_times_and_names_only_its_service() -> None:
    ramps, clock = ramps_of(config())
    ref = (WEB, RS1)
    ramps.begin(ref)
    ramps.begin((WEB, RS2))  # slow_start = 0 on the server: off
    assert len(ramps) == 1 and ramps.share((WEB, RS2)) == 1.0
    assert ramps.share(ref) == 0.0
    assert ramps.ramp(ref) == (6010.0, 0.0)
    seen: list[tuple[float, float]] = []
    while (step := ramps.next_step()) is not None:
        clock.now = step
        assert ramps.due() == {WEB}
        seen.append((round(clock.now - 1000.0, 3), ramps.share(ref)))
    assert seen == [(float(i), i / 10) for i in range(1, 11)]
    assert not ramps and ramps.share(ref) == 1.0 and ramps.ramp(ref) is None


def test_nothing_is_due_between_steps_and_a_late_wake_takes_one_step() -> None:
    ramps, clock = ramps_of(config())
    ramps.begin((WEB, RS1))
    clock.now += 0.5
    assert ramps.due() == set()
    clock.now += 3.0  # woke late: one pass for the step it is at, no burst
    assert ramps.due() == {WEB}
    assert ramps.due() == set()
    assert ramps.share((WEB, RS1)) == 0.3
    assert ramps.next_step() == 1004.0


def test_a_server_that_comes_back_again_starts_its_ramp_over() -> None:
    ramps, clock = ramps_of(config())
    ramps.begin((WEB, RS1))
    clock.now += 5
    ramps.due()
    ramps.begin((WEB, RS1))
    assert ramps.share((WEB, RS1)) == 0.0
    assert ramps.next_step() == clock.now + 1.0


def test_ten_thousand_servers_one_ramping_cost_one_heap_entry() -> None:
    servers = "".join(f'[[services.real_servers]]\naddress = "10.0.{i // 250}.{i % 250 + 1}"\n'
                      for i in range(10_000))
    cfg = loads(f"""[daemon]\nstate_dir = "/tmp/x"\n[[services]]\naddress = "192.0.2.100"
port = 80\nscheduler = "wrr"\nslow_start = "30s"\n{servers}""")
    ramps, clock = ramps_of(cfg)
    ref = (cfg.services[0].key, cfg.services[0].servers[1234].key)
    ramps.begin(ref)
    assert len(ramps._steps) == 1
    clock.now += 1.5
    assert ramps.due() == {cfg.services[0].key}


def test_a_reload_ends_ramps_whose_slow_start_changed_and_ramps_added_unchecked_servers(
) -> None:
    ramps, _ = ramps_of(config(checked=False))
    ramps.begin((WEB, RS1))
    added = '[[services.real_servers]]\naddress = "192.0.2.13"\nweight = 100\n'
    new = config(checked=False, extra=added)
    ramps.rebuild(new, never)
    rs3 = (WEB, DestKey(parse_address("192.0.2.13"), 80))
    assert ramps.share((WEB, RS1)) == 0.0, "an unchanged slow start keeps its ramp"
    assert ramps.share(rs3) == 0.0, "a server the reload added ramps"
    ramps.rebuild(config('"20s"', checked=False, extra=added), never)
    assert ramps.share((WEB, RS1)) == 1.0 and ramps.share(rs3) == 1.0


def test_at_start_and_for_servers_the_kernel_serves_nothing_ramps() -> None:
    clock = Clock()
    ramps = Ramps(clock=clock)
    cfg = config(checked=False)
    ramps.rebuild(cfg, never)
    assert not ramps, "the first config adds nothing: servers ramp when they come back"
    added = '[[services.real_servers]]\naddress = "192.0.2.13"\nweight = 100\n'
    ramps.rebuild(config(checked=False, extra=added), lambda ref: True)
    assert not ramps, "a server the kernel already serves keeps its weight"


# --- through the daemon ---------------------------------------------------------------------

def daemon_config(tmp_path: Path) -> Path:
    path = tmp_path / "lvsd.toml"
    path.write_text(f"""
[daemon]
state_dir = "{tmp_path / 'state'}"
reconcile_delay = 0
[[services]]
address = "192.0.2.100"
port = 80
scheduler = "wrr"
slow_start = "10s"
check = {{ type = "tcp", rise = 1, fall = 1 }}
[[services.real_servers]]
address = "192.0.2.11"
weight = 100
[[services.real_servers]]
address = "192.0.2.12"
weight = 100
""")
    return path


async def started(tmp_path: Path) -> tuple[Daemon, FakeIpvs, Clock]:
    backend = FakeIpvs()
    path = daemon_config(tmp_path)
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:  # the daemon's ramps, on the test's clock
        patch.setattr(daemon_module, "Ramps", lambda: Ramps(clock=clock))
        daemon = Daemon(load(path), backend, config_path=path, runner=ManualRunner)
    await daemon.start()
    return daemon, backend, clock


def weights(backend: FakeIpvs) -> dict[DestKey, int]:
    return {key: dest.weight for key, dest in backend.table.entries[WEB].dests.items()}


def check_of(daemon: Daemon, server: DestKey) -> CheckKey:
    return daemon.health.checks_of((WEB, server))[0]


async def test_a_recovered_server_steps_up_from_weight_one_through_dirty_passes(
        tmp_path: Path) -> None:
    daemon, backend, clock = await started(tmp_path)
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(check_of(daemon, RS2), True)  # RS2 up: a first pass ramps it too
    runner.report(check_of(daemon, RS1), True)
    await daemon.reconcile(full=False)
    assert weights(backend) == {RS1: 1, RS2: 1}
    seen = [weights(backend)[RS1]]
    server = daemon.status.snapshot().services[0].servers[0]
    assert server.slow_start_share == 0.0 and server.slow_start_until is not None
    while (step := daemon.ramps.next_step()) is not None:
        clock.now = step
        daemon.dirty.update(daemon.ramps.due())
        dumps = backend.dumps
        await daemon.reconcile(full=False)
        assert backend.dumps == dumps, "a step is a dirty pass against the view"
        seen.append(weights(backend)[RS1])
    assert seen == [1, *range(10, 101, 10)]
    assert daemon.status.snapshot().services[0].servers[0].slow_start_until is None


async def test_a_server_going_down_then_up_ramps_again(tmp_path: Path) -> None:
    daemon, backend, clock = await started(tmp_path)
    runner = daemon.runner
    assert isinstance(runner, ManualRunner)
    runner.report(check_of(daemon, RS1), True)
    clock.now += 60
    daemon.dirty.update(daemon.ramps.due())
    await daemon.reconcile(full=False)
    assert weights(backend)[RS1] == 100
    runner.report(check_of(daemon, RS1), False)
    await daemon.reconcile(full=False)
    assert weights(backend)[RS1] == 0
    runner.report(check_of(daemon, RS1), True)
    await daemon.reconcile(full=False)
    assert weights(backend)[RS1] == 1
    clock.now += 5
    daemon.dirty.update(daemon.ramps.due())
    await daemon.reconcile(full=True)
    assert weights(backend)[RS1] == 50, "a full pass sees the same step"


def test_a_servers_slow_start_overrides_its_services_and_zero_turns_it_off() -> None:
    cfg = config('"1m"', extra='[[services.real_servers]]\naddress = "192.0.2.13"\n'
                              'slow_start = "500ms"\n')
    assert [s.slow_start for s in cfg.services[0].servers] == [60.0, 0.0, 0.5]
    assert [s.slow_start for s in cfg.services[1].servers] == [0.0]


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "slow_start: must be at least 0, got -1"),
    ('"soon"', "slow_start: not a duration: 'soon'"),
    ("true", "slow_start: expected a duration"),
    ('"2d"', "slow_start: not a duration"),
    ("86401", "slow_start: must be at most 86400"),
])
def test_a_bad_slow_start_says_where_and_what(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(value)
    assert any(str(p).startswith("services[0] (tcp:192.0.2.100:80).slow_start")
               and message in str(p) for p in caught.value.problems), caught.value.problems


def test_slow_start_under_a_weightless_scheduler_is_a_warning() -> None:
    cfg = loads('[daemon]\nstate_dir = "/tmp/x"\n[[services]]\naddress = "192.0.2.100"\n'
                'port = 80\nscheduler = "rr"\nslow_start = 5\n'
                '[[services.real_servers]]\naddress = "192.0.2.11"\n')
    assert [str(w) for w in cfg.warnings] == [
        "services[0] (tcp:192.0.2.100:80).slow_start: scheduler 'rr' ignores weights (only 0 "
        "counts): slow_start changes nothing but drain and down; use a weighted one such as "
        "wrr or wlc"]
