"""The effective weight as a table: configured weight, health, admin, agent, slow start."""

from __future__ import annotations

import pytest

from lvsd.weight import (
    NO_ADMIN,
    Admin,
    AdminState,
    AgentCommand,
    AgentReport,
    Effective,
    Role,
    Standing,
    effective,
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


@pytest.mark.parametrize("weight", [1, 2, 7, 100, 65535])
def test_the_ramp_rises_monotonically_to_the_full_weight_and_never_below_one(weight: int) -> None:
    steps = [ramped(weight, i / 20) for i in range(21)]
    assert steps == sorted(steps)
    assert steps[0] >= 1 and steps[-1] == weight
    assert all(1 <= w <= weight for w in steps)
