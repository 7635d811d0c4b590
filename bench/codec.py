"""lvsd's IPVS codec against pyroute2's IPVS message objects, side by side in one run.

    .venv/bin/python bench/codec.py [--repeats 7] [--dests 10000]

No kernel needed: requests are encoded to bytes, replies decoded from bytes the kernel sent
(the destination replies recorded in ``tests/unit/golden/ipvs-6.1.json``, copied with a
distinct address per destination). For each case it prints the median cost per request or per
reply over ``--repeats`` runs and the ratio pyroute2 / lvsd:

- encode a service add: ``codec.request(AddService)`` + the netlink header, against
  ``IPVSService(...)`` in an ``ipvsmsg`` and ``encode()``, as ``IPVS.service("add")`` builds it;
- encode a destination add, likewise with ``IPVSDest``;
- decode a dump of ``--dests`` destinations (datagrams of about 32 KiB, as the kernel fills
  them): lvsd's ``decode_dests`` to ``lvsd.model.Dest`` values, against ``ipvsmsg(...).decode()``
  of each message with every field read back (``get``), which is where pyroute2 stops.

Figures are wall-clock on whatever else the machine is doing: only the ratios travel.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyroute2.ipvs import IPVSDest, IPVSService
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.generic import ipvs as pyroute2_ipvs

from lvsd.ipvs import codec
from lvsd.ipvs.abi import GENL_ID_CTRL, NLMSG_DONE, NLMSG_ERROR, Cmd, CmdAttr, DestAttr
from lvsd.ipvs.channel import message, messages
from lvsd.model import (
    AddDest,
    AddService,
    Dest,
    DestKey,
    Family,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
)

GOLDEN = Path(__file__).resolve().parent.parent / "tests/unit/golden/ipvs-6.1.json"
FAMILY = 0x2A  # any id: the bytes are never sent
DATAGRAM = 32 << 10
SERVICE = Service(ServiceKey.virtual(Protocol.TCP, "198.18.0.1", 80), "wrr",
                  persistence=Persistence(300))
DEST = Dest(DestKey(IPv4Address("198.18.1.1"), 80), weight=3, forward=Forward.ROUTE)


def per_item(work: Callable[[], object], items: int, repeats: int) -> float:
    """The median cost in microseconds of one of the ``items`` that ``work`` handles."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / items * 1e6


def lvsd_encode(op: AddService | AddDest, count: int) -> Callable[[], object]:
    def run() -> object:
        out = None
        for seq in range(count):
            out = message(FAMILY, NLM_F_REQUEST | NLM_F_ACK, seq, *codec.request(op))
        return out

    return run


def pyroute2_message(cmd: int, attrs: list[tuple[str, Any]], seq: int) -> bytes:
    msg = pyroute2_ipvs.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = pyroute2_ipvs.GENL_VERSION
    msg["attrs"] = attrs
    msg["header"]["type"] = FAMILY
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def pyroute2_service() -> IPVSService:
    return IPVSService(addr=str(SERVICE.key.address), port=SERVICE.key.port,
                       protocol=socket.IPPROTO_TCP, sched_name=SERVICE.scheduler,
                       timeout=300, flags={"flags": 1, "mask": 0xFFFFFFFF})


def pyroute2_encode_service(count: int) -> Callable[[], object]:
    def run() -> object:
        out = None
        for seq in range(count):
            service = pyroute2_service()
            out = pyroute2_message(pyroute2_ipvs.IPVS_CMD_NEW_SERVICE,
                                   [("IPVS_CMD_ATTR_SERVICE", service.dump_nla())], seq)
        return out

    return run


def pyroute2_encode_dest(count: int) -> Callable[[], object]:
    def run() -> object:
        out = None
        for seq in range(count):
            service = pyroute2_service()
            dest = IPVSDest(addr=str(DEST.key.address), port=DEST.key.port, weight=DEST.weight,
                            fwd_method=int(DEST.forward))
            out = pyroute2_message(pyroute2_ipvs.IPVS_CMD_NEW_DEST,
                                   [("IPVS_CMD_ATTR_SERVICE", service.dump_key()),
                                    ("IPVS_CMD_ATTR_DEST", dest.dump_nla())], seq)
        return out

    return run


