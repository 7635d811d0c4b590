"""desired(): health, quorum, sorry server, fail-open, drain and DR-path probe services."""

from __future__ import annotations

from lvsd.config import loads
from lvsd.health import Status
from lvsd.model import Dest, DestKey, Forward, Protocol, ServiceKey, parse_address
from lvsd.reconcile import desired, desired_service, dr_checked
from lvsd.spec import Config, ServerSpec, ServiceSpec

CONFIG = """
[[services]]
name = "web"
address = "192.0.2.100"
port = 80
scheduler = "rr"
quorum = {quorum}
on_failure = "{on_failure}"
fail_open = {fail_open}
{sorry}
check = {{ type = "http", path = "/" }}
[[services.real_servers]]
address = "192.0.2.11"
weight = 2
[[services.real_servers]]
address = "192.0.2.12"
weight = 1
[[services.real_servers]]
address = "192.0.2.13"
weight = 1
disabled = true
"""


def config(quorum: int = 1, on_failure: str = "weight0", fail_open: str = "false",
           sorry: str = "") -> Config:
    return loads(CONFIG.format(quorum=quorum, on_failure=on_failure, fail_open=fail_open,
                               sorry=sorry))


def health(**by_last_octet: Status):  # type: ignore[no-untyped-def]
    def of(_spec: ServiceSpec, server: ServerSpec) -> Status:
        return by_last_octet.get(f"rs{server.key.address.packed[-1]}", Status.UP)
    return of


def weights(cfg: Config, health_of) -> dict[str, int]:  # type: ignore[no-untyped-def]
    vs, _ = desired_service(cfg.services[0], health_of)
    return {str(d.key.address): d.weight for d in vs.dests}


def test_healthy_servers_get_their_weight_and_a_disabled_one_gets_zero() -> None:
    assert weights(config(), health()) == {"192.0.2.11": 2, "192.0.2.12": 1, "192.0.2.13": 0}


def test_a_down_or_never_checked_server_gets_weight_zero() -> None:
    h = health(rs11=Status.DOWN, rs12=Status.UNKNOWN)
    assert weights(config(), h) == {"192.0.2.11": 0, "192.0.2.12": 0, "192.0.2.13": 0}


def test_on_failure_remove_leaves_failed_servers_out_of_the_table() -> None:
    h = health(rs11=Status.DOWN)
    assert weights(config(on_failure="remove"), h) == {"192.0.2.12": 1, "192.0.2.13": 0}


def test_below_quorum_the_sorry_server_takes_the_traffic() -> None:
    sorry = 'sorry_server = { address = "192.0.2.50", port = 80 }'
    cfg = config(quorum=2, sorry=sorry)
    vs, decision = desired_service(cfg.services[0], health(rs11=Status.DOWN))
    assert decision.below_quorum and decision.sorry_active and decision.healthy_weight == 1
    assert {str(d.key.address): d.weight for d in vs.dests} == {
        "192.0.2.11": 0, "192.0.2.12": 0, "192.0.2.13": 0, "192.0.2.50": 1}
    vs, decision = desired_service(cfg.services[0], health())
    assert not decision.sorry_active
    assert "192.0.2.50" not in {str(d.key.address) for d in vs.dests}


def test_fail_open_keeps_every_server_when_all_are_down() -> None:
    down = health(rs11=Status.DOWN, rs12=Status.DOWN)
    vs, decision = desired_service(config(fail_open="true").services[0], down)
    assert decision.fail_open_active
    assert {str(d.key.address): d.weight for d in vs.dests} == {
        "192.0.2.11": 2, "192.0.2.12": 1, "192.0.2.13": 0}
    assert weights(config(fail_open="false"), down)["192.0.2.11"] == 0


def test_a_draining_server_stays_at_weight_zero_until_released() -> None:
    gone = Dest(DestKey(parse_address("192.0.2.99"), 80), weight=5)
    vs, _ = desired_service(config().services[0], health(), [gone])
    assert vs.dests[-1] == gone.with_weight(0)


def test_dr_path_checks_get_one_fwmark_service_per_server() -> None:
    cfg = loads("""
[daemon]
dr_check_mark_base = 1000
[[services]]
address = "192.0.2.100"
port = 80
check = { type = "http", dr_path = true }
[[services.real_servers]]
address = "192.0.2.11"
[[services.real_servers]]
address = "192.0.2.12"
check = { dr_path = false }
""")
    web = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
    rs11 = (web, DestKey(parse_address("192.0.2.11"), 80))
    assert dr_checked(cfg) == [rs11]
    table, _ = desired(cfg, lambda spec, server: Status.UP, marks={rs11: 1000})
    probe = table.by_key().get(ServiceKey.mark(1000))
    assert probe is not None and probe.service.scheduler == "rr"
    assert [(str(d.key), d.weight, d.forward) for d in probe.dests] == [
        ("192.0.2.11:80", 1, Forward.ROUTE)]
