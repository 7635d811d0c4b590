"""Durations as an operator reads them at a glance: ``4.2 ms``, ``12.0 s``, ``5 min``, ``3.0 h``.

For the status page and ``lvsd ctl status`` alike.
"""

from __future__ import annotations

import math


def duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def ago(at: float | None, now: float, suffix: str = " ago") -> str:
    """How long before ``now`` the wall time ``at`` was; ``never`` (or ``-`` without a
    suffix) for no time."""
    if at is None or at <= 0:
        return "-" if suffix == "" else "never"
    return duration(max(now - at, 0.0)) + suffix


def until(at: float, now: float) -> str:
    return "now" if at <= now else "in " + duration(at - now)
