"""The connection-sync daemons ``[sync]`` asks lvsd to run, against the sysctls that decide
what they sync and whether the director still directs.

- ``backup_only`` (default 0): 1 stops the director function while a backup daemon runs, even
  beside a master (``sync_state & IP_VS_STATE_BACKUP && backup_only``): with mode ``both``
  the backup always runs, so the director never directs.
- ``sync_threshold`` (default ``3 50``) and ``sync_refresh_period`` (default 0): a connection
  is synced at its 3rd packet and then every 50 packets; a quiet long-lived flow is re-sent
  rarely, and one idle past its timeout on the backup is gone there at a failover.
- ``sync_persist_mode`` 1 syncs only persistence templates: the backup then needs
  ``sloppy_tcp`` to take over the connections themselves.
- The interface: the master's socket binds to its IPv4 address (the kernel answers ENODEV
  without one).
"""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "sync"

BACKUP_ONLY = "net.ipv4.vs.backup_only"
THRESHOLD = "net.ipv4.vs.sync_threshold"
REFRESH = "net.ipv4.vs.sync_refresh_period"
PERSIST_MODE = "net.ipv4.vs.sync_persist_mode"
SLOPPY_TCP = "net.ipv4.vs.sloppy_tcp"
QUIET_PERIOD = 20  # packets between re-syncs above which a quiet flow is re-sent too rarely


def check(facts: Facts) -> list[Finding]:
    sync = facts.config.sync
    if sync.mode not in ("both", "follow-role"):
        return []
    findings = []
    if sync.mode == "both" and facts.sysctl(BACKUP_ONLY) == 1:
        findings.append(Finding(
            NAME, Severity.ERROR, BACKUP_ONLY,
            'is 1 and [sync] mode = "both" runs the backup daemon at all times: the kernel '
            "stops directing while a backup daemon runs, so this director never forwards",
            f'sysctl -w {BACKUP_ONLY}=0, or [sync] mode = "follow-role"'))
    threshold = facts.sysctls.get(THRESHOLD, "").split()
    period = int(threshold[1]) if len(threshold) == 2 and threshold[1].isdigit() else None
    if period is not None and period > QUIET_PERIOD and facts.sysctl(REFRESH) == 0:
        findings.append(Finding(
            NAME, Severity.NOTE, THRESHOLD,
            f"re-syncs a connection only every {period} packets and sync_refresh_period is 0: "
            f"a quiet long-lived flow can expire on the other director before a failover",
            f'sysctl -w {THRESHOLD}="3 10" (or set {REFRESH} to a few seconds)'))
    if facts.sysctl(PERSIST_MODE) == 1 and facts.sysctl(SLOPPY_TCP) == 0:
        findings.append(Finding(
            NAME, Severity.WARNING, PERSIST_MODE,
            "is 1 (only persistence templates are synced) and sloppy_tcp is 0: the new master "
            "resets the connections it never heard of",
            f"sysctl -w {SLOPPY_TCP}=1, or {PERSIST_MODE}=0"))
    if facts.addresses and not facts.rtnetlink_problem:
        held = facts.addresses.get(sync.interface)
        if held is None:
            findings.append(Finding(
                NAME, Severity.ERROR, f"sync.interface {sync.interface}",
                "no such interface: the kernel refuses the sync daemons (ENODEV)",
                "set [sync] interface to the link the two directors share"))
        elif not any(address.version == 4 for address in held):
            findings.append(Finding(
                NAME, Severity.ERROR, f"sync.interface {sync.interface}",
                "has no IPv4 address: the master daemon cannot bind its socket (ENODEV)",
                f"give {sync.interface} an IPv4 address, or choose another interface"))
    return findings
