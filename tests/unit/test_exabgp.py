"""The ExaBGP adapter's lines, and the shipped BIRD 2 configs (checked by ``bird -p``).

The adapter against the kernel (lvsd's routes coming and going in a real table) is in
tests/integration/test_announce_kernel.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lvsd.cli import main
from lvsd.config import AnnounceSchema
from lvsd.exabgp import Follower, api_line, lines_for
from lvsd.model import parse_address
from lvsd.routes import RouteEvent, host_prefix

BIRD_CONFIGS = Path(__file__).resolve().parents[2] / "config" / "bird"
A = host_prefix(parse_address("198.51.100.10"))
B = host_prefix(parse_address("2001:db8::10"))


def test_api_lines_are_exabgp_text_commands() -> None:
    assert api_line(A, True) == "announce route 198.51.100.10/32 next-hop self"
    assert api_line(B, False) == "withdraw route 2001:db8::10/128 next-hop self"
    assert api_line(A, True, "192.0.2.11") == "announce route 198.51.100.10/32 next-hop 192.0.2.11"


def test_each_change_is_said_once_whatever_the_list_and_the_events_repeat() -> None:
    events = [RouteEvent(A, True), RouteEvent(B, True),  # the list
              RouteEvent(A, True),  # an event the list already told
              RouteEvent(A, False), RouteEvent(A, False),  # a delete seen twice
              RouteEvent(B, False), RouteEvent(A, True)]
    assert lines_for(events) == [
        "announce route 198.51.100.10/32 next-hop self",
        "announce route 2001:db8::10/128 next-hop self",
        "withdraw route 198.51.100.10/32 next-hop self",
        "withdraw route 2001:db8::10/128 next-hop self",
        "announce route 198.51.100.10/32 next-hop self",
    ]


def test_a_withdraw_of_a_route_never_announced_says_nothing() -> None:
    follower = Follower()
    assert follower.lines(RouteEvent(A, False)) == []
    assert follower.told == set()


def test_without_an_announce_section_the_adapter_needs_table_and_protocol(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lvsd.toml"
    config.write_text('[[services]]\naddress = "198.51.100.10"\nport = 80\n'
                      '[[services.real_servers]]\naddress = "192.0.2.21"\n')
    assert main(["announce", "exabgp", "--config", str(config)]) == 2
    assert "has no [announce] section" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "words"), [
    (["--table", "255"], "'local' table"),
    (["--table", "x"], "expected a number"),
    (["--protocol", "186"], "bgp's"),
])
def test_bad_numbers_are_usage_errors(args: list[str], words: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["announce", "exabgp", *args])
    assert raised.value.code == 2
    assert words in capsys.readouterr().err


def bird_check(path: Path) -> subprocess.CompletedProcess[str]:
    bird = shutil.which("bird") or "/usr/sbin/bird"
    assert Path(bird).exists(), "bird2 is installed by tests/bootstrap.sh"
    return subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("name", ["director.conf", "router.conf"])
def test_bird_parses_the_shipped_configs(name: str) -> None:
    result = bird_check(BIRD_CONFIGS / name)
    assert result.returncode == 0, result.stderr


def test_bird_refuses_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "bird.conf"
    broken.write_text((BIRD_CONFIGS / "director.conf").read_text().replace("learn;", "lern;"))
    assert bird_check(broken).returncode != 0, "the check can fail"


def test_the_director_config_learns_lvsd_s_default_table_and_protocol() -> None:
    text = (BIRD_CONFIGS / "director.conf").read_text()
    defaults = AnnounceSchema()
    assert re.findall(r"kernel table (\d+);", text) == [str(defaults.table)] * 2
    assert f"if krt_source != {defaults.protocol} then reject;" in text
    assert text.count("learn;") == 2 and text.count("export none;") == 2
    assert "bfd on;" in text and "protocol bfd" in text


def test_the_router_config_merges_paths_and_runs_bfd() -> None:
    text = (BIRD_CONFIGS / "router.conf").read_text()
    assert "merge paths on" in text and "bfd on;" in text
