"""``lvsd doctor``'s checks: pure judgements over gathered facts (no kernel needed)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from lvsd.checks.drpath import Routing
from lvsd.cli import main
from lvsd.config import loads
from lvsd.doctor.facts import Facts, Finding, FirewallFacts, IpvsFacts, Severity, sysctl_name
from lvsd.doctor.gather import module_facts, read_sysctls
from lvsd.doctor.registry import CHECKS, diagnose, worst
from lvsd.model import Dest, DestKey, DestStats, Forward, Table, VirtualService
from lvsd.spec import Config

VIP = ipaddress.ip_address("192.0.2.100")
RS = ipaddress.ip_address("192.0.2.11")


def config(service: str = "", server: str = "") -> Config:
    return loads(f"""
[[services]]
name = "web"
address = "192.0.2.100"
port = 80
{service}
[[services.real_servers]]
address = "192.0.2.11"
{server}
""")


CLEAN_SYSCTLS = {
    "net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.eth0.send_redirects": "0", "net.ipv4.ip_forward": "0",
    "net.ipv4.vs.expire_nodest_conn": "1", "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.vs.conn_reuse_mode": "1", "net.ipv4.vs.conntrack": "0",
}


def facts(cfg: Config | None = None, **changes: object) -> Facts:
    clean = Facts(
        config=cfg or config(), kernel_release="6.1.0-test",
        ipvs=IpvsFacts("1.2.1", 4096, Table()), loaded_modules=frozenset({"ip_vs"}),
        available_modules=frozenset({"ip_vs", "ip_vs_rr", "ip_vs_wlc", "ip_vs_mh"}),
        sysctls=CLEAN_SYSCTLS, addresses={"lo": frozenset(), "eth0": frozenset({VIP})},
        routes={VIP: "eth0"})
    return dataclasses.replace(clean, **changes)  # type: ignore[arg-type]


def with_sysctls(**values: str) -> dict[str, str]:
    return {**CLEAN_SYSCTLS, **{name.replace("__", "."): v for name, v in values.items()}}


def subjects(findings: list[Finding]) -> list[str]:
    return [finding.subject for finding in findings]


def test_a_clean_director_has_no_findings() -> None:
    assert diagnose(facts(config("persistence = 300"))) == []
    assert worst([]) == Severity.NOTE


def test_every_check_area_is_registered_by_its_name() -> None:
    assert list(CHECKS) == ["modules", "vips", "redirects", "forwarding", "dr_path", "expiry",
                            "firewall", "conn_table", "consistent_hash", "split_brain", "sync"]


def test_no_ipvs_and_a_scheduler_without_module_are_errors() -> None:
    found = diagnose(facts(config('scheduler = "lblcr"'), ipvs=None,
                           ipvs_problem="no generic netlink family 'IPVS'"))
    assert subjects(found) == ["ip_vs", "scheduler lblcr"]
    assert all(f.severity == Severity.ERROR for f in found)
    assert found[0].fix.startswith("modprobe ip_vs")
    assert "ip_vs_lblcr" in found[1].message


def test_a_scheduler_loaded_but_not_on_disk_is_fine() -> None:
    assert diagnose(facts(config('scheduler = "sh"'),
                          loaded_modules=frozenset({"ip_vs", "ip_vs_sh"}))) == []


def test_a_missing_vip_names_the_interface_it_routes_out_of() -> None:
    [finding] = diagnose(facts(addresses={"eth0": frozenset()}))
    assert finding.subject == "VIP 192.0.2.100"
    assert finding.severity == Severity.ERROR
    assert finding.fix == "ip addr add 192.0.2.100/32 dev eth0"


def test_an_ipv6_vip_is_added_as_a_128() -> None:
    cfg = loads('[[services]]\nname = "v6"\naddress = "2001:db8::1"\nport = 80\n')
    [finding] = diagnose(facts(cfg, routes={}))
    assert finding.fix == "ip addr add 2001:db8::1/128 dev IFACE"


def test_unreadable_addresses_say_so_instead_of_calling_every_vip_missing() -> None:
    [finding] = diagnose(facts(addresses={}, rtnetlink_problem="permission denied"))
    assert finding.subject == "rtnetlink" and "permission denied" in finding.message


def test_redirects_on_are_reported_per_interface_with_the_sysctl_that_fixes_each() -> None:
    found = diagnose(facts(sysctls=with_sysctls(net__ipv4__conf__all__send_redirects="1",
                                                net__ipv4__conf__eth0__send_redirects="1")))
    assert subjects(found) == ["net.ipv4.conf.all.send_redirects",
                               "net.ipv4.conf.eth0.send_redirects"]
    assert found[1].fix.startswith("sysctl -w net.ipv4.conf.eth0.send_redirects=0")
    assert all(f.severity == Severity.WARNING for f in found)


def test_redirects_of_the_interface_a_missing_vip_would_leave_by() -> None:
    found = diagnose(facts(addresses={"eth0": frozenset()}, routes={VIP: "eth1"},
                           sysctls={**CLEAN_SYSCTLS, "net.ipv4.conf.eth1.send_redirects": "1"}))
    assert subjects(found) == ["VIP 192.0.2.100", "net.ipv4.conf.eth1.send_redirects"]


def test_interface_names_with_dots_are_spelt_as_sysctl_spells_them() -> None:
    assert sysctl_name("net", "ipv4", "conf", "eth0.100", "rp_filter") \
        == "net.ipv4.conf.eth0/100.rp_filter"


def test_nat_needs_forwarding_of_its_real_servers_family() -> None:
    cfg = config(server='forward = "masq"')
    [finding] = diagnose(facts(cfg))
    assert finding.subject == "net.ipv4.ip_forward" and finding.severity == Severity.ERROR
    assert finding.fix.startswith("sysctl -w net.ipv4.ip_forward=1")
    assert diagnose(facts(cfg, sysctls=with_sysctls(net__ipv4__ip_forward="1"))) == []


def test_dr_path_checks_report_martian_filters_with_the_sysctls_to_set() -> None:
    cfg = config(server='[services.real_servers.check]\ntype = "tcp"\ndr_path = true')
    routing = Routing(frozenset({"eth0"}), "eth1")
    sysctls = with_sysctls(net__ipv4__conf__all__rp_filter="1",
                           net__ipv4__conf__eth1__rp_filter="0")
    found = diagnose(facts(cfg, dr_paths={(VIP, RS): routing}, sysctls=sysctls))
    assert [f.fix for f in found] == ["sysctl -w net.ipv4.conf.eth1.accept_local=1",
                                      "sysctl -w net.ipv4.conf.all.rp_filter=2"]
    loose = {**sysctls, "net.ipv4.conf.all.rp_filter": "2",
             "net.ipv4.conf.eth1.accept_local": "1"}
    assert diagnose(facts(cfg, dr_paths={(VIP, RS): routing}, sysctls=loose)) == []


def test_persistence_with_weight0_and_no_quiescent_expiry_keeps_clients_on_a_dead_server() -> None:
    cfg = config("persistence = 600")
    [finding] = diagnose(facts(cfg, sysctls=with_sysctls(
        net__ipv4__vs__expire_quiescent_template="0")))
    assert finding.subject == "net.ipv4.vs.expire_quiescent_template"
    assert finding.severity == Severity.WARNING
    assert "dead server until their template expires (web 600 s)" in finding.message
    assert finding.fix.startswith("sysctl -w net.ipv4.vs.expire_quiescent_template=1")


def test_persistence_with_remove_only_notes_what_a_drain_keeps() -> None:
    cfg = config('persistence = 600\non_failure = "remove"')
    [finding] = diagnose(facts(cfg, sysctls=with_sysctls(
        net__ipv4__vs__expire_quiescent_template="0")))
    assert finding.severity == Severity.NOTE and "drained" in finding.message


def test_removing_failed_servers_wants_expire_nodest_conn() -> None:
    cfg = config('on_failure = "remove"')
    [finding] = diagnose(facts(cfg, sysctls=with_sysctls(net__ipv4__vs__expire_nodest_conn="0")))
    assert finding.subject == "net.ipv4.vs.expire_nodest_conn"
    assert diagnose(facts(config(), sysctls=with_sysctls(
        net__ipv4__vs__expire_nodest_conn="0"))) == []


def test_conn_reuse_mode_0_defeats_weight_0() -> None:
    [finding] = diagnose(facts(sysctls=with_sysctls(net__ipv4__vs__conn_reuse_mode="0")))
    assert finding.subject == "net.ipv4.vs.conn_reuse_mode"
    assert finding.fix.startswith("sysctl -w net.ipv4.vs.conn_reuse_mode=1")


NFT = """\
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state invalid counter packets 0 bytes 0 drop
		ip daddr 198.51.100.7 ct state invalid drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ct state invalid drop
	}
}
"""
IPTABLES = """\
*filter
:INPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -d 192.0.2.0/24 -m state --state INVALID,UNTRACKED -j REJECT
-A INPUT -d 10.0.0.1/32 -m state --state INVALID -j DROP
-A OUTPUT -m state --state INVALID -j DROP
-A INPUT -m state --state ESTABLISHED -j ACCEPT
COMMIT
"""


def test_invalid_drops_on_vip_traffic_are_errors_when_ipvs_tracks_connections() -> None:
    fw = FirewallFacts(nft=NFT, iptables=IPTABLES)
    tracked = with_sysctls(net__ipv4__vs__conntrack="1")
    found = diagnose(facts(firewall=fw, sysctls=tracked))
    assert [(f.subject, f.fix.split(" (or")[0]) for f in found] == [
        ("nft inet filter input",
         "nft insert rule inet filter input ip daddr 192.0.2.100 ct state invalid accept"),
        ("iptables filter INPUT",
         "iptables -t filter -I INPUT -d 192.0.2.100 -m conntrack --ctstate INVALID -j ACCEPT"),
        ("iptables filter INPUT",
         "iptables -t filter -I INPUT -d 192.0.2.100 -m conntrack --ctstate INVALID -j ACCEPT"),
    ]
    assert "REJECT" in found[2].message
    assert diagnose(facts(firewall=fw)) == []  # conntrack=0: IPVS packets are not tracked


def test_ipv4_rules_do_not_cover_an_ipv6_vip() -> None:
    cfg = loads('[[services]]\nname = "v6"\naddress = "2001:db8::1"\nport = 80\n')
    fw = FirewallFacts(iptables=IPTABLES)
    found = diagnose(facts(cfg, firewall=fw, sysctls=with_sysctls(net__ipv4__vs__conntrack="1"),
                           addresses={"eth0": frozenset({ipaddress.ip_address("2001:db8::1")})}))
    assert found == []


def table_with(connections: int) -> Table:
    dest = Dest(DestKey(RS, 80), forward=Forward.ROUTE,
                stats=DestStats(active=connections, inactive=0))
    return Table((VirtualService(config().services[0].service, (dest,)),))


def test_a_crowded_connection_table_says_which_conn_tab_bits_fits() -> None:
    assert diagnose(facts(ipvs=IpvsFacts("1.2.1", 4096, table_with(16384)))) == []
    [finding] = diagnose(facts(ipvs=IpvsFacts("1.2.1", 4096, table_with(40000))))
    assert finding.subject == "ip_vs conn_tab_bits"
    assert "conn_tab_bits=16" in finding.fix


def test_the_configured_ceiling_counts_when_every_server_has_one() -> None:
    cfg = config(server="upper_threshold = 50000")
    [finding] = diagnose(facts(cfg))
    assert "up to 50000" in finding.message


def test_findings_come_worst_first() -> None:
    found = diagnose(facts(config("persistence = 60"), addresses={"eth0": frozenset()},
                           sysctls=with_sysctls(net__ipv4__conf__all__send_redirects="1",
                                                net__ipv4__vs__expire_quiescent_template="0")))
    assert [f.severity for f in found] == sorted((f.severity for f in found), reverse=True)
    assert worst(found) == Severity.ERROR


def test_read_sysctls_walks_trees_and_names_them_like_sysctl(tmp_path: Path) -> None:
    conf = tmp_path / "net/ipv4/conf/eth0.100"
    conf.mkdir(parents=True)
    (conf / "rp_filter").write_text("2\n")
    (tmp_path / "net/ipv4/ip_forward").write_text("1\n")
    assert read_sysctls(tmp_path) == {"net.ipv4.conf.eth0/100.rp_filter": "2",
                                      "net.ipv4.ip_forward": "1"}


def test_module_facts_read_sysfs_builtins_and_the_module_tree(tmp_path: Path) -> None:
    (tmp_path / "sys/module/ip_vs").mkdir(parents=True)
    (tmp_path / "sys/module/veth").mkdir(parents=True)
    ipvs = tmp_path / "lib/modules/6.1.0/kernel/net/netfilter/ipvs"
    ipvs.mkdir(parents=True)
    (ipvs / "ip_vs_rr.ko.xz").write_bytes(b"")
    (tmp_path / "lib/modules/6.1.0/modules.builtin").write_text(
        "kernel/net/netfilter/ipvs/ip_vs_sh.ko\nkernel/fs/ext4.ko\n")
    loaded, available = module_facts("6.1.0", tmp_path)
    assert loaded == {"ip_vs"} and available == {"ip_vs_rr", "ip_vs_sh"}


def test_a_config_that_does_not_load_exits_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[services]]\nname = 1\n")
    assert main(["doctor", "-c", str(bad), "--json"]) == 2
    assert "problem" in capsys.readouterr().err


def test_json_output_lists_findings_and_exits_by_the_worst(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import lvsd.doctor.gather

    async def gathered(cfg: Config) -> Facts:
        return facts(cfg, sysctls=with_sysctls(net__ipv4__conf__all__send_redirects="1"))

    monkeypatch.setattr(lvsd.doctor.gather, "gather", gathered)
    good = tmp_path / "lvsd.toml"
    good.write_text('[[services]]\nname = "web"\naddress = "192.0.2.100"\nport = 80\n')
    assert main(["doctor", "-c", str(good), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["worst"] == "warning"
    assert report["findings"][0]["fix"].startswith("sysctl -w net.ipv4.conf.all.send_redirects=0")
    assert main(["doctor", "-c", str(good)]) == 1
    assert "1 warning(s)" in capsys.readouterr().out


def paired(mode: str = "both", interface: str = "eth0") -> Config:
    return loads(f'[sync]\nmode = "{mode}"\ninterface = "{interface}"\n' + """
