"""Each VIP is an address of one of the director's interfaces."""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "vips"


def check(facts: Facts) -> list[Finding]:
    if facts.rtnetlink_problem:
        return [Finding(NAME, Severity.WARNING, "rtnetlink",
                        f"cannot read the interfaces' addresses: {facts.rtnetlink_problem}; "
                        f"the VIPs, the redirects of their interfaces and the DR paths were "
                        f"not checked", "run lvsd doctor as root (CAP_NET_ADMIN)")]
    findings = []
    seen = set()
    for _, vip in facts.vips():
        if vip in seen or facts.holders(vip):
            continue
        seen.add(vip)
        users = [s.name for s, address in facts.vips() if address == vip]
        prefix = 32 if vip.version == 4 else 128
        device = facts.routes.get(vip, "IFACE")
        findings.append(Finding(
            NAME, Severity.ERROR, f"VIP {vip}",
            f"no interface holds the VIP of {', '.join(users)}: the director neither answers "
            f"ARP/ND for it nor sees its traffic (expected only on a backup director whose "
            f"peer holds it)",
            f"ip addr add {vip}/{prefix} dev {device}"))
    return findings
