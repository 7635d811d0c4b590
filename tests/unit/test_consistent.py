"""Consistent hashing across directors: canonical order, weight history, fingerprint.

``MhKernel`` models the two things the kernel builds an ``mh`` table from that a dump does
not show plainly: the list order (an add goes to the head) and each destination's
``last_weight`` (kept through weight 0; a deleted destination waits in the trash with it
and a re-add takes it back). Two simulated directors that went through different histories
must end with the same inputs.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lvsd.config import loads
from lvsd.consistent import (
    Hashing,
    canonical_order,
    fingerprint,
    hashing_of,
    last_weights_after,
    table_size,
)
from lvsd.health import Status
from lvsd.model import (
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    AddDest,
    AddService,
    DeleteDest,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    parse_address,
)
from lvsd.reconcile import desired, plan
from lvsd.spec import Config, ServerRef, ServerSpec, ServiceSpec

VIP = ServiceKey.virtual(6, "198.51.100.10", 80)  # type: ignore[arg-type]


def config(servers: Iterable[int] = (21, 22, 23), weights: Mapping[int, int] | None = None,
           extra: str = "") -> Config:
    return _config(tuple(servers), tuple(sorted((weights or {}).items())), extra)


@functools.cache
def _config(servers: tuple[int, ...], weight_items: tuple[tuple[int, int], ...],
            extra: str) -> Config:
    weights = dict(weight_items)
    rows = "\n".join(f'  {{ address = "192.0.2.{n}", weight = {weights.get(n, 1)} }},'
                     for n in servers)
    return loads(f"""
