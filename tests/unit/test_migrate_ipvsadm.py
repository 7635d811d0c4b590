"""``lvsd import ipvsadm-save``: the config written builds the very table the file describes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lvsd import cli
from lvsd.config import loads
from lvsd.ipvsadm.restore import parse
from lvsd.migrate.document import render
from lvsd.migrate.ipvsadm import import_table
from lvsd.model import Table, VirtualService
from lvsd.spec import Config

SEEDS = {
    "dr": """\
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
""",
    "nat-wrr": """\
-A -t 10.0.0.3:80 -s wrr
-a -t 10.0.0.3:80 -r 192.168.10.2:8080 -m -w 3
-a -t 10.0.0.3:80 -r 192.168.10.3:8080 -m -w 1
""",
    "persistent-all-ports": """\
-A -t 192.168.1.3:0 -s rr -p 360
-a -t 192.168.1.3:0 -r 192.168.1.10:0 -g -w 1
""",
    "persistence-netmask-udp": """\
-A -u 10.1.0.1:53 -s wlc -p 360 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -u 10.1.0.13:5060 -s rr -o
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
""",
    "fwmark": """\
-A -f 8 -s fo -p 30
-a -f 8 -r 192.168.10.7:0 -g -w 2
-a -f 8 -r 192.168.10.8:443 -m -w 2
-A -f 9 -6 -s dh
-a -f 9 -6 -r [2001:db8::9]:0 -g -w 4
""",
    "ipv6-and-mixed-families": """\
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-a -t [2001:db8::2]:443 -r 192.0.2.5:443 -i -w 1 --tun-type ipip
-a -t [2001:db8::2]:443 -r [2001:db8::5]:8443 -m -w 1
""",
    "tunnels": """\
-A -t 10.1.0.16:80 -s rr
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.2:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.1.0.16:80 -r 10.1.5.3:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
""",
    "thresholds-and-flags": """\
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-a -t 10.1.0.2:443 -r 10.1.2.1:443 -g -w 5 -x 1000 -y 200
-A -t 100.64.0.9:443 -s sh -b sh-port
-A -t 100.64.0.10:443 -s rr -b flag-1,flag-3
-A --sctp-service 10.1.0.15:3868 -s sed
""",
    "timeouts": """\
--set 7200 60 30
-A -t 192.0.2.1:80 -s lc
-a -t 192.0.2.1:80 -r 192.0.2.11:80 -g -w 1
""",
}


def table_of(config: Config) -> Table:
    return Table(tuple(VirtualService(spec.service, tuple(s.dest for s in spec.servers))
                       for spec in config.services), config.timeouts)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_imported_config_builds_the_table_of_the_save_file(name: str) -> None:
    wanted = parse(SEEDS[name], name)
    config = loads(render(import_table(wanted, name)))
    assert table_of(config) == wanted
    assert all(not s.checks for spec in config.services for s in spec.servers)


def test_each_service_says_it_has_no_check_and_the_weights_are_kept() -> None:
    text = render(import_table(parse(SEEDS["nat-wrr"], "x"), "x"))
    assert "no health check in a save file" in text
    (svc,) = tomllib.loads(text)["services"]
    assert svc["forward"] == "masq"
    assert [(s["port"], s["weight"]) for s in svc["real_servers"]] == [(8080, 3), (8080, 1)]


def test_a_direct_routing_server_keeps_the_service_port_as_ipvsadm_gives_it() -> None:
    save = "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 192.0.2.2:8080 -g -w 1\n"
    text = render(import_table(parse(save, "x"), "x"))
    (spec,) = loads(text).services
    assert spec.servers[0].key.port == 80


def test_cli_reads_stdin_and_writes_the_output_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(SEEDS["dr"]))
    out = tmp_path / "lvsd.toml"
    assert cli.main(["import", "ipvsadm-save", "-", "-o", str(out)]) == 0
    assert table_of(loads(out.read_text())) == parse(SEEDS["dr"], "dr")


def test_cli_refuses_a_broken_save_file_as_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules"
    bad.write_text("-A -t 192.0.2.1:80 -s nosuch\n")
    assert cli.main(["import", "ipvsadm-save", str(bad)]) == cli.EXIT_BAD_INPUT
    assert f"{bad}:1" in capsys.readouterr().err
