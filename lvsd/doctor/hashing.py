"""Consistent hashing across directors (``consistent_hash = true``) needs ``sloppy_tcp=1``.

Behind ECMP a router moves a flow to another director when the director set changes. That
director has no connection entry for it, and without ``sloppy_tcp`` IPVS schedules only a
SYN: a mid-stream packet goes to the local stack, which holds the VIP and answers with a
reset. With it, IPVS schedules the packet, and the shared ``mh`` table sends it to the same
real server (``lvsd.consistent``).
"""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity
from lvsd.model import Protocol

NAME = "consistent_hash"

SLOPPY_TCP = "net.ipv4.vs.sloppy_tcp"
SLOPPY_SCTP = "net.ipv4.vs.sloppy_sctp"


def check(facts: Facts) -> list[Finding]:
    hashed = [spec for spec in facts.config.services if spec.consistent_hash]
    findings: list[Finding] = []
    for sysctl, protocol in ((SLOPPY_TCP, Protocol.TCP), (SLOPPY_SCTP, Protocol.SCTP)):
        names = [spec.name for spec in hashed
                 if spec.key.protocol in (protocol, Protocol.FWMARK)]
        value = facts.sysctl(sysctl)
        if names and value is not None and value != 1:
            findings.append(Finding(
                NAME, Severity.ERROR, sysctl,
                f"is {value} and {', '.join(names)} use consistent_hash: a flow the router "
                f"moves to this director arrives mid-stream and is reset instead of reaching "
                f"the same real server",
                f"sysctl -w {sysctl}=1 on every director (and set it in /etc/sysctl.d/)"))
    return findings
