"""The overrides owner: each action as a table, expiry, the state file's slot, the reload rule."""

from __future__ import annotations

import argparse

import pytest

from lvsd.cli import build_parser
from lvsd.cli_ctl import Usage, admin_body
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.overrides import (
    Action,
    Change,
    Override,
    Overrides,
    changed,
    decode,
    encode,
)
from lvsd.weight import AdminState

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
RS1 = DestKey(parse_address("192.0.2.11"), 80)
RS2 = DestKey(parse_address("2001:db8::12"), 80)
ENABLED, DRAINED, DISABLED = AdminState.ENABLED, AdminState.DRAINED, AdminState.DISABLED


@pytest.mark.parametrize(("before", "action", "after"), [
    (Override(), Action.DRAIN, Override(DRAINED)),
    (Override(DRAINED), Action.UNDRAIN, Override()),
    (Override(DISABLED), Action.UNDRAIN, Override(DISABLED)),  # undrain never enables
    (Override(), Action.DISABLE, Override(DISABLED)),
    (Override(DRAINED), Action.DISABLE, Override(DISABLED)),
    (Override(DISABLED), Action.ENABLE, Override()),
    (Override(DRAINED), Action.ENABLE, Override()),
    (Override(DRAINED, 7), Action.UNDRAIN, Override(ENABLED, 7)),  # the weight stays
    (Override(ENABLED, 7, 100.0), Action.CLEAR_WEIGHT, Override()),
    (Override(DRAINED, 7), Action.CLEAR_WEIGHT, Override(DRAINED)),
])
def test_each_action_changes_only_its_part(before: Override, action: Action,
                                           after: Override) -> None:
    assert changed(before, Change(action, ((WEB, RS1),)), now=50.0) == after


def test_a_weight_for_a_while_expires_at_now_plus_the_duration() -> None:
    assert changed(Override(DRAINED), Change(Action.WEIGHT, (), 3, 60.0), now=1000.0) == \
        Override(DRAINED, 3, 1060.0)
    assert changed(Override(), Change(Action.WEIGHT, (), 3), now=1000.0) == Override(ENABLED, 3)


def test_expiry_ends_the_weight_and_keeps_the_drain() -> None:
    owner = Overrides()
    owner.apply(Change(Action.WEIGHT, ((WEB, RS1), (WEB, RS2)), 3, 10.0), now=100.0)
    owner.apply(Change(Action.DRAIN, ((WEB, RS1),)), now=100.0)
    assert owner.next_expiry() == 110.0
    assert owner.expire(109.9) == []
    assert set(owner.expire(110.0)) == {(WEB, RS1), (WEB, RS2)}
    assert owner.get((WEB, RS1)) == Override(DRAINED)
    assert len(owner) == 1, "an override that overrides nothing is not kept"
    assert owner.next_expiry() is None


def test_apply_reports_only_the_services_it_changed() -> None:
    owner = Overrides()
    assert owner.apply(Change(Action.DRAIN, ((WEB, RS1),)), now=0.0) == {WEB}
    assert owner.apply(Change(Action.DRAIN, ((WEB, RS1),)), now=0.0) == set()
    assert owner.apply(Change(Action.UNDRAIN, ((WEB, RS2),)), now=0.0) == set()


def test_the_state_file_slot_round_trips() -> None:
    owner = Overrides({(WEB, RS1): Override(DRAINED), (WEB, RS2): Override(ENABLED, 9, 1e9)})
    again = decode(encode(owner))
    assert sorted(again.items(), key=str) == sorted(owner.items(), key=str)
    assert decode({}).items() == []


@pytest.mark.parametrize(("slot", "problem"), [
    ({"format": 2, "servers": []}, "format 2"),
    ({"format": 1, "servers": {}}, "not a list"),
    ({"format": 1, "servers": [{"service": [2, 6, "192.0.2.100", 80, 0],
                                "server": ["192.0.2.11", 80], "state": "asleep"}]}, "asleep"),
    ({"format": 1, "servers": [{"service": [2, 6, "192.0.2.100", 80, 0],
                                "server": ["192.0.2.11", 80], "state": "enabled",
                                "weight": 70000}]}, "out of range"),
    ({"format": 1, "servers": [{"service": "web", "server": ["192.0.2.11", 80],
                                "state": "drained"}]}, "web"),
])
def test_a_slot_lvsd_cannot_read_is_refused_whole(slot: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode(slot)


def test_servers_that_left_the_config_lose_their_overrides() -> None:
    owner = Overrides({(WEB, RS1): Override(DRAINED), (WEB, RS2): Override(DISABLED)})
    assert owner.keep_only({(WEB, RS1)}) == [(WEB, RS2)]
    assert [ref for ref, _ in owner.items()] == [(WEB, RS1)]


# --- lvsd ctl's arguments --------------------------------------------------------------------


def ctl(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["ctl", *argv])


@pytest.mark.parametrize(("argv", "body"), [
    (["drain", "web", "192.0.2.11"], {"action": "drain", "service": "web",
                                      "server": "192.0.2.11"}),
    (["undrain", "--host", "192.0.2.11"], {"action": "undrain", "host": "192.0.2.11"}),
    (["weight", "web", "192.0.2.11:80", "5", "--for", "10m"],
     {"action": "weight", "service": "web", "server": "192.0.2.11:80", "weight": 5,
      "for": "10m"}),
    (["weight", "--host", "192.0.2.11", "5"], {"action": "weight", "host": "192.0.2.11",
                                               "weight": 5}),
    (["weight", "web", "192.0.2.11", "--clear"], {"action": "clear-weight", "service": "web",
                                                  "server": "192.0.2.11"}),
])
def test_ctl_arguments_become_one_request(argv: list[str], body: dict[str, object]) -> None:
    assert admin_body(ctl(*argv)) == body


@pytest.mark.parametrize(("argv", "problem"), [
    (["drain", "web"], "expected SERVICE SERVER or --host ADDRESS"),
    (["drain", "web", "a", "b"], "expected SERVICE SERVER"),
    (["drain", "web", "192.0.2.11", "--host", "192.0.2.11"], "--host acts on every service"),
    (["weight", "web", "192.0.2.11", "five"], "weight: not an integer: 'five'"),
    (["weight", "web", "192.0.2.11"], "expected SERVICE SERVER N"),
    (["weight", "web", "192.0.2.11", "--clear", "--for", "1m"], "--for goes with a weight"),
])
def test_ctl_refuses_a_wrong_set_of_arguments(argv: list[str], problem: str) -> None:
    with pytest.raises(Usage, match=problem):
        admin_body(ctl(*argv))
