"""ip_vs present, and a module for every configured scheduler."""

from __future__ import annotations

from lvsd.doctor.facts import Facts, Finding, Severity

NAME = "modules"


def check(facts: Facts) -> list[Finding]:
    findings = []
    if facts.ipvs is None:
        findings.append(Finding(
            NAME, Severity.ERROR, "ip_vs",
            f"the kernel has no IPVS: {facts.ipvs_problem or 'ip_vs is not loaded'}",
            "modprobe ip_vs (and list it in /etc/modules-load.d/ to load it at boot; "
            "lvsd needs CAP_NET_ADMIN)"))
    for scheduler in sorted({spec.service.scheduler for spec in facts.config.services}):
        module = f"ip_vs_{scheduler}"
        if module in facts.loaded_modules or module in facts.available_modules:
            continue
        users = [spec.name for spec in facts.config.services
                 if spec.service.scheduler == scheduler]
        findings.append(Finding(
            NAME, Severity.ERROR, f"scheduler {scheduler}",
            f"no module {module} for kernel {facts.kernel_release or '(unknown)'}: "
            f"adding {', '.join(users)} fails",
            f"install the kernel's IPVS modules ({module}.ko) or configure another "
            f"scheduler"))
    return findings