[[services]]
address = "198.51.100.10"
port = 80
consistent_hash = true
check = {{ type = "tcp" }}
{extra}
real_servers = [
{rows}
]
""")


def key(n: int) -> DestKey:
    return DestKey(parse_address(f"192.0.2.{n}"), 80)


HealthOf = Callable[[ServiceSpec, ServerSpec], Status]


def down(*numbers: int) -> HealthOf:
    def of(_spec: ServiceSpec, server: ServerSpec) -> Status:
        return Status.DOWN if server.key.address.packed[-1] in numbers else Status.UP
    return of


ALL_UP = down()


@dataclass
class MhKernel:
    service: Service | None = None
    order: list[DestKey] = field(default_factory=list)  # head first
    dests: dict[DestKey, Dest] = field(default_factory=dict)
    last: dict[DestKey, int] = field(default_factory=dict)
    trash: dict[DestKey, int] = field(default_factory=dict)

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            match op:
                case AddService(service) | EditService(service):
                    self.service = service
                case AddDest(_, dest):
                    assert dest.key not in self.dests
                    self.order.insert(0, dest.key)
                    self.dests[dest.key] = dest
                    self.last[dest.key] = self.trash.pop(dest.key, 0)
                    if dest.weight > 0:
                        self.last[dest.key] = dest.weight
                case EditDest(_, dest):
                    assert dest.key in self.dests
                    self.dests[dest.key] = dest
                    if dest.weight > 0:
                        self.last[dest.key] = dest.weight
                case DeleteDest(_, dest_key):
                    self.order.remove(dest_key)
                    del self.dests[dest_key]
                    self.trash[dest_key] = self.last.pop(dest_key)  # connections keep it
                case _:
                    raise AssertionError(op)

    def table(self) -> Table:
        if self.service is None:
            return Table()
        return Table((VirtualService(self.service, tuple(self.dests[k] for k in self.order)),))

    def inputs(self) -> tuple[object, ...]:
        """What mh builds its table from."""
        assert self.service is not None
        return (self.service.scheduler, self.service.sched_flags,
                tuple((k, self.last[k]) for k in self.order))

    def flush(self) -> None:  # ipvsadm -C: the trash goes too
        self.__init__()  # type: ignore[misc]


@dataclass
class Director:
    kernel: MhKernel = field(default_factory=MhKernel)
    last: dict[ServerRef, int] = field(default_factory=dict)  # lvsd's state file

    def run(self, cfg: Config, health: HealthOf = ALL_UP, hashed: bool = True) -> list[Op]:
        hashing = hashing_of(cfg, self.last) if hashed else Hashing()
        want, _ = desired(cfg, health)
        seen: dict[ServerRef, int] = {}
        ops = plan(want, self.kernel.table(), {VIP}, hashing, seen)
        self.kernel.apply(ops)
        self.last = last_weights_after(self.last, seen, ops, (), hashing.weights, hashing.refs)
        return ops

    def fingerprint(self) -> str | None:
        vs = self.kernel.table().services[0]
        return fingerprint(vs, self.last, 4093)


# --- config ------------------------------------------------------------------------------


def test_consistent_hash_means_mh_with_fallback_and_allows_mh_port() -> None:
    spec = config(extra='sched_flags = ["mh-port"]').services[0]
    assert spec.consistent_hash
    assert spec.service.scheduler == "mh"
    assert spec.service.sched_flags == SVC_F_SCHED1 | SVC_F_SCHED2
    assert config().services[0].service.sched_flags == SVC_F_SCHED1
    assert spec.on_failure == "weight0"


def problems_of(extra: str, weights: Mapping[int, int] | None = None) -> list[str]:
    from lvsd.errors import ConfigError
    try:
        config(extra=extra, weights=weights)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    raise AssertionError("accepted")


def test_contradicting_settings_are_refused_with_the_fix() -> None:
    (scheduler,) = problems_of('scheduler = "rr"')
    assert ".scheduler" in scheduler and 'set scheduler = "mh" or leave scheduler out' in scheduler
    (on_failure,) = problems_of('on_failure = "remove"')
    assert 'set on_failure = "weight0" or leave it out' in on_failure
    (flag,) = problems_of('sched_flags = ["flag-3"]')
    assert "only mh-fallback and mh-port" in flag
    (weight,) = problems_of("", weights={22: 0})
    assert "real_servers[1]" in weight and "disabled = true" in weight


def test_explicit_mh_and_weight0_are_accepted() -> None:
    spec = config(extra='scheduler = "mh"\non_failure = "weight0"\n'
                  'sched_flags = ["mh-fallback"]').services[0]
    assert spec.service.sched_flags == SVC_F_SCHED1


# --- order -------------------------------------------------------------------------------


def test_destinations_are_added_in_address_order_so_the_kernel_lists_them_highest_first() -> None:
    director = Director()
    ops = director.run(config(servers=(23, 21, 22)))
    assert [op.dest.key for op in ops if isinstance(op, AddDest)] == [key(21), key(22), key(23)]
    assert director.kernel.order == [key(23), key(22), key(21)]
    assert director.run(config(servers=(23, 21, 22))) == []


def test_canonical_order_sorts_by_address_then_port() -> None:
    dests = [Dest(DestKey(parse_address(a), p)) for a, p in
             (("192.0.2.9", 80), ("192.0.2.10", 80), ("192.0.2.10", 81))]
    assert [str(d.key) for d in canonical_order(dests)] == [
        "192.0.2.10:81", "192.0.2.10:80", "192.0.2.9:80"]


def test_a_wrong_order_is_fixed_by_re_adding_only_what_stands_before_the_right_tail() -> None:
    director = Director()
    director.kernel.service = config().services[0].service
    for n in (21, 23, 22, 24):  # listed 24, 22, 23, 21: only 21 is in place at the tail
        director.kernel.apply([AddDest(VIP, Dest(key(n)))])
    ops = director.run(config(servers=(21, 22, 23, 24)))
    assert {op.dest for op in ops if isinstance(op, DeleteDest)} == {key(22), key(23), key(24)}
    assert director.kernel.order == [key(24), key(23), key(22), key(21)]
    assert director.run(config(servers=(21, 22, 23, 24))) == []


def test_a_server_added_between_others_re_adds_those_listed_before_it() -> None:
    director = Director()
    director.run(config(servers=(21, 23)))
    ops = director.run(config(servers=(21, 22, 23)))
    assert [type(op).__name__ for op in ops] == ["DeleteDest", "AddDest", "AddDest"]
    assert director.kernel.order == [key(23), key(22), key(21)]


def test_a_server_added_after_the_highest_is_just_added() -> None:
    director = Director()
    director.run(config(servers=(21, 22)))
    ops = director.run(config(servers=(21, 22, 23)))
    assert ops == [AddDest(VIP, Dest(key(23)))]


def test_services_without_consistent_hash_keep_the_plain_plan() -> None:
    cfg = loads("""
