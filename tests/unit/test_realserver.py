"""``lvsd realserver``: the pieces wanted, check's fixes, apply's record and rollback, remove,
and the --persist files (against a fake host; the kernel tests are in
tests/integration/test_setup_kernel.py)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsd.cli import main
from lvsd.errors import LvsdError
from lvsd.model import Address
from lvsd.realserver import persist
from lvsd.realserver.actions import HostLike, RealserverError, Target, apply, check, remove
from lvsd.realserver.host import HostError
from lvsd.realserver.plan import (
    Change,
    HostState,
    Link,
    LinkUp,
    Piece,
    Record,
    Sysctl,
    Tunnel,
    VipAddress,
    wanted,
)

VIP = ipaddress.ip_address("192.0.2.100")
VIP6 = ipaddress.ip_address("2001:db8::100")
RS = ipaddress.ip_address("192.0.2.11")
CONF = "net.ipv4.conf"


@dataclass
class FakeHost:
    """A real server in memory, changed as the kernel would be; ``fail`` names a piece whose
    making fails."""

    links: dict[str, Link] = field(default_factory=lambda: {
        "lo": Link(1, None, True), "eth0": Link(2, "veth", True)})
    addresses: dict[str, set[Address]] = field(default_factory=lambda: {
        "lo": {ipaddress.ip_address("127.0.0.1")}, "eth0": {RS}})
    sysctls: dict[str, str] = field(default_factory=dict)
    fail: Piece | None = None

    def __post_init__(self) -> None:
        for device in ("all", "default", *self.links):
            for key in ("arp_ignore", "arp_announce", "rp_filter"):
                self.sysctls.setdefault(f"{CONF}.{device}.{key}", "0")

    def state(self, sysctls: Iterable[str] = ()) -> HostState:
        return HostState(dict(self.links), {n: frozenset(a) for n, a in self.addresses.items()},
                         {name: self.sysctls.get(name) for name in sysctls})

    def make(self, piece: Piece) -> Change | None:
        if piece == self.fail:
            raise HostError(f"{piece.fix}: Operation not permitted")
        match piece:
            case Sysctl():
                current = self.sysctls.get(piece.name)
                if piece.satisfied_by(current):
                    return None
                if current is None:
                    raise HostError(f"{piece.name}: cannot set {piece.value}: no such file")
                self.sysctls[piece.name] = piece.value
                return Change(piece, current)
            case VipAddress():
                if piece.address in self.addresses[piece.device]:
                    return None
                self.addresses[piece.device].add(piece.address)
                return Change(piece)
            case Tunnel():
                if piece.device in self.links:
                    return None
                self.links[piece.device] = Link(len(self.links) + 1, piece.kind, False)
                self.addresses[piece.device] = set()
                self.sysctls[f"{CONF}.{piece.device}.rp_filter"] = self.sysctls[
                    f"{CONF}.default.rp_filter"]
                return Change(piece)
            case LinkUp():
                if self.links[piece.device].up:
                    return None
                link = self.links[piece.device]
                self.links[piece.device] = Link(link.index, link.kind, True)
                return Change(piece)

    def undo(self, change: Change) -> str | None:
        piece = change.piece
        match piece:
            case Sysctl():
                if self.sysctls.get(piece.name) != piece.value:
                    return f"{piece.name}: changed since: left"
                assert change.previous is not None
                self.sysctls[piece.name] = change.previous
            case VipAddress():
                self.addresses[piece.device].discard(piece.address)
            case Tunnel():
                del self.links[piece.device], self.addresses[piece.device]
                self.sysctls.pop(f"{CONF}.{piece.device}.rp_filter")
            case LinkUp():
                if piece.device in self.links:
                    link = self.links[piece.device]
                    self.links[piece.device] = Link(link.index, link.kind, False)
        return None

    def snapshot(self) -> tuple[object, ...]:
        return (dict(self.links), {n: set(a) for n, a in self.addresses.items()},
                dict(self.sysctls))


_: type[HostLike] = FakeHost  # the fake keeps the contract


def target(tmp_path: Path) -> Target:
    return Target(tmp_path, str(Path(sys.executable).with_name("lvsd")))


def run_apply(host: FakeHost, tmp_path: Path, vips: list[Address], *, mode: str = "dr",
              persisted: bool = False) -> list[str]:
    said: list[str] = []
    apply(host, vips, mode, persisted=persisted, target=target(tmp_path),  # type: ignore[arg-type]
          say=said.append)
    return said


def run_check(host: FakeHost, tmp_path: Path, vips: list[Address], *, mode: str = "dr",
              persisted: bool = False) -> list[str]:
    said: list[str] = []
    count = check(host, vips, mode, persisted=persisted,  # type: ignore[arg-type]
                  target=target(tmp_path), say=said.append)
    assert count == len(said)
    return said


def test_dr_wants_the_vip_on_lo_and_arp_sysctls_on_all_default_lo_and_each_interface() -> None:
    pieces = wanted([VIP], "dr", FakeHost().state())
    assert pieces[0] == VipAddress("lo", VIP)
    sysctls = {p.name: p.value for p in pieces if isinstance(p, Sysctl)}
    assert sysctls == {f"{CONF}.{d}.{k}": v for d in ("all", "default", "lo", "eth0")
                       for k, v in (("arp_ignore", "1"), ("arp_announce", "2"))}


def test_ipv6_vips_go_on_lo_as_128_without_arp_sysctls() -> None:
    assert wanted([VIP6], "dr", FakeHost().state()) == [VipAddress("lo", VIP6)]
    assert VipAddress("lo", VIP6).fix == "ip addr add 2001:db8::100/128 dev lo"


def test_tun_wants_the_tunnel_device_up_with_the_vip_and_rp_filter_not_strict() -> None:
    pieces = wanted([VIP, VIP6], "tun", FakeHost().state())
    assert pieces[:6] == [Tunnel("tunl0", "ipip"), LinkUp("tunl0"), Tunnel("ip6tnl0", "ip6tnl"),
                          LinkUp("ip6tnl0"), VipAddress("tunl0", VIP),
                          VipAddress("ip6tnl0", VIP6)]
    rp = [p for p in pieces if isinstance(p, Sysctl) and p.name.endswith("rp_filter")]
    assert [(p.name, p.value) for p in rp] == [(f"{CONF}.all.rp_filter", "2"),
                                               (f"{CONF}.tunl0.rp_filter", "0")]
    # The effective value is max(all, dev): loose (2) or off (0) both let decapsulated
    # packets in; only strict (1) needs changing.
    assert rp[0].satisfied_by("0") and rp[0].satisfied_by("2") and not rp[0].satisfied_by("1")


def test_check_names_every_missing_piece_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    said = run_check(FakeHost(), tmp_path, [VIP])
    assert said[0] == ("missing: 192.0.2.100/32 is not on lo\n"
                       "  fix: ip addr add 192.0.2.100/32 dev lo")
    assert f"missing: {CONF}.eth0.arp_announce is 0, wants 2\n" \
           f"  fix: sysctl -w {CONF}.eth0.arp_announce=2" in said
    assert len(said) == 9


def test_apply_makes_everything_then_check_finds_nothing_and_apply_again_changes_nothing(
        tmp_path: Path) -> None:
    host = FakeHost()
    first = run_apply(host, tmp_path, [VIP])
    assert first[0] == "added 192.0.2.100/32 to lo"
    assert f"set {CONF}.all.arp_ignore=1 (was 0)" in first
    assert run_check(host, tmp_path, [VIP]) == []
    record = (tmp_path / "var/lib/lvsd/realserver.json").read_text()
    before = host.snapshot()
    assert run_apply(host, tmp_path, [VIP]) == [
        "nothing to change: dr set-up for 192.0.2.100 is in place"]
    assert host.snapshot() == before
    assert (tmp_path / "var/lib/lvsd/realserver.json").read_text() == record


def test_remove_restores_the_previous_values_and_keeps_what_apply_did_not_add(
        tmp_path: Path) -> None:
    host = FakeHost()
    host.addresses["lo"].add(VIP6)  # there before: not lvsd's to remove
    host.sysctls[f"{CONF}.all.arp_ignore"] = "1"  # already right: apply leaves it alone
    host.sysctls[f"{CONF}.eth0.arp_announce"] = "1"
    before = host.snapshot()
    run_apply(host, tmp_path, [VIP, VIP6])
    said: list[str] = []
    remove(host, [], target=target(tmp_path), say=said.append)
    assert host.snapshot() == before
    assert f"set {CONF}.eth0.arp_announce=1 again" in said
    assert "deleted 192.0.2.100/32 from lo" in said
    assert not any("2001:db8::100" in line for line in said)
    assert not (tmp_path / "var/lib/lvsd/realserver.json").exists()


def test_remove_leaves_a_sysctl_changed_since_apply_and_says_so(tmp_path: Path) -> None:
    host = FakeHost()
    run_apply(host, tmp_path, [VIP])
    host.sysctls[f"{CONF}.lo.arp_ignore"] = "2"
    said: list[str] = []
    remove(host, [], target=target(tmp_path), say=said.append)
    assert f"{CONF}.lo.arp_ignore: changed since: left" in said
    assert host.sysctls[f"{CONF}.lo.arp_ignore"] == "2"


def test_remove_of_some_vips_keeps_the_shared_sysctls_for_the_others(tmp_path: Path) -> None:
    host = FakeHost()
    vip2 = ipaddress.ip_address("192.0.2.101")
    run_apply(host, tmp_path, [VIP, vip2])
    said: list[str] = []
    remove(host, [VIP], target=target(tmp_path), say=said.append)
    assert said == ["deleted 192.0.2.100/32 from lo"]
    assert host.addresses["lo"] >= {vip2} and VIP not in host.addresses["lo"]
    assert host.sysctls[f"{CONF}.all.arp_ignore"] == "1"
    with pytest.raises(RealserverError, match=r"--vip: 192.0.2.100 not applied here"):
        remove(host, [VIP], target=target(tmp_path), say=said.append)
    remove(host, [vip2], target=target(tmp_path), say=said.append)
    assert host.sysctls[f"{CONF}.all.arp_ignore"] == "0"


def test_a_failing_step_rolls_back_what_this_run_changed(tmp_path: Path) -> None:
    host = FakeHost(fail=Sysctl(f"{CONF}.eth0.arp_ignore", "1"))
    before = host.snapshot()
    with pytest.raises(RealserverError, match="Operation not permitted"):
        run_apply(host, tmp_path, [VIP], persisted=True)
    assert host.snapshot() == before
    assert not list(tmp_path.rglob("*.*"))  # no record, no persisted file


def test_a_failing_persisted_file_rolls_back_the_kernel_changes(tmp_path: Path) -> None:
    host = FakeHost()
    before = host.snapshot()
    (tmp_path / "etc").write_text("not a directory")
    with pytest.raises(RealserverError, match=r"etc/sysctl.d/90-lvsd-realserver.conf: cannot"):
        run_apply(host, tmp_path, [VIP], persisted=True)
    assert host.snapshot() == before
    assert not (tmp_path / "var/lib/lvsd/realserver.json").exists()


def test_a_second_apply_adds_its_vips_to_the_record_and_remove_undoes_both(
        tmp_path: Path) -> None:
    host = FakeHost()
    before = host.snapshot()
    run_apply(host, tmp_path, [VIP])
    assert run_apply(host, tmp_path, [VIP6]) == ["added 2001:db8::100/128 to lo"]
    record = Record.loads((tmp_path / "var/lib/lvsd/realserver.json").read_text())
    assert record.vips == (VIP, VIP6)
    remove(host, [], target=target(tmp_path), say=lambda _: None)
    assert host.snapshot() == before


def test_apply_in_another_mode_than_recorded_is_refused(tmp_path: Path) -> None:
    host = FakeHost()
    run_apply(host, tmp_path, [VIP])
    with pytest.raises(RealserverError, match="applied in mode dr; remove them first"):
        run_apply(host, tmp_path, [VIP], mode="tun")


def test_tun_apply_creates_the_tunnel_and_remove_deletes_it(tmp_path: Path) -> None:
    host = FakeHost()
    host.sysctls[f"{CONF}.all.rp_filter"] = "1"
    before = host.snapshot()
    said = run_apply(host, tmp_path, [VIP], mode="tun")
    assert said[:3] == ["created the ipip tunnel tunl0", "set tunl0 up",
                        "added 192.0.2.100/32 to tunl0"]
    assert host.sysctls[f"{CONF}.all.rp_filter"] == "2"
    assert run_check(host, tmp_path, [VIP], mode="tun") == []
    remove(host, [], target=target(tmp_path), say=lambda _: None)
    assert host.snapshot() == before


def test_a_record_that_is_not_ours_is_an_error_with_its_place(tmp_path: Path) -> None:
    record = tmp_path / "var/lib/lvsd/realserver.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"format": 99}')
    with pytest.raises(RealserverError, match=rf"{record}: not an lvsd realserver record"):
        run_apply(FakeHost(), tmp_path, [VIP])
    with pytest.raises(ValueError, match="unknown change kind"):
        Record.loads('{"format": 1, "mode": "dr", "vips": [], "changes": [{"kind": "x"}]}')


def test_record_round_trips() -> None:
    record = Record("tun", (VIP, VIP6), (
        Change(Tunnel("tunl0", "ipip")), Change(LinkUp("tunl0")),
        Change(VipAddress("tunl0", VIP)), Change(Sysctl(f"{CONF}.all.rp_filter", "2"), "1")),
        {persist.SYSCTL_FILE: None, persist.UNIT_FILE: "old\n"})
    assert Record.loads(record.dumps()) == record


def verify(unit: Path) -> list[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze not found: apt-get install -y systemd"
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    findings = [line for line in done.stderr.splitlines() if unit.name in line]
    return findings + ([f"exit {done.returncode}: {done.stderr}"] if done.returncode else [])


def test_persist_writes_a_sysctl_file_and_an_enabled_unit_that_pass_verify(
        tmp_path: Path) -> None:
    host = FakeHost()
    said = run_apply(host, tmp_path, [VIP, VIP6], persisted=True)
    unit = tmp_path / persist.UNIT_FILE
    assert f"wrote {unit}" in said
    assert verify(unit) == []
    text = unit.read_text()
    assert "ExecStart=" + str(Path(sys.executable).with_name("lvsd")) + \
        " realserver apply --mode dr --vip 192.0.2.100 --vip 2001:db8::100" in text
    assert "Type=oneshot" in text and "WantedBy=multi-user.target" in text
    link = tmp_path / persist.WANTS_LINK
    assert link.is_symlink() and str(link.readlink()) == f"/{persist.UNIT_FILE}"
    conf = (tmp_path / persist.SYSCTL_FILE).read_text()
    assert f"{CONF}.all.arp_ignore = 1\n" in conf and f"{CONF}.eth0.arp_announce = 2\n" in conf
    assert run_check(host, tmp_path, [VIP, VIP6], persisted=True) == []
    assert run_apply(host, tmp_path, [VIP, VIP6], persisted=True) == [
        "nothing to change: dr set-up for 192.0.2.100, 2001:db8::100 is in place"]


def test_check_persist_names_absent_files_and_remove_puts_back_a_previous_one(
        tmp_path: Path) -> None:
    host = FakeHost()
    run_apply(host, tmp_path, [VIP])
    said = run_check(host, tmp_path, [VIP], persisted=True)
    assert said[0] == (f"missing: {tmp_path / persist.SYSCTL_FILE} is absent\n"
                       f"  fix: lvsd realserver apply --mode dr --vip 192.0.2.100 --persist")
    (tmp_path / persist.UNIT_FILE).parent.mkdir(parents=True)
    (tmp_path / persist.UNIT_FILE).write_text("# the operator's own\n")
    run_apply(host, tmp_path, [VIP], persisted=True)
    remove(host, [], target=target(tmp_path), say=lambda _: None)
    assert (tmp_path / persist.UNIT_FILE).read_text() == "# the operator's own\n"
    assert not (tmp_path / persist.SYSCTL_FILE).exists()
    assert not (tmp_path / persist.WANTS_LINK).is_symlink()


def test_removing_some_vips_rewrites_the_unit_for_those_left(tmp_path: Path) -> None:
    host = FakeHost()
    run_apply(host, tmp_path, [VIP, VIP6], persisted=True)
    remove(host, [VIP6], target=target(tmp_path), say=lambda _: None)
    text = (tmp_path / persist.UNIT_FILE).read_text()
    assert "--vip 192.0.2.100\n" in text and "2001:db8::100" not in text
    assert verify(tmp_path / persist.UNIT_FILE) == []


def test_remove_without_a_record_changes_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    remove(FakeHost(), [], target=target(tmp_path), say=said.append)
    assert said[0].startswith("nothing to remove:")


def test_the_cli_refuses_a_bad_vip_as_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["realserver", "check", "--vip", "192.0.2.300"])
    assert exit_.value.code == 2
    assert "'192.0.2.300' is not an IP address" in capsys.readouterr().err


def test_errors_are_lvsd_errors_with_their_place() -> None:
    assert issubclass(RealserverError, LvsdError) and issubclass(HostError, LvsdError)
