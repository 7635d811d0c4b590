"""``check-config --json``, ``check-config -`` and the JSON of ``lvsd show --json``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lvsd import cli
from lvsd.ipvsadm.restore import parse
from lvsd.tablejson import table_json

REPO = Path(__file__).resolve().parents[2]
BROKEN = """\
[[services]]
address = "192.0.2.1"
port = 80
scheduler = "fastest"

[[services.real_servers]]
address = "not-an-address"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, stdin: str | bytes = "") -> tuple[int, str, str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_json_lists_every_problem_as_where_and_message(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check-config", "--json", "-"], capsys, monkeypatch, BROKEN)
    assert code == cli.EXIT_BAD_INPUT
    report = json.loads(out)
    assert report["valid"] is False and report["source"] == "<stdin>"
    messages = {p["where"]: p["message"] for p in report["problems"]}
    assert len(messages) == 2
    assert any(w.endswith(".scheduler") and "fastest" in m for w, m in messages.items())
    assert any(w.endswith(".address") and "not an IP" in m for w, m in messages.items())


def test_check_config_json_of_a_valid_file_counts_and_gives_warnings_as_objects(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["check-config", "--json", str(REPO / "config" / "lvsd.toml")],
                       capsys, monkeypatch)
    assert code == cli.EXIT_OK
    report = json.loads(out)
    assert report["valid"] is True and report["problems"] == []
    assert (report["services"], report["real_servers"]) == (1, 2)
    assert all(set(w) == {"where", "message"} for w in report["warnings"])


def test_check_config_reads_stdin_and_names_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "config" / "lvsd.toml").read_text()
    code, out, _ = run(["check-config", "-"], capsys, monkeypatch, text)
    assert code == cli.EXIT_OK and out.startswith("<stdin>: OK, 1 service(s)")
    code, _, err = run(["check-config", "-"], capsys, monkeypatch, BROKEN)
    assert code == cli.EXIT_BAD_INPUT and err.startswith("<stdin>: invalid, 2 problem(s)")
    code, out, _ = run(["check-config", "--json", "-"], capsys, monkeypatch, b"\xff\xfe[")
    assert code == cli.EXIT_BAD_INPUT and "not UTF-8" in out


def test_the_table_json_carries_every_attribute_ipvsadm_sets() -> None:
    table = parse("""\
-A -t 192.0.2.1:80 -s sh -b sh-port -p 60 -M 255.255.255.0
-a -t 192.0.2.1:80 -r 192.0.2.11:80 -i -w 3 -x 10 -y 2 --tun-type gue --tun-port 6080
-A -f 9 -6 -s rr -o
--set 30 5 60
""", "t")
    data = table_json(table)
    web, mark = data["services"]
    assert (web["protocol"], web["address"], web["port"], web["scheduler"]) == (
        "TCP", "192.0.2.1", 80, "sh")
    assert web["sched_flags"] == ["flag-2"]
    assert (web["persistence"], web["persistence_netmask"]) == (60, "255.255.255.0")
    (server,) = web["servers"]
    assert (server["weight"], server["forward"], server["upper_threshold"],
            server["lower_threshold"]) == (3, "tunnel", 10, 2)
    assert server["tunnel"] == {"type": "gue", "port": 6080, "csum": 0}
    assert (mark["fwmark"], mark["family"], mark["ops"]) == (9, "ipv6", True)
    assert data["timeouts"] == {"tcp": 30, "tcpfin": 5, "udp": 60}
    json.dumps(data)  # serialisable as it is
