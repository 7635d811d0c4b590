"""``lvsd save | restore | show`` against the real kernel and the real ipvsadm.

The table uses every feature ipvsadm can set, the seeds' examples included; the CLI runs as a
subprocess in the test's namespace, exactly as an operator would run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.ipvsadm.restore import parse
from tests.integration.conftest import Namespace

LVSD = str(Path(sys.executable).with_name("lvsd"))

# Built with the real ipvsadm-restore (one process, fast in the emulated VM).
EVERY_FEATURE = """\
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
-A -t 10.0.0.3:80 -s wrr
-a -t 10.0.0.3:80 -r 192.168.10.2:8080 -m -w 3 -x 100 -y 10
-a -t 10.0.0.3:80 -r 192.168.10.3:8080 -m -w 1
-A -t 192.168.1.3:0 -s rr -p 360
-a -t 192.168.1.3:0 -r 192.168.1.11:0 -g -w 1
-A -f 8 -s wlc -p 600
-a -f 8 -r 192.168.10.7:0 -g -w 2
-A -f 9 -6 -s rr
-a -f 9 -6 -r [2001:db8::7]:0 -g -w 1
-A -u 10.1.0.1:53 -s wlc -p 600 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-a -t 10.1.0.2:443 -r 10.1.5.1:443 -g -w 5
-A -u 10.1.0.13:5060 -s rr -o
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A --sctp-service 10.1.0.15:3868 -s rr
-a --sctp-service 10.1.0.15:3868 -r 10.1.5.9:3868 -m -w 1
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-a -t [2001:db8::2]:443 -r [2001:db8::10]:443 -g -w 1
-A -t 10.1.0.16:80 -s sh -b sh-port
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
--set 30 5 60
"""


def lvsd(ns: Namespace, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, LVSD, *args], input=stdin,
                          capture_output=True, text=True, check=False, timeout=120)


def ipvsadm(ns: Namespace, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *args], input=stdin, capture_output=True,
                          text=True, check=True, timeout=60).stdout


@pytest.fixture
def built(netns: Namespace) -> Namespace:
    ipvsadm(netns, "ipvsadm-restore", stdin=EVERY_FEATURE)
    return netns


def test_save_is_ipvsadm_save_plus_what_it_drops(built: Namespace) -> None:
    reference = ipvsadm(built, "ipvsadm-save", "-n")
    compat = lvsd(built, "save", "--compat")
    assert compat.returncode == 0, compat.stderr
    assert compat.stdout == reference
    full = lvsd(built, "save").stdout
    assert full.splitlines()[0] == "--set 30 5 60"
    assert [line.replace(" -x 100 -y 10", "") for line in full.splitlines()[1:]] \
        == reference.splitlines()
    assert "-x 100 -y 10" in full
    assert lvsd(built, "show").stdout == ipvsadm(built, "ipvsadm", "-Ln")


def test_restore_rebuilds_the_table_from_empty_and_ipvsadm_restore_reads_our_file(
        built: Namespace, tmp_path: Path) -> None:
    saved = tmp_path / "rules"
    assert lvsd(built, "save", str(saved)).returncode == 0
    reference = ipvsadm(built, "ipvsadm-save", "-n")
    thresholds = ipvsadm(built, "ipvsadm", "-Ln", "--thresholds")
    timeouts = ipvsadm(built, "ipvsadm", "-L", "--timeout")

    ipvsadm(built, "ipvsadm", "-C")
    ipvsadm(built, "ipvsadm", "--set", "900", "120", "300")
    result = lvsd(built, "restore", str(saved))
    assert result.returncode == 0, result.stderr
    assert parse(ipvsadm(built, "ipvsadm-save", "-n")) == parse(reference)
    assert ipvsadm(built, "ipvsadm", "-L", "--timeout") == timeouts

    ipvsadm(built, "ipvsadm", "-C")
    ipvsadm(built, "ipvsadm", "--set", "900", "120", "300")
    ipvsadm(built, "ipvsadm-restore", stdin=saved.read_text())
    assert parse(ipvsadm(built, "ipvsadm-save", "-n")) == parse(reference)
    assert ipvsadm(built, "ipvsadm", "-Ln", "--thresholds") == thresholds
    assert ipvsadm(built, "ipvsadm", "-L", "--timeout") == timeouts


@pytest.mark.parametrize("bad_line", [
    "-a -t 200.0.0.254:80 -r 192.168.1.9:80 -g -w 70000",
    "-A -t 10.9.9.9:80 -s nosuch",
    "-a -t 10.9.9.10:80 -r 10.9.9.11:80 -g",
    "-A -t 300.1.1.1:80 -s rr",
    "-A -t 10.9.9.12:80 -s rr --frobnicate",
])
def test_a_bad_line_anywhere_changes_nothing_and_is_named(built: Namespace,
                                                          bad_line: str) -> None:
    before = ipvsadm(built, "ipvsadm-save", "-n")
    lines = ["-A -t 10.8.8.8:80 -s rr", "-a -t 10.8.8.8:80 -r 10.8.8.9:80 -g -w 1",
             bad_line, "-A -t 10.8.8.10:80 -s rr"]
    result = lvsd(built, "restore", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 2
    assert ":3:" in result.stderr, result.stderr
    assert ipvsadm(built, "ipvsadm-save", "-n") == before


def test_garbage_on_stdin_changes_nothing(built: Namespace) -> None:
    before = ipvsadm(built, "ipvsadm-save", "-n")
    result = lvsd(built, "restore", "-", stdin="\x00\x01 this is not a save file\n")
    assert result.returncode == 2 and ":1:" in result.stderr
    assert ipvsadm(built, "ipvsadm-save", "-n") == before


def test_restore_is_a_minimal_diff_that_keeps_unchanged_entries(built: Namespace) -> None:
    # One changed weight is one edit: nothing else is deleted, re-added or rewritten.
    # (From lvsd's own save: ipvsadm-save's output lacks the thresholds, and restoring it
    # rightly resets them.)
    target = parse(ipvsadm(built, "ipvsadm-save", "-n"))
    text = lvsd(built, "save").stdout.replace(
        "-r 192.168.1.3:80 -g -w 1", "-r 192.168.1.3:80 -g -w 4")
    dry = lvsd(built, "restore", "--dry-run", "-", stdin=text)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["-e -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 4"]
    assert parse(ipvsadm(built, "ipvsadm-save", "-n")) == target, "dry run changed nothing"
    assert lvsd(built, "restore", "-", stdin=text).returncode == 0
    assert "-r 192.168.1.3:80 -g -w 4" in ipvsadm(built, "ipvsadm-save", "-n")


def test_noflush_only_adds_and_edits(built: Namespace) -> None:
    text = "-A -t 10.7.7.7:80 -s rr\n-a -t 10.7.7.7:80 -r 10.7.7.8:80 -g -w 1\n"
    result = lvsd(built, "restore", "--noflush", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    after = ipvsadm(built, "ipvsadm-save", "-n")
    assert "-A -t 10.7.7.7:80 -s rr" in after
    assert "-A -t 200.0.0.254:80 -s rr" in after, "nothing deleted"
    full = lvsd(built, "restore", "-", stdin=text)
    assert full.returncode == 0
    assert ipvsadm(built, "ipvsadm-save", "-n") == (
        "-A -t 10.7.7.7:80 -s rr\n-a -t 10.7.7.7:80 -r 10.7.7.8:80 -g -w 1\n")