def recorded_dest_message() -> tuple[bytes, int]:
    """One whole IPv4 destination reply message (header included) the kernel sent, and the
    offset of its address."""
    golden = json.loads(GOLDEN.read_text())
    for events in golden["scenarios"].values():
        for kind, hex_data in events:
            data = bytes.fromhex(hex_data)
            if kind != "received":
                continue
            for msg_type, _, _, start, end in messages(data):
                if msg_type in (NLMSG_ERROR, NLMSG_DONE, GENL_ID_CTRL) \
                        or data[start] != Cmd.NEW_DEST:
                    continue
                if codec.decode_dest(data, start + 4, end, Family.INET).key.address.version == 4:
                    whole = data[start - 16:end]
                    nest = codec.walk(whole, 20, len(whole), "reply")[CmdAttr.DEST]
                    return whole, codec.walk(whole, *nest, "destination")[DestAttr.ADDR][0]
    raise SystemExit(f"{GOLDEN}: no IPv4 destination reply recorded")


def dump_datagrams(count: int) -> list[bytes]:
    """``count`` destination replies, each with its own IPv4 address, packed like a dump."""
    template, address_at = recorded_dest_message()
    datagrams, current = [], b""
    for i in range(count):
        address = IPv4Address(int(IPv4Address("198.18.0.0")) + i + 1).packed
        reply = template[:address_at] + address + template[address_at + 4:]
        if len(current) + len(reply) > DATAGRAM:
            datagrams.append(current)
            current = b""
        current += reply
    return [*datagrams, current] if current else datagrams


def lvsd_decode(datagrams: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        replies = [(data, start + 4, end) for data in datagrams
                   for _, _, _, start, end in messages(data)]
        layout = codec.DestLayout(*replies[0])
        return codec.decode_dests(replies, Family.INET, layout)

    return run


_PYROUTE2_DEST_FIELDS = (
    "IPVS_DEST_ATTR_ADDR", "IPVS_DEST_ATTR_PORT", "IPVS_DEST_ATTR_FWD_METHOD",
    "IPVS_DEST_ATTR_WEIGHT", "IPVS_DEST_ATTR_U_THRESH", "IPVS_DEST_ATTR_L_THRESH",
    "IPVS_DEST_ATTR_ACTIVE_CONNS", "IPVS_DEST_ATTR_INACT_CONNS", "IPVS_DEST_ATTR_PERSIST_CONNS",
    "IPVS_DEST_ATTR_ADDR_FAMILY", "IPVS_DEST_ATTR_TUN_TYPE", "IPVS_DEST_ATTR_TUN_PORT",
    "IPVS_DEST_ATTR_TUN_FLAGS",
)


def pyroute2_decode(datagrams: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        out = []
        for data in datagrams:
            offset = 0
            while offset < len(data):
                size = struct.unpack_from("=I", data, offset)[0]
                msg = pyroute2_ipvs.ipvsmsg(data[offset:offset + size])
                msg.decode()
                nest = msg.get("IPVS_CMD_ATTR_DEST")
                stats = nest.get("IPVS_DEST_ATTR_STATS64")
                out.append((tuple(nest.get(name) for name in _PYROUTE2_DEST_FIELDS),
                            tuple(stats.get(name) for name, _ in stats.nla_map[1:])))
                offset += (size + 3) & ~3
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per encode run")
    parser.add_argument("--dests", type=int, default=10000, help="destinations in the dump")
    args = parser.parse_args()

    datagrams = dump_datagrams(args.dests)
    assert len(lvsd_decode(datagrams)()) == args.dests  # type: ignore[arg-type]
    assert len(pyroute2_decode(datagrams)()) == args.dests  # type: ignore[arg-type]
    cases = [
        ("encode service add (per request)", args.requests,
         lvsd_encode(AddService(SERVICE), args.requests), pyroute2_encode_service(args.requests)),
        ("encode dest add (per request)", args.requests,
         lvsd_encode(AddDest(SERVICE.key, DEST), args.requests),
         pyroute2_encode_dest(args.requests)),
        (f"decode a {args.dests}-dest dump (per reply)", args.dests,
         lvsd_decode(datagrams), pyroute2_decode(datagrams)),
    ]
    print(f"{'case':<40} {'lvsd µs':>10} {'pyroute2 µs':>12} {'ratio':>8}")
    for name, items, ours, theirs in cases:
        mine = per_item(ours, items, args.repeats)
        other = per_item(theirs, items, args.repeats)
        print(f"{name:<40} {mine:>10.2f} {other:>12.2f} {other / mine:>7.1f}x")


if __name__ == "__main__":
    main()