[[services]]
address = "198.51.100.10"
port = 80
scheduler = "rr"
check = { type = "tcp" }
real_servers = [{ address = "192.0.2.23" }, { address = "192.0.2.21" }]
""")
    want, _ = desired(cfg, down(23))
    assert [d.key for d in want.services[0].dests] == [key(23), key(21)]
    ops = plan(want, Table(), (), hashing_of(cfg, {}))
    assert [op for op in ops if isinstance(op, AddDest)] == [
        AddDest(VIP, Dest(key(23), weight=0)), AddDest(VIP, Dest(key(21)))]


# --- weight history ----------------------------------------------------------------------


def test_a_server_down_at_start_is_added_at_its_weight_and_set_to_zero_in_the_same_batch() -> None:
    director = Director()
    ops = director.run(config(weights={22: 3}), down(22))
    adds = [op for op in ops if isinstance(op, AddDest | EditDest)]
    assert adds[1:3] == [AddDest(VIP, Dest(key(22), weight=3)),
                         EditDest(VIP, Dest(key(22), weight=0))]
    assert director.kernel.last[key(22)] == 3
    assert director.last[(VIP, key(22))] == 3


def test_a_restart_while_a_server_is_down_builds_the_same_table_as_a_long_running_one() -> None:
    cfg = config(weights={21: 2, 22: 3, 23: 1})
    long_running, restarted = Director(), Director()
    long_running.run(cfg)
    long_running.run(cfg, down(22))
    restarted.run(cfg, down(22))
    assert long_running.kernel.inputs() == restarted.kernel.inputs()
    assert long_running.fingerprint() == restarted.fingerprint() is not None


def test_without_the_weight_history_the_same_restart_builds_another_table() -> None:
    cfg = config(weights={21: 2, 22: 3, 23: 1})
    long_running, restarted = Director(), Director()
    long_running.run(cfg, hashed=False)
    long_running.run(cfg, down(22), hashed=False)
    restarted.run(cfg, down(22), hashed=False)
    assert long_running.kernel.inputs() != restarted.kernel.inputs()


def test_a_lost_state_file_refreshes_the_last_weight_of_a_server_at_zero() -> None:
    cfg = config(weights={22: 4})
    director = Director()
    director.kernel.service = cfg.services[0].service
    director.kernel.apply([AddDest(VIP, Dest(key(n), weight=0 if n == 22 else 1))
                           for n in (21, 22, 23)])  # 22 was added down: no slots
    ops = director.run(cfg, down(22))
    assert ops == [EditDest(VIP, Dest(key(22), weight=4)), EditDest(VIP, Dest(key(22), weight=0))]
    assert director.kernel.last[key(22)] == 4
    assert director.run(cfg, down(22)) == []


def test_a_weight_changed_while_the_server_is_down_reaches_its_last_weight() -> None:
    director = Director()
    director.run(config(weights={22: 2}), down(22))
    ops = director.run(config(weights={22: 5}), down(22))
    assert ops == [EditDest(VIP, Dest(key(22), weight=5)), EditDest(VIP, Dest(key(22), weight=0))]
    assert Director().run(config(weights={22: 5}), down(22))  # and a fresh one agrees:
    fresh = Director()
    fresh.run(config(weights={22: 5}), down(22))
    assert fresh.kernel.inputs() == director.kernel.inputs()


def test_any_two_histories_end_with_the_same_mh_inputs() -> None:
    """Health flaps, restarts with and without the state file, a flushed table, servers added
    and removed: after one pass over the same config and health, two directors agree."""
    for seed in range(100):
        rng = random.Random(seed)
        pool = [21, 22, 23, 24, 25]
        directors = [Director(), Director()]
        servers: list[int] = pool[:3]
        weights = {n: rng.randint(1, 4) for n in pool}
        for _ in range(12):
            event = rng.random()
            if event < 0.2:
                servers = sorted(rng.sample(pool, rng.randint(1, len(pool))))
            elif event < 0.3:
                weights[rng.choice(pool)] = rng.randint(1, 4)
            cfg = config(servers=servers, weights=weights)
            for director in directors:
                if rng.random() < 0.1:
                    director.last = {}  # state file lost, kernel table kept
                if rng.random() < 0.05:
                    director.kernel.flush()
                director.run(cfg, down(*rng.sample(servers, rng.randint(0, len(servers)))))
        cfg = config(servers=servers, weights=weights)
        final = down(*rng.sample(servers, rng.randint(0, len(servers))))
        for director in directors:
            director.run(cfg, final)
        first, second = directors
        assert first.kernel.inputs() == second.kernel.inputs(), seed
        assert first.kernel.order == [key(n) for n in sorted(servers, reverse=True)], seed
        assert all(first.kernel.last[key(n)] == weights[n] for n in servers), seed
        assert first.fingerprint() == second.fingerprint() is not None, seed


def test_last_weights_follow_accepted_ops_and_forget_servers_that_left() -> None:
    ops: list[Op] = [EditDest(VIP, Dest(key(21), weight=3)), EditDest(VIP, Dest(key(22), weight=0)),
                     EditDest(VIP, Dest(key(23), weight=5))]
    after = last_weights_after({(VIP, key(24)): 2, (VIP, key(22)): 1}, {(VIP, key(22)): 7},
                               ops, {ops[2]}, {VIP})
    assert after == {(VIP, key(21)): 3, (VIP, key(22)): 7, (VIP, key(24)): 2}
    kept = last_weights_after(after, {}, [], (), {VIP}, {(VIP, key(21))})
    assert kept == {(VIP, key(21)): 3}


# --- fingerprint -------------------------------------------------------------------------


def vs(*dests: Dest, flags: int = SVC_F_SCHED1) -> VirtualService:
    return VirtualService(Service(VIP, "mh", flags), dests)


def test_the_fingerprint_follows_every_mh_input_but_not_availability() -> None:
    a, b = Dest(key(22), weight=2), Dest(key(21), weight=1)
    base = fingerprint(vs(a, b), {}, 4093)
    assert base is not None and len(base) == 13 and int(base, 16) < 2**52
    assert fingerprint(vs(b, a), {}, 4093) != base  # order
    assert fingerprint(vs(a.with_weight(3), b), {}, 4093) != base  # last weight
    assert fingerprint(vs(a, b, flags=SVC_F_SCHED1 | SVC_F_SCHED2), {}, 4093) != base
    assert fingerprint(vs(a, b), {}, 65521) != base  # table size
    assert fingerprint(vs(a.with_weight(0), b), {(VIP, key(22)): 2}, 4093) == base
    assert fingerprint(vs(a.with_weight(0), b), {}, 4093) is None  # last weight unknown


def test_table_sizes_by_kconfig_index() -> None:
    assert table_size(12) == 4093
    assert table_size(16) == 65521
    assert table_size(8) == 251
    assert table_size(7) is None and table_size(18) is None


def test_a_server_the_operator_takes_out_stays_in_the_table_at_weight_zero() -> None:
    from lvsd.reconcile import desired_service
    from lvsd.weight import Admin, AdminState, Standing

    spec = config().services[0]

    def standing(_spec: ServiceSpec, server: ServerSpec) -> Standing:
        out = server.key == key(22)
        return Standing(Admin(AdminState.DISABLED)) if out else Standing()

    vs, _ = desired_service(spec, ALL_UP, (), standing)
    assert {d.key: d.weight for d in vs.dests} == {key(21): 1, key(22): 0, key(23): 1}


def test_slow_start_is_refused_and_an_agent_warned_about() -> None:
    (problem,) = problems_of('slow_start = "30s"')
    assert ".slow_start" in problem and "set slow_start = 0" in problem
    cfg = config(extra='agent = { port = 9999 }')
    assert any(".agent" in str(warning) for warning in cfg.warnings)
