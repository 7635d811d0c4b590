"""send_redirects=0 on all, default and each VIP's interface."""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity, sysctl_name

NAME = "redirects"


def check(facts: Facts) -> list[Finding]:
    vips = [vip for _, vip in facts.vips() if vip.version == 4]
    if not vips:
        return []
    interfaces = ["all", "default"]
    for vip in vips:
        for device in facts.holders(vip) or [facts.routes.get(vip, "")]:
            if device and device not in interfaces:
                interfaces.append(device)
    findings = []
    for device in interfaces:
        name = sysctl_name("net", "ipv4", "conf", device, "send_redirects")
        if facts.sysctl(name) != 1:
            continue
        findings.append(Finding(
            NAME, Severity.WARNING, name,
            "is 1: the director sends ICMP redirects for VIP traffic it forwards on the "
            "segment it came from, pointing clients straight at real servers"
            + (" (all=1 turns them on for every interface)" if device == "all" else ""),
            f"sysctl -w {name}=0 (and set it in /etc/sysctl.d/)"))
    return findings
