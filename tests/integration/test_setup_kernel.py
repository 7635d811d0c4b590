"""``lvsd realserver`` and ``lvsd doctor`` against the real kernel, in one DR lab whose real
servers start without the DR set-up (no VIP on lo, no ARP sysctls).

``lvsd realserver apply`` and ``lvsd doctor`` run once each as the real CLI in the namespace
(``ip netns exec``); every other call runs the CLI's ``main()`` from a thread that entered the
namespace, since each Python process costs 5-30 s under emulation.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsd.cli import main
from tests.integration.conftest import DrLab, Namespace, dr_lab_context, in_netns

LVSD = str(Path(sys.executable).with_name("lvsd"))
VIP = "192.0.2.100"
TUN_VIP = "192.0.2.101"
ARP_SYSCTLS = [f"net.ipv4.conf.{device}.{key}" for device in ("all", "default", "lo", "eth0")
               for key in ("arp_ignore", "arp_announce")]


@pytest.fixture(scope="module")
def lab() -> Iterator[DrLab]:
    with dr_lab_context(2, real_server_setup=False) as built:
        built.director.ip_batch([f"addr add {TUN_VIP}/32 dev eth0"])
        built.director.run("ipvsadm-restore", stdin="".join([
            f"-A -t {VIP}:80 -s rr\n",
            *[f"-a -t {VIP}:80 -r {s.address}:80 -g -w 1\n" for s in built.real_servers],
            f"-A -t {TUN_VIP}:80 -s rr\n",
            f"-a -t {TUN_VIP}:80 -r {built.real_servers[0].address}:80 -i -w 1\n"]))
        yield built


def lvsd_cli(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator runs it."""
    return subprocess.run(["ip", "netns", "exec", ns, LVSD, *args], capture_output=True,
                          text=True, check=False, timeout=120)


def lvsd_main(ns: Namespace, *args: str) -> tuple[int, str, str]:
    """The command's main() inside ``ns``: (exit code, stdout, stderr)."""
    def call() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, out.getvalue(), err.getvalue()

    return in_netns(ns, call)


def state(ns: Namespace, device: str = "lo") -> tuple[dict[str, str], list[str], bool | None]:
    """The ARP (and rp_filter) sysctls, ``device``'s addresses, and whether it is up (None:
    absent), read straight from the kernel."""
    def read() -> tuple[dict[str, str], list[str], bool | None]:
        from pyroute2 import IPRoute

        names = [*ARP_SYSCTLS, "net.ipv4.conf.all.rp_filter"]
        sysctls = {name: Path("/proc/sys", *name.split(".")).read_text().strip()
                   for name in names}
        with IPRoute() as rtnl:
            found = rtnl.link_lookup(ifname=device)
            if not found:
                return sysctls, [], None
            addresses = sorted(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}"
                               for m in rtnl.addr("dump", index=found[0]))
            up = bool(rtnl.link("get", index=found[0])[0]["flags"] & 1)
        return sysctls, addresses, up

    return in_netns(ns, read)


def test_check_names_each_missing_piece_with_its_fix_on_bare_real_servers(
        lab: DrLab, tmp_path: Path) -> None:
    for server in lab.real_servers:
        code, out, err = lvsd_main(server.ns, "realserver", "check", "--vip", VIP,
                                   "--root", str(tmp_path))
        assert code == 1, err
        assert f"missing: {VIP}/32 is not on lo\n  fix: ip addr add {VIP}/32 dev lo" in out
        for name in ARP_SYSCTLS:
            wants = "1" if name.endswith("arp_ignore") else "2"
            assert f"missing: {name} is 0, wants {wants}\n  fix: sysctl -w {name}={wants}" in out
        assert out.count("missing: ") == 9
        assert "9 piece(s) missing" in err


async def test_apply_makes_vip_traffic_work_and_remove_restores_the_previous_state(
        lab: DrLab, tmp_path: Path) -> None:
    rs1, rs2 = lab.real_servers
    assert await lab.fetch(1, per_request=1.0) == [None]  # the real servers drop the VIP
    # rs2 had some set-up of its own: apply must keep it, remove must give it back
    rs2.ns.sysctl("net.ipv4.conf.eth0.arp_announce=1")
    rs2.ns.ip_batch(["addr add 198.51.100.5/32 dev lo"])
    before = state(rs1.ns), state(rs2.ns)

    applied = lvsd_cli(rs1.ns, "realserver", "apply", "--vip", VIP,
                       "--root", str(tmp_path / "rs1"))
    assert applied.returncode == 0, applied.stderr
    assert f"added {VIP}/32 to lo" in applied.stdout
    code, out, err = lvsd_main(rs2.ns, "realserver", "apply", "--vip", VIP,
                               "--root", str(tmp_path / "rs2"))
    assert code == 0, err
    assert "set net.ipv4.conf.eth0.arp_announce=2 (was 1)" in out
    lab.client.ip("neigh", "flush", "all")  # the real servers must not answer ARP for the VIP
    assert await lab.count_answers(4) == collections.Counter({"rs1": 2, "rs2": 2})
    for server in (rs1, rs2):
        assert lvsd_main(server.ns, "realserver", "check", "--vip", VIP,
                         "--root", str(tmp_path / server.label))[0] == 0

    for server in (rs1, rs2):
        code, out, err = lvsd_main(server.ns, "realserver", "remove",
                                   "--root", str(tmp_path / server.label))
        assert code == 0, err
        assert f"deleted {VIP}/32 from lo" in out
    assert (state(rs1.ns), state(rs2.ns)) == before
    assert "198.51.100.5/32" in state(rs2.ns)[1]


