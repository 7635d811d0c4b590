"""A real server's effective weight: one pure function of everything that moves it.

Inputs, in the order they apply: the configured weight; the operator's admin state and weight
override (``lvsd ctl``); the health verdict of its checks; the agent's report (HAProxy's
agent-check protocol: ``75%``, ``drain``, ``maint``, ``down``, ``up``, ``ready``); the slow-start
ramp after it comes back. The planner (``lvsd.reconcile``) asks only this module what a server
is worth, so quorum, sorry server and fail-open see the same number the kernel gets.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from lvsd.limits import WEIGHT_MAX


class AdminState(enum.Enum):
    ENABLED = "enabled"
    DRAINED = "drained"  # weight 0: no new connections, established ones finish, probes go on
    DISABLED = "disabled"  # out of the table, probes go on


@dataclass(frozen=True, slots=True)
class Admin:
    """What an operator set at runtime. ``weight`` replaces the configured weight while set."""

    state: AdminState = AdminState.ENABLED
    weight: int | None = None


NO_ADMIN = Admin()


class AgentCommand(enum.Enum):
    UP = "up"  # "up" and "ready": back to normal
    DRAIN = "drain"  # weight 0, connections kept
    DOWN = "down"  # out of rotation, as a failed health check ("down", "maint", "stopped", "fail")


@dataclass(frozen=True, slots=True)
class AgentReport:
    """The agent's last answer. ``percent`` scales the weight; ``command`` (when the line had
    one) overrides the state. An agent that does not answer reports nothing: lvsd then falls
    back to the health check alone (pass ``None``)."""

    percent: int | None = None
    command: AgentCommand | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """Everything besides health that moves a server's weight."""

    admin: Admin = NO_ADMIN
    agent: AgentReport | None = None
    ramp: float = 1.0  # slow start: the share of the full weight, in [0, 1] (``ramp_share``)


NO_STANDING = Standing()


class Role(enum.Enum):
    """Where a server stands in its service's table."""

    SERVING = "serving"  # takes new connections at ``weight``
    DRAINED = "drained"  # in the table at weight 0 whatever ``on_failure`` says
    DOWN = "down"  # failed (health or agent): weight 0 or removed, as ``on_failure`` says
    OUT = "out"  # disabled by the operator: not in the table


@dataclass(frozen=True, slots=True)
class Effective:
    role: Role
    weight: int  # the kernel weight while SERVING; 0 otherwise

    @property
    def serving(self) -> bool:
        return self.role is Role.SERVING


OUT = Effective(Role.OUT, 0)
DRAINED = Effective(Role.DRAINED, 0)
DOWN = Effective(Role.DOWN, 0)
_SERVING: dict[int, Effective] = {}  # by weight: a full pass asks 10,000 times for a few


def serving_at(weight: int) -> Effective:
    found = _SERVING.get(weight)
    if found is None:
        found = _SERVING[weight] = Effective(Role.SERVING, weight)
    return found


def effective(configured: int, *, healthy: bool, standing: Standing = NO_STANDING,
              disabled: bool = False) -> Effective:
    """The server's role and weight. Precedence: disabled by the operator (out) > drained
    (``disabled`` in the config, the operator, then the agent) > down (health, then agent) >
    serving at the operator's or the configured weight, scaled by the agent's percentage and
    the slow-start ramp."""
    if standing is NO_STANDING and not disabled:  # most servers, most of the time
        if not healthy:
            return DOWN
        return serving_at(configured) if configured > 0 else DRAINED
    admin, agent = standing.admin, standing.agent
    if admin.state is AdminState.DISABLED:
        return OUT
    if disabled or admin.state is AdminState.DRAINED:
        return DRAINED
    command = agent.command if agent is not None else None
    if command is AgentCommand.DRAIN:
        return DRAINED
    if not healthy or command is AgentCommand.DOWN:
        return DOWN
    weight = configured if admin.weight is None else admin.weight
    if agent is not None and agent.percent is not None:
        weight = min(weight * agent.percent // 100, WEIGHT_MAX)
    if weight <= 0:
        return DRAINED
    return serving_at(ramped(weight, standing.ramp))


RAMP_STEPS = 20  # HAProxy's slowstart: the weight moves in twentieths of the period
RAMP_STEP_MIN = 1.0  # seconds: but at most once a second


def ramp_step(period: float) -> float:
    """Seconds between two steps of a slow start over ``period`` seconds."""
    return max(RAMP_STEP_MIN, period / RAMP_STEPS)


def ramp_share(elapsed: float, period: float) -> float:
    """The share of the full weight a slow start over ``period`` gives ``elapsed`` seconds in:
    0 (weight 1) at the start, then up a step every ``ramp_step(period)``, 1 once the period
    is over. A step function, so the kernel weight changes only at step boundaries and a pass
    in between plans nothing."""
    if period <= 0 or elapsed >= period:
        return 1.0
    step = ramp_step(period)
    return min(1.0, math.floor(max(elapsed, 0.0) / step) * step / period)


def ramped(weight: int, ramp: float) -> int:
    """``weight`` scaled by the slow-start share gone by, never below 1 while serving."""
    if ramp >= 1.0:
        return weight
    return max(1, min(weight, math.ceil(weight * max(ramp, 0.0))))
