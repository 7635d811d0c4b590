"""The command line: exit codes and messages of what needs no kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.cli import EXIT_BAD_INPUT, EXIT_NO_IPVS, EXIT_OK, main
from lvsd.errors import IpvsUnavailable
from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.model import Table

CONFIG = Path(__file__).parents[2] / "config" / "lvsd.toml"


def test_check_config_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CONFIG)]) == EXIT_OK
    assert "OK, 1 service(s), 2 real server(s), 2 checked" in capsys.readouterr().out


def test_check_config_prints_every_problem_with_its_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[services]]\naddress = "192.0.2.1"\nport = 80\nscheduler = "nope"\n'
                   '[[services.real_servers]]\naddress = "192.0.2.11"\nweight = 70000\n')
    assert main(["check-config", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{bad}: invalid, 2 problem(s):" in err
    assert "services[0] (tcp:192.0.2.1:80).scheduler: unknown scheduler 'nope'" in err
    assert ("services[0] (tcp:192.0.2.1:80).real_servers[0] (192.0.2.11).weight: "
            "weight 70000 is out of range 0..65535") in err


def test_restore_refuses_a_bad_file_before_touching_the_kernel(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.write_text("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 192.0.2.300:80 -g\n")
    # No kernel here: exit 2 (bad input) proves the file was refused before any netlink use.
    assert main(["restore", str(rules)]) == EXIT_BAD_INPUT
    assert f"{rules}:2:" in capsys.readouterr().err


def test_restore_of_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    assert main(["restore", str(tmp_path / "missing")]) == EXIT_BAD_INPUT


def test_run_with_an_invalid_config_exits_before_doing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nresync_interval = -1\n")
    assert main(["run", "--config", str(bad)]) == EXIT_BAD_INPUT


def test_check_config_prints_warnings_and_still_exits_0(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text('[daemon]\nlisten = "[::]:9163"\n'
                      '[[services]]\naddress = "192.0.2.1"\nport = 80\nquorum = 3\n'
                      '[[services.real_servers]]\naddress = "192.0.2.11"\n')
    assert main(["check-config", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{config}: OK, 1 service(s), 1 real server(s), 0 checked" in out
    assert f"{config}: 2 warning(s):" in out
    assert "  warning: daemon.listen: [::]:9163 listens on every interface" in out
    assert ("  warning: services[0] (tcp:192.0.2.1:80).quorum: quorum 3 is above the total "
            "weight 1") in out


def test_check_config_of_an_empty_config_says_what_it_would_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text("# truncated\n")
    assert main(["check-config", str(config)]) == EXIT_BAD_INPUT
    assert "set allow_empty = true in [daemon]" in capsys.readouterr().err
    config.write_text("[daemon]\nallow_empty = true\n")
    assert main(["check-config", str(config)]) == EXIT_OK
    assert "lvsd deletes every service it owns" in capsys.readouterr().out


def test_every_shipped_config_passes_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = sorted(CONFIG.parent.rglob("*.toml"))
    assert len(shipped) >= 6
    for path in shipped:
        assert main(["check-config", str(path)]) == EXIT_OK, path
        assert "warning" not in capsys.readouterr().out, path


def test_restore_of_a_file_that_is_not_utf8_names_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.write_bytes(b"-A -t 192.0.2.1:80 -s rr\n-A -t caf\xe9:80 -s rr\n")
    assert main(["restore", "--dry-run", str(rules)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(f"lvsd: {rules}:2: the byte 0xE9")


def test_restore_dry_run_against_a_save_file_needs_no_ipvs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "current"
    current.write_text("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1 -w 1\n"
                       "-A -t 192.0.2.2:80 -s rr\n")
    wanted = tmp_path / "wanted"
    wanted.write_text("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1 -w 2\n")
    assert main(["restore", "--dry-run", "--against", str(current), str(wanted)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "-D -t 192.0.2.2:80", "-e -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 2"]
    assert main(["restore", "--dry-run", "--against", "/dev/null", str(wanted)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "-A -t 192.0.2.1:80 -s rr", "-a -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 2"]


def test_restore_dry_run_against_a_bad_save_file_names_that_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "current"
    current.write_text("-A -t 192.0.2.1:80 -s nosuch\n")
    wanted = tmp_path / "wanted"
    wanted.write_text("-A -t 192.0.2.1:80 -s rr\n")
    assert main(["restore", "--dry-run", "--against", str(current), str(wanted)]) \
        == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(f"lvsd: {current}:1: unknown scheduler")


def test_restore_against_without_dry_run_is_bad_usage(tmp_path: Path) -> None:
    wanted = tmp_path / "wanted"
    wanted.write_text("-A -t 192.0.2.1:80 -s rr\n")
    assert main(["restore", "--against", "/dev/null", str(wanted)]) == EXIT_BAD_INPUT


def test_restore_dry_run_where_there_is_no_ipvs_plans_against_an_empty_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_ipvs(self: NetlinkIpvs) -> Table:
        raise IpvsUnavailable("the kernel has no IPVS")

    monkeypatch.setattr(NetlinkIpvs, "dump", no_ipvs)
    wanted = tmp_path / "wanted"
    wanted.write_text("-A -t 192.0.2.1:80 -s rr\n")
    assert main(["restore", "--dry-run", str(wanted)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == "-A -t 192.0.2.1:80 -s rr\n"
    assert err.startswith("lvsd: the kernel has no IPVS; planning against an empty table")
    assert main(["restore", str(wanted)]) == EXIT_NO_IPVS
