"""The IPVS connection table's hash size against the connections it holds or may hold.

The table is a hash of 2**conn_tab_bits buckets (module parameter, default 12: 4096); the
kernel's advice is a size "not far less than" the connections in it, each lookup walking
a bucket's chain.
"""

from __future__ import annotations

import math

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "conn_table"
CROWDED = 4  # connections per bucket beyond which lookups slow every packet
MIN_BITS, MAX_BITS = 8, 20


def configured_ceiling(facts: Facts) -> int | None:
    """The most connections the config lets in: the sum of the upper thresholds, when every
    real server has one (else None: no ceiling)."""
    servers = [server for spec in facts.config.services for server in spec.servers]
    if not servers or any(server.dest.upper_threshold == 0 for server in servers):
        return None
    return sum(server.dest.upper_threshold for server in servers)


def check(facts: Facts) -> list[Finding]:
    if facts.ipvs is None or facts.ipvs.conn_table_size <= 0:
        return []
    size = facts.ipvs.conn_table_size
    current = sum(dest.stats.active + dest.stats.inactive + dest.stats.persistent
                  for service in facts.ipvs.table.services for dest in service.dests)
    ceiling = configured_ceiling(facts)
    load = max(current, ceiling or 0)
    if load <= size * CROWDED:
        return []
    bits = min(MAX_BITS, max(MIN_BITS, math.ceil(math.log2(load))))
    said = f"{current} connection entries now" + (
        f", up to {ceiling} by the real servers' upper thresholds" if ceiling else "")
    return [Finding(
        NAME, Severity.WARNING, "ip_vs conn_tab_bits",
        f"the connection table has {size} buckets for {said}: more than {CROWDED} per "
        f"bucket slows every packet's lookup",
        f"echo 'options ip_vs conn_tab_bits={bits}' > /etc/modprobe.d/lvsd-ip_vs.conf, then "
        f"reload ip_vs (with an empty table) or reboot")]