[[services]]
name = "web"
address = "192.0.2.100"
port = 80
[[services.real_servers]]
address = "192.0.2.11"
""")


SYNCED = {"net.ipv4.vs.sync_threshold": "3\t10", "net.ipv4.vs.sync_refresh_period": "0",
          "net.ipv4.vs.backup_only": "0", "net.ipv4.vs.sync_persist_mode": "0",
          "net.ipv4.vs.sloppy_tcp": "0"}
ETH0 = {"lo": frozenset(), "eth0": frozenset({VIP, ipaddress.ip_address("192.0.2.1")})}


def test_a_well_set_director_pair_has_no_sync_findings() -> None:
    assert diagnose(facts(paired(), sysctls={**CLEAN_SYSCTLS, **SYNCED}, addresses=ETH0)) == []


def test_backup_only_with_mode_both_is_an_error_and_fine_with_follow_role() -> None:
    sysctls = {**CLEAN_SYSCTLS, **SYNCED, "net.ipv4.vs.backup_only": "1"}
    found = diagnose(facts(paired(), sysctls=sysctls, addresses=ETH0))
    assert [(f.severity, f.subject) for f in found] == [
        (Severity.ERROR, "net.ipv4.vs.backup_only")]
    assert "follow-role" in found[0].fix
    assert diagnose(facts(paired("follow-role"), sysctls=sysctls, addresses=ETH0)) == []


def test_the_default_sync_threshold_without_refresh_is_advised_against() -> None:
    sysctls = {**CLEAN_SYSCTLS, **SYNCED, "net.ipv4.vs.sync_threshold": "3\t50"}
    found = diagnose(facts(paired(), sysctls=sysctls, addresses=ETH0))
    assert [(f.severity, f.subject) for f in found] == [
        (Severity.NOTE, "net.ipv4.vs.sync_threshold")]
    assert "every 50 packets" in found[0].message
    refreshed = {**sysctls, "net.ipv4.vs.sync_refresh_period": "5"}
    assert diagnose(facts(paired(), sysctls=refreshed, addresses=ETH0)) == []


def test_template_only_sync_without_sloppy_tcp_is_a_warning() -> None:
    sysctls = {**CLEAN_SYSCTLS, **SYNCED, "net.ipv4.vs.sync_persist_mode": "1"}
    found = diagnose(facts(paired(), sysctls=sysctls, addresses=ETH0))
    assert subjects(found) == ["net.ipv4.vs.sync_persist_mode"]


def test_a_sync_interface_missing_or_without_ipv4_is_an_error() -> None:
    sysctls = {**CLEAN_SYSCTLS, **SYNCED}
    missing = diagnose(facts(paired(interface="bond0"), sysctls=sysctls, addresses=ETH0))
    assert [(f.severity, f.subject) for f in missing] == [(Severity.ERROR,
                                                           "sync.interface bond0")]
    v6_only = {**ETH0, "eth1": frozenset({ipaddress.ip_address("2001:db8::1")})}
    found = diagnose(facts(paired(interface="eth1"), sysctls=sysctls, addresses=v6_only))
    assert "no IPv4 address" in found[0].message


def test_sync_off_or_external_is_not_checked() -> None:
    sysctls = {**CLEAN_SYSCTLS, "net.ipv4.vs.backup_only": "1"}
    for mode in ("off", "external"):
        assert diagnose(facts(paired(mode), sysctls=sysctls, addresses=ETH0)) == []