def test_apply_twice_changes_nothing_the_second_time(lab: DrLab, tmp_path: Path) -> None:
    rs1 = lab.real_servers[0].ns
    args = ("realserver", "apply", "--vip", VIP, "--root", str(tmp_path))
    assert lvsd_main(rs1, *args)[0] == 0
    applied = state(rs1)
    record = (tmp_path / "var/lib/lvsd/realserver.json").read_bytes()
    code, out, _ = lvsd_main(rs1, *args)
    assert (code, out) == (0, f"nothing to change: dr set-up for {VIP} is in place\n")
    assert state(rs1) == applied
    assert (tmp_path / "var/lib/lvsd/realserver.json").read_bytes() == record
    assert lvsd_main(rs1, "realserver", "remove", "--root", str(tmp_path))[0] == 0


async def test_tun_apply_takes_tunnelled_traffic_through_a_strict_rp_filter(
        lab: DrLab, tmp_path: Path) -> None:
    rs1 = lab.real_servers[0]
    rs1.ns.sysctl("net.ipv4.conf.all.rp_filter=1")
    before = state(rs1.ns, "tunl0")
    code, out, err = lvsd_main(rs1.ns, "realserver", "apply", "--mode", "tun",
                               "--vip", TUN_VIP, "--root", str(tmp_path))
    assert code == 0, err
    assert "set net.ipv4.conf.all.rp_filter=2 (was 1)" in out
    sysctls, addresses, up = state(rs1.ns, "tunl0")
    assert (f"{TUN_VIP}/32" in addresses, up, sysctls["net.ipv4.conf.all.rp_filter"]) \
        == (True, True, "2")
    assert await get_tunnelled(lab) == ["rs1", "rs1"]
    assert lvsd_main(rs1.ns, "realserver", "remove", "--root", str(tmp_path))[0] == 0
    sysctls, addresses, up = state(rs1.ns, "tunl0")
    # Loading ipip makes tunl0 in every namespace; remove takes back the address and the
    # link state it set, and the sysctls.
    assert (sysctls, f"{TUN_VIP}/32" in addresses) == (before[0], False)
    assert up in (None, before[2] or False)


async def get_tunnelled(lab: DrLab) -> list[str | None]:
    from tests.integration.conftest import get_page_async

    return [await get_page_async(lab.client, TUN_VIP, 80, 2.0) for _ in range(2)]


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "lvsd.toml"
    config.write_text(f"""\
[[services]]
name = "web"
address = "{VIP}"
port = 80
persistence = 300

[services.check]
type = "tcp"

[[services.real_servers]]
address = "192.0.2.11"

[[services.real_servers]]
address = "192.0.2.12"
""")
    return config


def set_vip(ns: Namespace, present: bool) -> None:
    ns.ip("addr", "add" if present else "del", f"{VIP}/32", "dev", "eth0")


def test_doctor_reports_redirects_a_missing_vip_and_quiescent_templates_then_nothing(
        lab: DrLab, tmp_path: Path) -> None:
    director = lab.director
    config = write_config(tmp_path)
    director.sysctl("net.ipv4.conf.all.send_redirects=1", "net.ipv4.conf.eth0.send_redirects=1",
                    "net.ipv4.vs.expire_quiescent_template=0")
    set_vip(director, False)
    try:
        result = lvsd_cli(director, "doctor", "-c", str(config), "--json")
        report = json.loads(result.stdout)
        fixes = {f["subject"]: (f["severity"], f["fix"]) for f in report["findings"]}
        assert fixes == {
            f"VIP {VIP}": ("error", f"ip addr add {VIP}/32 dev eth0"),
            "net.ipv4.conf.all.send_redirects":
                ("warning", "sysctl -w net.ipv4.conf.all.send_redirects=0 (and set it in "
                            "/etc/sysctl.d/)"),
            "net.ipv4.conf.eth0.send_redirects":
                ("warning", "sysctl -w net.ipv4.conf.eth0.send_redirects=0 (and set it in "
                            "/etc/sysctl.d/)"),
            "net.ipv4.vs.expire_quiescent_template":
                ("warning", "sysctl -w net.ipv4.vs.expire_quiescent_template=1 (and set it "
                            "in /etc/sysctl.d/)"),
        }
        assert (result.returncode, report["worst"]) == (2, "error"), result.stderr
        [quiescent] = [f for f in report["findings"] if "quiescent" in f["subject"]]
        assert "dead server until their template expires (web 300 s)" in quiescent["message"]
    finally:
        set_vip(director, True)
        director.sysctl("net.ipv4.conf.all.send_redirects=0",
                        "net.ipv4.conf.eth0.send_redirects=0",
                        "net.ipv4.vs.expire_quiescent_template=1")
    code, out, err = lvsd_main(director, "doctor", "-c", str(config))
    assert (code, out) == (0, f"{config}: no findings\n"), err
