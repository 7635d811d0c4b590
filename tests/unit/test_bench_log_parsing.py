"""bench/peers.py reads lvsd's own log to time detection and start-up: it must read the lines
lvsd writes today (an op renamed once left every lvsd figure of the peers part "nan")."""

from __future__ import annotations

import importlib.util
import io
import ipaddress
import sys
from pathlib import Path
from types import ModuleType

from lvsd import logs
from lvsd.daemon import log_ops
from lvsd.model import AddDest, Dest, DestKey, EditDest, Family, Protocol, ServiceKey
from lvsd.pacing import finish

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH / "peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_peers_benchmark_reads_lvsds_weight_changes_from_its_log() -> None:
    service = ServiceKey(Family.INET, Protocol.TCP, ipaddress.ip_address("198.19.0.1"), 80)
    server = DestKey(ipaddress.ip_address("198.18.0.7"), 80)
    out = io.StringIO()
    logs.configure("info", fmt="json", stream=out)
    try:
        finish(log_ops([AddDest(service, Dest(server, weight=0)),
                        EditDest(service, Dest(server, weight=1)),
                        EditDest(service, Dest(server, weight=0))], []))
    finally:
        logs.configure("info", fmt="json", stream=io.StringIO())
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 3
    lvsd = _peers().Lvsd
    assert [lvsd.down_address(lvsd, line) for line in lines] == ["198.18.0.7", None, "198.18.0.7"]
    assert [lvsd.up_address(lvsd, line) for line in lines] == [None, "198.18.0.7", None]


def test_the_peers_benchmark_takes_a_health_change_to_up_as_in_rotation() -> None:
    """A first pass of more than 100 ops logs a line per service: the servers it puts in
    rotation are named only by their health_change lines."""
    from lvsd.intake import log

    out = io.StringIO()
    logs.configure("info", fmt="json", stream=out)
    try:
        log.info("health_change", service="tcp:198.19.0.1:80", server="198.18.0.7:80",
                 status="up", previous="unknown")
        log.info("health_change", service="tcp:198.19.0.1:80", server="198.18.0.8:80",
                 status="down", previous="up")
    finally:
        logs.configure("info", fmt="json", stream=io.StringIO())
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    lvsd = _peers().Lvsd
    assert [lvsd.up_address(lvsd, line) for line in lines] == ["198.18.0.7", None]
