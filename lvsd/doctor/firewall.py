"""Firewall rules that drop conntrack-INVALID packets on VIP traffic.

With ``net.ipv4.vs.conntrack=1`` IPVS traffic is tracked; a DR director sees one direction of
each TCP connection only, so conntrack marks the client's packets after its SYN as INVALID,
and a rule dropping INVALID packets cuts every such connection after the handshake.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lvsd.doctor.facts import Facts, Finding, Severity
from lvsd.model import Address

NAME = "firewall"
CONNTRACK = "net.ipv4.vs.conntrack"
# Chains no VIP traffic towards real servers passes through.
OUTBOUND_HOOKS = frozenset({"output", "postrouting", "OUTPUT", "POSTROUTING"})
ADDRESS = re.compile(r"[0-9a-fA-F:.]+(?:/\d+)?")


@dataclass(frozen=True, slots=True)
class DropRule:
    tool: str  # "nft", "iptables", "ip6tables"
    family: str  # nft table family ("inet"), or "" for iptables
    table: str
    chain: str
    rule: str
    destinations: tuple[str, ...]  # addresses the rule is limited to; () for any


def nft_drop_rules(ruleset: str) -> Iterator[DropRule]:
    family = table = chain = ""
    hook = ""
    for raw in ruleset.splitlines():
        line = raw.strip()
        if match := re.match(r"table (\S+) (\S+) \{", line):
            family, table = match.groups()
        elif match := re.match(r"chain (\S+) \{", line):
            chain, hook = match.group(1), ""
        elif match := re.search(r"\bhook (\S+)", line):
            hook = match.group(1)
        elif ("ct state" in line and "invalid" in line
              and re.search(r"\b(drop|reject)\b", line) and hook not in OUTBOUND_HOOKS):
            destinations = tuple(
                address for match in re.finditer(r"\bip6? daddr (\{[^}]*\}|\S+)", line)
                for address in ADDRESS.findall(match.group(1)))
            yield DropRule("nft", family, table, chain, line, destinations)


def iptables_drop_rules(saved: str, tool: str) -> Iterator[DropRule]:
    table = ""
    for raw in saved.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        words = line.split()
        if len(words) < 2 or words[0] != "-A" or words[1] in OUTBOUND_HOOKS:
            continue
        states = [words[i + 1] for i, word in enumerate(words[:-1])
                  if word in ("--ctstate", "--state")]
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        if any("INVALID" in state.split(",") for state in states) \
                and target in ("DROP", "REJECT"):
            destinations = tuple(words[i + 1] for i, word in enumerate(words[:-1])
                                 if word in ("-d", "--destination"))
            yield DropRule(tool, "", table, words[1], line, destinations)


def _covers(destinations: Sequence[str], vip: Address) -> bool:
    import ipaddress

    if not destinations:
        return True
    for destination in destinations:
        try:
            if vip in ipaddress.ip_network(destination, strict=False):
                return True
        except ValueError:
            return True  # a set or name we cannot read: it may hold the VIP
    return False


def _fix(rule: DropRule, vip: Address) -> str:
    if rule.tool == "nft":
        match_vip = f"{'ip' if vip.version == 4 else 'ip6'} daddr {vip}"
        return (f"nft insert rule {rule.family} {rule.table} {rule.chain} {match_vip} "
                f"ct state invalid accept (or set {CONNTRACK}=0 if nothing needs IPVS "
                f"connections tracked)")
    return (f"{rule.tool} -t {rule.table} -I {rule.chain} -d {vip} -m conntrack --ctstate "
            f"INVALID -j ACCEPT (or set {CONNTRACK}=0 if nothing needs IPVS connections "
            f"tracked)")


def check(facts: Facts) -> list[Finding]:
    if facts.sysctl(CONNTRACK) != 1:
        return []
    rules: list[DropRule] = []
    if facts.firewall.nft:
        rules.extend(nft_drop_rules(facts.firewall.nft))
    for tool, saved in (("iptables", facts.firewall.iptables),
                        ("ip6tables", facts.firewall.ip6tables)):
        if saved:
            rules.extend(iptables_drop_rules(saved, tool))
    findings = []
    vips = sorted({vip for _, vip in facts.vips()}, key=lambda a: (a.version, a))
    for rule in rules:
        for vip in vips:
            wrong_family = (rule.tool == "iptables" and vip.version != 4) or (
                rule.tool == "ip6tables" and vip.version != 6) or (
                rule.family in ("ip", "arp") and vip.version != 4) or (
                rule.family == "ip6" and vip.version != 6)
            if wrong_family or not _covers(rule.destinations, vip):
                continue
            where = " ".join(part for part in (rule.family, rule.table) if part)
            findings.append(Finding(
                NAME, Severity.ERROR, f"{rule.tool} {where} {rule.chain}",
                f"{rule.rule!r} drops INVALID packets to VIP {vip}: with {CONNTRACK}=1 a "
                f"director that sees one direction of a connection marks the client's "
                f"packets after its SYN INVALID",
                _fix(rule, vip)))
    return findings
