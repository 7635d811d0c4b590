"""The check areas of ``lvsd doctor``: one pure function per area, run in this order.

Adding a check is one module with ``NAME`` and ``check(facts) -> list[Finding]`` and one line
here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lvsd.doctor import (
    conntable,
    drpath,
    expiry,
    firewall,
    forwarding,
    hashing,
    modules,
    redirects,
    splitbrain,
    sync,
    vips,
)
from lvsd.doctor.facts import Facts, Finding, Severity

Check = Callable[[Facts], list[Finding]]

CHECKS: dict[str, Check] = {
    modules.NAME: modules.check,
    vips.NAME: vips.check,
    redirects.NAME: redirects.check,
    forwarding.NAME: forwarding.check,
    drpath.NAME: drpath.check,
    expiry.NAME: expiry.check,
    firewall.NAME: firewall.check,
    conntable.NAME: conntable.check,
    hashing.NAME: hashing.check,
    splitbrain.NAME: splitbrain.check,
    sync.NAME: sync.check,
}


def diagnose(facts: Facts, checks: dict[str, Check] | None = None) -> list[Finding]:
    """Every finding of every check, worst first (stable within a severity)."""
    findings = [finding for check in (checks or CHECKS).values() for finding in check(facts)]
    return sorted(findings, key=lambda finding: -finding.severity)


def worst(findings: Sequence[Finding]) -> Severity:
    return max((finding.severity for finding in findings), default=Severity.NOTE)
