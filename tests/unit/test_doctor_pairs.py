"""``lvsd doctor`` for director pairs and fleets: sloppy_tcp for consistent hashing, and a VIP
another host answers for (split brain)."""

from __future__ import annotations

import ipaddress

from lvsd.config import loads
from lvsd.doctor.facts import Severity
from lvsd.doctor.registry import diagnose
from lvsd.splitbrain.book import VipStatus
from tests.unit.test_doctor import facts, subjects, with_sysctls

VIP = ipaddress.ip_address("192.0.2.100")
HASHED = loads("""
[[services]]
name = "fleet"
address = "192.0.2.100"
port = 80
consistent_hash = true
real_servers = [{ address = "192.0.2.11" }]
""")


def test_consistent_hashing_without_sloppy_tcp_is_an_error_with_the_sysctl_fix() -> None:
    (finding,) = diagnose(facts(HASHED, sysctls=with_sysctls(net__ipv4__vs__sloppy_tcp="0")))
    assert finding.subject == "net.ipv4.vs.sloppy_tcp" and finding.severity == Severity.ERROR
    assert "fleet" in finding.message
    assert finding.fix.startswith("sysctl -w net.ipv4.vs.sloppy_tcp=1 on every director")
    assert diagnose(facts(HASHED, sysctls=with_sysctls(net__ipv4__vs__sloppy_tcp="1"))) == []


def test_sloppy_tcp_does_not_matter_without_consistent_hashing() -> None:
    assert diagnose(facts(sysctls=with_sysctls(net__ipv4__vs__sloppy_tcp="0"))) == []


def test_another_holder_of_a_vip_is_a_split_brain_error() -> None:
    conflict = VipStatus(VIP, "eth0", True, ("02:00:00:00:00:12",), 1.0, 1)
    (finding,) = diagnose(facts(vip_probes=(conflict,)))
    assert finding.severity == Severity.ERROR and finding.subject == "192.0.2.100 on eth0"
    assert "02:00:00:00:00:12" in finding.message and "VRRP" in finding.fix
    assert diagnose(facts(vip_probes=(VipStatus(VIP, "eth0", False, probes=1),))) == []


def test_a_probe_that_could_not_be_sent_is_a_note() -> None:
    found = diagnose(facts(vip_probe_problems={"eth0": "packet socket on eth0: Operation "
                                                        "not permitted"}))
    assert subjects(found) == ["eth0"] and found[0].severity == Severity.NOTE
    assert "CAP_NET_RAW" in found[0].fix
