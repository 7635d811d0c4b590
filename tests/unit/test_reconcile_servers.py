"""server_plan: a few servers of a service planned alone give what planning it whole gives."""

from __future__ import annotations

import ipaddress
import random

import pytest

from lvsd.dirt import Dirty
from lvsd.health import Status
from lvsd.model import Dest, DestKey, Op, Protocol, Service, ServiceKey, Table
from lvsd.reconcile import ServiceDecision, desired_service, plan, server_plan
from lvsd.spec import Config, DaemonSettings, ServerSpec, ServiceIndex, ServiceSpec
from lvsd.weight import Admin, AdminState, AgentCommand, AgentReport, Standing

KEY = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)


def service(rng: random.Random, servers: int, **options: object) -> ServiceSpec:
    specs = tuple(
        ServerSpec(Dest(DestKey(ipaddress.ip_address("198.18.0.1") + i, 80),
                        weight=rng.choice((1, 2, 5, 100))),
                   checks=(),
                   disabled=rng.random() < 0.1)
        for i in range(servers))
    return ServiceSpec(Service(KEY, "wrr"), "web", specs, **options)  # type: ignore[arg-type]


STANDINGS = (
    Standing(),
    Standing(admin=Admin(AdminState.DRAINED)),
    Standing(admin=Admin(AdminState.DISABLED)),
    Standing(admin=Admin(weight=7)),
    Standing(agent=AgentReport(percent=50)),
    Standing(agent=AgentReport(command=AgentCommand.DOWN)),
    Standing(ramp=0.3),
)


class World:
    """Each server's health and standing, drawn at random and redrawn for some."""

    def __init__(self, rng: random.Random, spec: ServiceSpec) -> None:
        self.rng = rng
        self.status = {s.key: self.draw_status() for s in spec.servers}
        self.standings = {s.key: self.draw_standing() for s in spec.servers}

    def draw_status(self) -> Status:
        return self.rng.choice((Status.UP, Status.UP, Status.UP, Status.DOWN, Status.UNKNOWN))

    def draw_standing(self) -> Standing:
        return STANDINGS[0] if self.rng.random() < 0.6 else self.rng.choice(STANDINGS)

    def health(self, _spec: ServiceSpec, server: ServerSpec) -> Status:
        return self.status[server.key]

    def standing(self, _spec: ServiceSpec, server: ServerSpec) -> Standing:
        return self.standings[server.key]


def checked(spec: ServiceSpec) -> ServiceSpec:
    """The same service with every server health-checked (health then counts)."""
    from lvsd.checks.tcp import TcpCheck  # only this helper needs a check
    check = TcpCheck()
    servers = tuple(ServerSpec(s.dest, (check,), s.disabled) for s in spec.servers)  # type: ignore[arg-type]
    return ServiceSpec(spec.service, spec.name, servers, spec.on_failure, spec.quorum,
                       spec.sorry_server, spec.fail_open)


def as_set(ops: list[Op]) -> set[Op]:
    return set(ops)


@pytest.mark.parametrize("seed", range(300))
def test_planning_the_changed_servers_alone_gives_the_whole_plan(seed: int) -> None:
    rng = random.Random(seed)
    spec = checked(service(
        rng, rng.choice((1, 3, 10, 40)),
        on_failure=rng.choice(("weight0", "remove")),
        quorum=rng.choice((1, 1, 5, 50)),
        sorry_server=(Dest(DestKey(ipaddress.ip_address("203.0.113.9"), 80))
                      if rng.random() < 0.3 else None),
        fail_open=rng.random() < 0.3))
    world = World(rng, spec)
    before, decision = desired_service(spec, world.health, standing=world.standing)
    kernel = {d.key: d for d in before.dests}
    changed = rng.sample(spec.servers, rng.randint(1, len(spec.servers)))
    for server in changed:
        world.status[server.key] = world.draw_status()
        if rng.random() < 0.3:
            world.standings[server.key] = world.draw_standing()

    partial = server_plan(spec, changed, decision, world.health, kernel.get, world.standing)
    after, whole_decision = desired_service(spec, world.health, standing=world.standing)
    whole = plan(Table((after,)), Table((before,)))
    if partial is None:
        assert decision.sorry_active or decision.fail_open_active or \
            whole_decision.sorry_active or whole_decision.fail_open_active
        return
    ops, partial_decision = partial
    assert as_set(ops) == as_set(whole)
    assert partial_decision == whole_decision


