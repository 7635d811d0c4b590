"""The effective weight as a table: configured weight, health, admin, agent, slow start."""

from __future__ import annotations

import math

import pytest

from lvsd.weight import (
    NO_ADMIN,
    NO_STANDING,
    Admin,
    AdminState,
    AgentCommand,
    AgentReport,
    Effective,
    Role,
    Standing,
    effective,
    ramp_share,
    ramp_step,
    ramped,
)

ENABLED, DRAINED, DISABLED = AdminState.ENABLED, AdminState.DRAINED, AdminState.DISABLED
UP, DRAIN, DOWN = AgentCommand.UP, AgentCommand.DRAIN, AgentCommand.DOWN
S, D, X, OUT = Role.SERVING, Role.DRAINED, Role.DOWN, Role.OUT

# configured, healthy, config-disabled, admin state, admin weight, agent %, agent command, ramp
CASES = [
    ((10, True, False, ENABLED, None, None, None, 1.0), (S, 10)),
    ((10, False, False, ENABLED, None, None, None, 1.0), (X, 0)),
    ((10, True, True, ENABLED, None, None, None, 1.0), (D, 0)),
    ((10, False, True, ENABLED, None, None, None, 1.0), (D, 0)),
    ((10, True, False, DRAINED, None, None, None, 1.0), (D, 0)),
    ((10, False, False, DRAINED, None, None, None, 1.0), (D, 0)),
    ((10, True, False, DISABLED, None, None, None, 1.0), (OUT, 0)),
    ((10, True, True, DISABLED, None, None, None, 1.0), (OUT, 0)),
    ((10, True, False, ENABLED, 3, None, None, 1.0), (S, 3)),
    ((10, True, False, ENABLED, 0, None, None, 1.0), (D, 0)),
    ((10, False, False, ENABLED, 3, None, None, 1.0), (X, 0)),
    ((10, True, False, ENABLED, None, 50, None, 1.0), (S, 5)),
    ((10, True, False, ENABLED, 4, 50, None, 1.0), (S, 2)),
    ((10, True, False, ENABLED, None, 0, None, 1.0), (D, 0)),
    ((1, True, False, ENABLED, None, 50, None, 1.0), (D, 0)),
    ((10, True, False, ENABLED, None, 200, None, 1.0), (S, 20)),
    ((10, True, False, ENABLED, None, None, DRAIN, 1.0), (D, 0)),
    ((10, False, False, ENABLED, None, None, DRAIN, 1.0), (D, 0)),
    ((10, True, False, ENABLED, None, None, DOWN, 1.0), (X, 0)),
    ((10, True, False, ENABLED, None, 75, UP, 1.0), (S, 7)),
    ((10, False, False, ENABLED, None, None, UP, 1.0), (X, 0)),
    ((10, True, False, ENABLED, None, None, None, 0.1), (S, 1)),
    ((10, True, False, ENABLED, None, None, None, 0.5), (S, 5)),
    ((10, True, False, ENABLED, None, None, None, 0.01), (S, 1)),
    ((10, True, False, ENABLED, None, 50, None, 0.5), (S, 3)),
    ((10, False, False, ENABLED, None, None, None, 0.5), (X, 0)),
    ((0, True, False, ENABLED, None, None, None, 1.0), (D, 0)),
    ((60000, True, False, ENABLED, None, 200, None, 1.0), (S, 65535)),
]


@pytest.mark.parametrize(("inputs", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_effective_weight_table(inputs: tuple, expected: tuple[Role, int]) -> None:  # type: ignore[type-arg]
    configured, healthy, disabled, state, weight, percent, command, ramp = inputs
    agent = None if percent is None and command is None else AgentReport(percent, command)
    standing = Standing(Admin(state, weight), agent, ramp)
    assert effective(configured, healthy=healthy, standing=standing, disabled=disabled) == (
        Effective(*expected))


def test_no_standing_is_the_health_check_alone() -> None:
    assert effective(7, healthy=True) == Effective(Role.SERVING, 7)
    assert effective(7, healthy=False) == Effective(Role.DOWN, 0)
    assert Standing().admin == NO_ADMIN


@pytest.mark.parametrize("configured", [0, 1, 10, 65535])
@pytest.mark.parametrize("healthy", [True, False])
@pytest.mark.parametrize("disabled", [True, False])
def test_the_shortcut_for_no_standing_agrees_with_the_whole_rule(
        configured: int, healthy: bool, disabled: bool) -> None:
    plain = Standing()  # equal to NO_STANDING but not it: takes the whole rule
    assert plain is not NO_STANDING
    assert effective(configured, healthy=healthy, disabled=disabled) == effective(
        configured, healthy=healthy, standing=plain, disabled=disabled)


@pytest.mark.parametrize("weight", [1, 2, 7, 100, 65535])
def test_the_ramp_rises_monotonically_to_the_full_weight_and_never_below_one(weight: int) -> None:
    steps = [ramped(weight, i / 20) for i in range(21)]
    assert steps == sorted(steps)
    assert steps[0] >= 1 and steps[-1] == weight
    assert all(1 <= w <= weight for w in steps)


# elapsed, period -> share: twentieths of the period, at most one step a second
RAMP_SHAPE = [
    (0.0, 30.0, 0.0), (1.49, 30.0, 0.0), (1.5, 30.0, 0.05), (15.0, 30.0, 0.5),
    (29.9, 30.0, 0.95), (30.0, 30.0, 1.0), (99.0, 30.0, 1.0),
    (0.0, 10.0, 0.0), (0.99, 10.0, 0.0), (1.0, 10.0, 0.1), (9.5, 10.0, 0.9), (10.0, 10.0, 1.0),
    (0.5, 2.5, 0.0), (1.0, 2.5, 0.4), (2.0, 2.5, 0.8), (2.5, 2.5, 1.0),
    (5.0, 0.0, 1.0), (-1.0, 30.0, 0.0),
]


@pytest.mark.parametrize(("elapsed", "period", "share"), RAMP_SHAPE)
def test_the_ramp_steps_in_twentieths_at_most_once_a_second(elapsed: float, period: float,
                                                             share: float) -> None:
    assert ramp_share(elapsed, period) == pytest.approx(share)


@pytest.mark.parametrize("period", [0.5, 2.0, 10.0, 30.0, 600.0])
def test_a_ramp_has_at_most_twenty_steps_each_visible_on_weight_100(period: float) -> None:
    step = ramp_step(period)
    assert step == max(1.0, period / 20)
    times = [i * step for i in range(math.ceil(period / step) + 1)]
    weights = [ramped(100, ramp_share(t, period)) for t in times]
    assert weights[0] == 1 and weights[-1] == 100
    assert len(set(weights)) == len(weights), "every step moves the weight"
    assert len(weights) <= 21
