"""The IPVS sysctls that decide what a removed, weight-0 or draining real server keeps.

- ``expire_nodest_conn`` (default 0): a removed destination's connections stay in the table
  and their packets are dropped until they time out; 1 expires them at their next packet, so
  the client sees a reset and reconnects to a live server.
- ``expire_quiescent_template`` (default 0): with persistence, a client's template keeps it on
  its real server after that server goes to weight 0 — a failed server under the default
  ``on_failure = "weight0"`` keeps its clients until the persistence timeout ends; 1 drops the
  template when it is next used, so new connections are scheduled afresh (a drain then moves
  persistent clients on at their next connection).
- ``conn_reuse_mode`` (default 1): 0 sends a new connection that reuses a source port to the
  old connection's server, whatever its weight, and silently disables expire_nodest_conn.
"""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "expiry"

NODEST = "net.ipv4.vs.expire_nodest_conn"
QUIESCENT = "net.ipv4.vs.expire_quiescent_template"
REUSE = "net.ipv4.vs.conn_reuse_mode"


def check(facts: Facts) -> list[Finding]:
    services = facts.config.services
    findings = []
    removing = [spec.name for spec in services if spec.on_failure == "remove"]
    if removing and facts.sysctl(NODEST) == 0:
        findings.append(Finding(
            NAME, Severity.WARNING, NODEST,
            f"is 0 and {', '.join(removing)} remove failed servers: their clients' open "
            f"connections hang (packets dropped) until the connection times out",
            f"sysctl -w {NODEST}=1 (and set it in /etc/sysctl.d/)"))
    sticky = [spec for spec in services if spec.service.persistence is not None]
    if sticky and facts.sysctl(QUIESCENT) == 0:
        failing = [spec for spec in sticky if spec.on_failure == "weight0"]
        if failing:
            timeouts = ", ".join(f"{spec.name} {spec.service.persistence.timeout} s"
                                 for spec in failing if spec.service.persistence is not None)
            message = (f"is 0 with persistent services that set failed servers to weight 0: "
                       f"clients keep going to a dead server until their template expires "
                       f"({timeouts}), and a drained server keeps its persistent clients")
            severity = Severity.WARNING
        else:
            message = ("is 0 with persistent services: a drained (weight 0) server keeps its "
                       "persistent clients until their templates expire")
            severity = Severity.NOTE
        findings.append(Finding(NAME, severity, QUIESCENT, message,
                                f"sysctl -w {QUIESCENT}=1 (and set it in /etc/sysctl.d/)"))
    if services and facts.sysctl(REUSE) == 0:
        findings.append(Finding(
            NAME, Severity.WARNING, REUSE,
            "is 0: a new connection reusing a source port goes to the old connection's "
            "server even at weight 0 or removed, and expire_nodest_conn has no effect",
            f"sysctl -w {REUSE}=1 (2 also reschedules ports seen in FIN_WAIT, the last state "
            f"a DR director sees)"))
    return findings
