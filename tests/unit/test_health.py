"""The rise/fall state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lvsd.checks import ProbeResult
from lvsd.health import HealthState, Status, initial, observe

PASS = ProbeResult(True, "status 200")
FAIL = ProbeResult(False, "refused")


def feed(state: HealthState, results: list[ProbeResult], rise: int = 2, fall: int = 3,
         start: float = 100.0) -> list[HealthState]:
    states = []
    for step, result in enumerate(results):
        state = observe(state, result, rise, fall, now=start + step)
        states.append(state)
    return states


def test_unknown_server_is_decided_by_its_first_probe() -> None:
    up = observe(initial(), PASS, 2, 3, now=5.0)
    assert (up.status, up.changed, up.previous, up.since) == (Status.UP, True, Status.UNKNOWN, 5.0)
    assert up.reason == "first probe passed"
    down = observe(initial(), FAIL, 2, 3, now=5.0)
    assert (down.status, down.changed, down.reason) == (
        Status.DOWN, True, "first probe failed: refused")


def test_unknown_is_not_up() -> None:
    assert initial().status is Status.UNKNOWN and not initial().up


def test_up_needs_fall_consecutive_failures() -> None:
    up = observe(initial(), PASS, 2, 3, now=0.0)
    states = feed(up, [FAIL, FAIL, FAIL])
    assert [s.status for s in states] == [Status.UP, Status.UP, Status.DOWN]
    assert [s.changed for s in states] == [False, False, True]
    assert states[-1].reason == "3 consecutive failures, last: refused"
    assert states[-1].since == 102.0 and states[1].since == 0.0


def test_a_pass_resets_the_failure_count() -> None:
    up = observe(initial(), PASS, 2, 3, now=0.0)
    states = feed(up, [FAIL, FAIL, PASS, FAIL, FAIL])
    assert all(s.status is Status.UP for s in states)
    assert [s.fails for s in states] == [1, 2, 0, 1, 2]


def test_down_needs_rise_consecutive_passes() -> None:
    down = observe(initial(), FAIL, 2, 3, now=0.0)
    states = feed(down, [PASS, FAIL, PASS, PASS])
    assert [s.status for s in states] == [Status.DOWN, Status.DOWN, Status.DOWN, Status.UP]
    assert states[-1].reason == "2 consecutive passes, last: status 200"
    assert (states[-1].previous, states[-1].passes) == (Status.DOWN, 2)


def test_assumed_up_after_a_restart_does_not_flap() -> None:
    restarted = initial(assume_up=True, now=50.0)
    assert restarted.up and restarted.since == 50.0
    states = feed(restarted, [FAIL, FAIL, PASS, FAIL, FAIL, FAIL])
    assert [s.status for s in states] == [Status.UP] * 5 + [Status.DOWN]


def test_fall_one_and_rise_one_react_at_once() -> None:
    up = observe(initial(), PASS, 1, 1, now=0.0)
    states = feed(up, [FAIL, PASS], rise=1, fall=1)
    assert [s.status for s in states] == [Status.DOWN, Status.UP]
    assert states[0].reason == "1 consecutive failure, last: refused"


def test_last_result_is_kept() -> None:
    state = observe(initial(), FAIL, 2, 3, now=0.0)
    assert state.last == FAIL


@given(results=st.lists(st.booleans(), max_size=40), rise=st.integers(1, 5),
       fall=st.integers(1, 5), assume_up=st.booleans())
def test_status_follows_the_last_results(results: list[bool], rise: int, fall: int,
                                         assume_up: bool) -> None:
    state = initial(assume_up=assume_up)
    history: list[bool] = []
    for ok in results:
        before = state
        state = observe(state, PASS if ok else FAIL, rise, fall, now=float(len(history)))
        history.append(ok)
        assert state.changed == (state.status is not before.status)
        assert state.status is not Status.UNKNOWN
        if len(history) >= fall and not any(history[-fall:]):
            assert state.status is Status.DOWN
        if len(history) >= rise and all(history[-rise:]):
            assert state.status is Status.UP
        if state.changed and before.status is Status.UP:
            assert not any(history[-fall:]) and len(history) >= fall
        if state.changed and before.status is Status.DOWN:
            assert all(history[-rise:]) and len(history) >= rise
