"""Drains: weight 0 until idle or drain_timeout; UDP at once; back in config ends it."""

from __future__ import annotations

from pathlib import Path

from lvsd.config import loads
from lvsd.drains import Drains
from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Protocol,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    parse_address,
)
from lvsd.spec import Config, DaemonSettings

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
DNS = ServiceKey.virtual(Protocol.UDP, "192.0.2.100", 53)
RS = DestKey(parse_address("192.0.2.11"), 80)


def table(service: ServiceKey, active: int = 0) -> Table:
    return Table((VirtualService(Service(service, "rr"),
                                 (Dest(RS, weight=0, stats=DestStats(active=active)),)),))


NOTHING = Config(DaemonSettings(Path("/nonexistent"), Path("/nonexistent/rules"), "127.0.0.1",
                                 9163, 30.0, 0.0, 30.0, "keep", "info", 1, 1000))


def drains_of(service: ServiceKey) -> Drains:
    drains = Drains()
    drains.start(service, Dest(RS), 30.0, now=100.0, wall=5000.0)
    return drains


def test_a_busy_server_drains_until_idle() -> None:
    drains = drains_of(WEB)
    drains.expire(table(WEB, active=2), NOTHING, now=110.0)
    assert drains.dests() == {WEB: [Dest(RS)]}
    assert drains.of(WEB)[0].deadline_wall == 5030.0
    drains.expire(table(WEB, active=0), NOTHING, now=111.0)
    assert not drains


def test_a_busy_server_goes_at_the_timeout() -> None:
    drains = drains_of(WEB)
    drains.expire(table(WEB, active=2), NOTHING, now=130.0)
    assert not drains


def test_udp_has_nothing_to_wait_for() -> None:
    drains = drains_of(DNS)
    drains.expire(table(DNS, active=2), NOTHING, now=101.0)
    assert not drains


def test_a_server_back_in_the_config_is_no_longer_drained() -> None:
    drains = drains_of(WEB)
    config = loads('[[services]]\naddress = "192.0.2.100"\nport = 80\n'
                   '[[services.real_servers]]\naddress = "192.0.2.11"\n')
    drains.expire(table(WEB, active=2), config, now=101.0)
    assert not drains