def test_a_change_that_brings_in_the_sorry_server_is_planned_whole() -> None:
    rng = random.Random(1)
    spec = checked(service(rng, 2, quorum=1,
                           sorry_server=Dest(DestKey(ipaddress.ip_address("203.0.113.9"), 80))))
    spec = ServiceSpec(spec.service, spec.name,
                       tuple(ServerSpec(s.dest, s.checks) for s in spec.servers),
                       sorry_server=spec.sorry_server)
    world = World(rng, spec)
    world.status = dict.fromkeys(world.status, Status.UP)
    world.standings = dict.fromkeys(world.standings, Standing())
    before, decision = desired_service(spec, world.health, standing=world.standing)
    world.status = dict.fromkeys(world.status, Status.DOWN)
    kernel = {d.key: d for d in before.dests}
    assert server_plan(spec, spec.servers, decision, world.health, kernel.get,
                       world.standing) is None


def test_a_consistent_hash_service_is_planned_whole() -> None:
    rng = random.Random(2)
    spec = checked(service(rng, 3))
    spec = ServiceSpec(spec.service, spec.name, spec.servers, consistent_hash=True)
    world = World(rng, spec)
    _, decision = desired_service(spec, world.health, standing=world.standing)
    assert server_plan(spec, spec.servers[:1], decision, world.health, lambda _key: None,
                       world.standing) is None


def test_planning_one_server_asks_for_its_health_alone() -> None:
    rng = random.Random(3)
    spec = checked(service(rng, 1000))
    asked: list[DestKey] = []

    def health(_spec: ServiceSpec, server: ServerSpec) -> Status:
        asked.append(server.key)
        return Status.UP

    before, decision = desired_service(spec, health)
    asked.clear()
    kernel = {d.key: d for d in before.dests}
    ops, _ = server_plan(spec, spec.servers[500:501], decision, health, kernel.get) or ([], None)
    assert asked == [spec.servers[500].key]
    assert ops == []


def test_a_dirty_server_the_config_dropped_plans_its_service_whole() -> None:
    rng = random.Random(4)
    spec = service(rng, 3)
    index = ServiceIndex(lambda: config)
    config = Config(DaemonSettings.__new__(DaemonSettings), (spec,))  # only .services is read
    dirty = Dirty()
    dirty.add_server((KEY, spec.servers[0].key))
    specs, servers = dirty.take(index)
    assert specs == [spec] and servers == {KEY: [spec.servers[0]]}
    dirty.add_server((KEY, DestKey(ipaddress.ip_address("198.51.100.250"), 80)))
    specs, servers = dirty.take(index)
    assert specs == [spec] and servers == {}
    assert not dirty


def test_a_service_dirty_whole_is_not_planned_in_part() -> None:
    rng = random.Random(5)
    spec = service(rng, 3)
    config = Config(DaemonSettings.__new__(DaemonSettings), (spec,))
    dirty = Dirty()
    dirty.add_server((KEY, spec.servers[0].key))
    dirty.add(KEY)
    assert dirty.take(ServiceIndex(lambda: config)) == ([spec], {})


def test_decisions_name_the_serving_servers() -> None:
    rng = random.Random(6)
    spec = checked(service(rng, 4))
    down = spec.servers[1].key

    def health(_spec: ServiceSpec, server: ServerSpec) -> Status:
        return Status.DOWN if server.key == down else Status.UP

    _, decision = desired_service(spec, health)
    assert isinstance(decision, ServiceDecision)
    assert decision.serving == {s.key for s in spec.servers if s.key != down and not s.disabled}
