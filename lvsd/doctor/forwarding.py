"""IP forwarding for NAT (masquerading) services, per address family."""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity
from lvsd.model import Forward

NAME = "forwarding"

FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def check(facts: Facts) -> list[Finding]:
    findings = []
    nat = facts.forwards(Forward.MASQ)
    for version, name in FORWARDING.items():
        users = [spec.name for spec in nat
                 if any(server.dest.forward == Forward.MASQ
                        and server.dest.key.address.version == version
                        for server in spec.servers)]
        if users and facts.sysctl(name) == 0:
            findings.append(Finding(
                NAME, Severity.ERROR, name,
                f"is 0 but {', '.join(users)} forward by NAT: the real servers' replies "
                f"are not routed back to the clients",
                f"sysctl -w {name}=1 (and set it in /etc/sysctl.d/)"))
    return findings
