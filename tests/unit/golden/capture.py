"""Record the bytes lvsd's netlink channel exchanges with a real IPVS kernel, for the golden tests.

    bash tests/vm/run-in-vm.sh .venv/bin/python -m tests.unit.golden.capture [--add NAME...]

``--add`` records only the named scenarios (and those they need run before them) and merges
them into the existing file, leaving every other recording as it was.

Runs as root where the kernel has IPVS (inside the VM), in a network namespace of its own
(TEST-NET addresses only, and only inside it). Every scenario of ``ipvs_scenarios`` runs on a
fresh ``NetlinkIpvs`` whose socket records each datagram sent and received; the recording is
written to ``ipvs-6.1.json`` beside this file, which ``tests/unit/test_codec.py`` replays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
import uuid
from typing import Any

from lvsd.ipvs.abi import NETLINK_GENERIC
from lvsd.ipvs.channel import Channel, open_socket
from lvsd.ipvs.netlink import NetlinkIpvs
from tests.integration.conftest import Namespace, create_namespace, delete_namespaces
from tests.unit.golden.ipvs_scenarios import (
    COUNTED,
    COUNTED_DATAGRAMS,
    GOLDEN,
    MALFORMED_TIMEOUT,
    SCENARIOS,
    Scenario,
)


class RecordingSocket(socket.socket):
    """A netlink socket that keeps every datagram it sends and receives, in order."""

    events: list[tuple[str, bytes]]

    def send(self, data: Any, flags: int = 0) -> int:
        self.events.append(("sent", bytes(data)))
        return super().send(data, flags)

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = super().recv(size, flags)
        self.events.append(("received", data))
        return data


def recording_socket(netns: str, events: list[tuple[str, bytes]]) -> RecordingSocket:
    real = open_socket(netns)
    sock = RecordingSocket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC,
                           fileno=real.detach())
    sock.setblocking(False)
    sock.events = events
    return sock


def send_counted_traffic(ns: Namespace) -> None:
    ns.ip_batch(["link add d0 type dummy", "link set d0 up",
                 "addr add 198.51.100.1/24 dev d0", f"addr add {COUNTED.address}/32 dev lo"])
    for _ in range(COUNTED_DATAGRAMS):  # one IPVS connection per source port
        with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", (str(COUNTED.address), COUNTED.port))


async def wait_for_counters(ns: Namespace) -> None:
    # The kernel folds per-CPU counters into the reported totals on a 2 s timer.
    deadline = time.monotonic() + 20
    async with NetlinkIpvs(ns) as ipvs:
        while time.monotonic() < deadline:
            vs = (await ipvs.dump()).by_key()[COUNTED]
            if (vs.service.stats.conns == COUNTED_DATAGRAMS
                    and all(d.stats.traffic.conns for d in vs.dests)):
                return
            await asyncio.sleep(0.5)
    raise SystemExit("capture: the kernel never counted the test traffic")


async def run(scenario: Scenario, ns: Namespace) -> tuple[list[tuple[str, bytes]], str]:
    events: list[tuple[str, bytes]] = []
    if scenario.call == "raw":
        channel = await Channel.open(recording_socket(ns, events))
        outcome = (await channel.execute([MALFORMED_TIMEOUT]))[0]
        channel.close()
        return events, repr(outcome)
    async with NetlinkIpvs(ns, socket_factory=lambda: recording_socket(ns, events)) as ipvs:
        match scenario.call:
            case "apply":
                result: object = [str(e) for e in await ipvs.apply(scenario.ops)]
            case "dump":
                result = await ipvs.dump()
            case "timeouts":
                result = await ipvs.timeouts()
            case "info":
                result = await ipvs.info()
            case "sync":
                result = [str(e) for e in await ipvs.apply_sync(scenario.sync_ops)]
            case "daemons":
                result = await ipvs.daemons()
    return events, repr(result)


async def capture(ns: Namespace, only: frozenset[str] = frozenset()) -> dict[str, Any]:
    recorded: dict[str, Any] = {}
    for scenario in SCENARIOS:
        if scenario.name == "dump with counters":
            send_counted_traffic(ns)
            await wait_for_counters(ns)
        events, result = await run(scenario, ns)
        print(f"{scenario.name}: {len(events)} datagrams -> {result[:300]}")
        if not only or scenario.name in only:
            recorded[scenario.name] = [[kind, data.hex()] for kind, data in events]
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--add", nargs="+", default=[], metavar="NAME")
    only = frozenset(parser.parse_args().add)
    ns = create_namespace(f"golden-{uuid.uuid4().hex[:6]}")
    try:
        scenarios = asyncio.run(capture(ns, only))
    finally:
        delete_namespaces([ns])
    if only:
        kept = json.loads(GOLDEN.read_text())
        scenarios = {name: scenarios.get(name, kept["scenarios"].get(name))
                     for name in (s.name for s in SCENARIOS)
                     if name in scenarios or name in kept["scenarios"]}
        release = kept["kernel"]
    else:
        release = os.uname().release
    GOLDEN.write_text(json.dumps({"kernel": release, "scenarios": scenarios},
                                 indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
