"""Split brain: does another host on the segment answer for a VIP this director holds?

``lvsd doctor`` sends one probe per held VIP (``lvsd.splitbrain``: an ARP probe from 0.0.0.0,
or a duplicate address detection solicitation) and reads the answers; the running daemon does
the same every ``split_brain_probe`` and reports ``lvsd_vip_conflict``.
"""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "split_brain"


def check(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for vip in facts.vip_probes:
        if vip.conflict:
            findings.append(Finding(
                NAME, Severity.ERROR, f"{vip.address} on {vip.interface}",
                f"another host answers for this director's VIP ({', '.join(vip.other_macs)}): "
                f"split brain, both send ARP or neighbour answers for it and the segment's "
                f"traffic is split between them",
                "find why VRRP between the directors fails (keepalived's log, the link "
                "between them, a firewall dropping protocol 112 or its multicast); only one "
                "director may hold the VIP"))
    for where, problem in sorted(facts.vip_probe_problems.items()):
        findings.append(Finding(
            NAME, Severity.NOTE, where, f"could not probe for another VIP holder: {problem}",
            "run lvsd doctor as root (it needs CAP_NET_RAW for the ARP probe), or set "
            'split_brain_probe = "off" in [daemon]'))
    return findings
