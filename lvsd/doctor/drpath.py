"""rp_filter and accept_local where a ``dr_path`` check probes a real server through the VIP:
the real server's reply comes from the VIP, a martian source to a director holding it."""

from __future__ import annotations

from lvsd.checks.drpath import martian_drops
from lvsd.doctor.facts import Facts, Finding, Severity, sysctl_name

NAME = "dr_path"


def check(facts: Facts) -> list[Finding]:
    findings = []
    for (vip, rs_address), routing in sorted(facts.dr_paths.items(), key=str):
        def read(interface: str, key: str) -> int:
            return facts.sysctl(sysctl_name("net", "ipv4", "conf", interface, key)) or 0

        for problem, fix in martian_drops(rs_address, routing, read):
            findings.append(Finding(NAME, Severity.ERROR, f"dr_path check of {rs_address}",
                                    f"{problem}; the check fails though {rs_address} may "
                                    f"serve {vip}", fix))
    return findings
