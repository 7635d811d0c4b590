"""The IPVS codec and channel on any machine: golden bytes captured from a real kernel, and a
scripted socket for everything the kernel should never answer.

``golden/ipvs-6.1.json`` is what ``golden/capture.py`` recorded in the VM (Debian's 6.1 kernel):
every datagram lvsd sent and received per scenario of ``golden/ipvs_scenarios.py``. Replayed
through the real ``NetlinkIpvs``, each request must be byte for byte what the kernel got, and
each reply must decode to the model objects and errors the scenario expects.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import cache
from ipaddress import ip_address
from typing import Any

import pytest

from lvsd.errors import IpvsError, IpvsUnavailable
from lvsd.ipvs import codec
from lvsd.ipvs.abi import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLMSG_DONE,
    NLMSG_ERROR,
    Cmd,
    CmdAttr,
    CtrlAttr,
    DaemonAttr,
    DestAttr,
    ExtAck,
    SvcAttr,
)
from lvsd.ipvs.backend import KernelInfo
from lvsd.ipvs.channel import WINDOW, Channel, Outcome, message, messages
from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    DestKey,
    EditDest,
    EditService,
    Family,
    Forward,
    Op,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    SetTimeouts,
    StartSyncDaemon,
    SyncDaemon,
    SyncState,
    Table,
    Timeouts,
    VirtualService,
)
from tests.unit.golden.ipvs_scenarios import (
    COUNTED,
    COUNTED_DATAGRAMS,
    DNS6,
    EDITED_DEST4,
    EDITED_DEST6,
    EDITED_DNS6,
    EDITED_WEB,
    GOLDEN,
    MALFORMED_TIMEOUT,
    REFUSED_OPS,
    SCENARIOS,
    SERVICES,
    SYNC_BACKUP,
    SYNC_MASTER,
    SYNC_REFUSED,
    TIMEOUTS,
    WEB,
    WINDOW_OPS,
    Scenario,
    dest,
)

Event = tuple[str, bytes]
ANSWER_TIMEOUT = 0.2  # the scripted socket answers at once or never


@cache
def recorded() -> dict[str, list[Event]]:
    golden = json.loads(GOLDEN.read_text())
    return {name: [(kind, bytes.fromhex(data)) for kind, data in events]
            for name, events in golden["scenarios"].items()}


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


class ScriptedSocket(socket.socket):
    """Stands in for the kernel's netlink socket: ``respond`` gives, for each datagram sent,
    what the following receives return (a datagram, or an exception to raise)."""

    def __init__(self, respond: Callable[[bytes], Sequence[bytes | BaseException]]) -> None:
        mine, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        super().__init__(mine.family, mine.type, mine.proto, fileno=mine.detach())
        self.setblocking(False)
        self.respond = respond
        self.sent: list[bytes] = []
        self.answers: deque[bytes | BaseException] = deque()

    def send(self, data: Any, flags: int = 0) -> int:
        self.sent.append(bytes(data))
        self.answers.extend(self.respond(bytes(data)))
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.answers:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")  # the loop then waits
        answer = self.answers.popleft()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        self._peer.close()
        super().close()


class Replay:
    """Answers each request with what the kernel answered in a recording, after checking that
    the request is byte for byte the one recorded."""

    def __init__(self, events: Sequence[Event],
                 mutate: Callable[[int, bytes], bytes | BaseException] | None = None) -> None:
        self.events = list(events)
        self.position = 0
        self.received = 0
        self.mutate = mutate or (lambda index, data: data)

    def __call__(self, data: bytes) -> list[bytes | BaseException]:
        kind, expected = self.events[self.position]
        assert kind == "sent", f"request {data.hex()} where the recording has a {kind}"
        assert data.hex() == expected.hex(), describe_difference(data, expected)
        self.position += 1
        answers: list[bytes | BaseException] = []
        while self.position < len(self.events) and self.events[self.position][0] == "received":
            answers.append(self.mutate(self.received, self.events[self.position][1]))
            self.received += 1
            self.position += 1
        return answers

    @property
    def finished(self) -> bool:
        return self.position == len(self.events)


def describe_difference(data: bytes, expected: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b),
              min(len(data), len(expected)))
    return (f"request differs from the kernel's recording at byte {at} "
            f"(lengths {len(data)}/{len(expected)}): {data[at:at + 16].hex()} vs "
            f"{expected[at:at + 16].hex()}")


class Sockets:
    """A socket factory for ``NetlinkIpvs`` that hands out scripted sockets."""

    def __init__(self, *responders: Callable[[bytes], Sequence[bytes | BaseException]]) -> None:
        self.responders = deque(responders)
        self.opened: list[ScriptedSocket] = []

    def __call__(self) -> socket.socket:
        sock = ScriptedSocket(self.responders.popleft())
        self.opened.append(sock)
        return sock


def replaying(name: str, mutate: Callable[[int, bytes], bytes | BaseException] | None = None
              ) -> tuple[NetlinkIpvs, Replay]:
    replay = Replay(recorded()[name], mutate)
    return NetlinkIpvs(socket_factory=Sockets(replay), answer_timeout=ANSWER_TIMEOUT), replay


async def replayed(name: str) -> Any:
    """What the backend returns for scenario ``name`` replayed against its recording."""
    ipvs, replay = replaying(name)
    step = scenario(name)
    try:
        match step.call:
            case "apply":
                result: Any = await ipvs.apply(step.ops)
            case "dump":
                result = await ipvs.dump()
            case "timeouts":
                result = await ipvs.timeouts()
            case "info":
                result = await ipvs.info()
            case "sync":
                result = await ipvs.apply_sync(step.sync_ops)
            case "daemons":
                result = await ipvs.daemons()
            case "raw":
                raise AssertionError("a raw scenario is replayed through a Channel")
    finally:
        await ipvs.close()
    assert replay.finished, f"{name}: the backend sent fewer requests than recorded"
    return result


# --- golden bytes: requests ---------------------------------------------------------------------


def sent_messages(name: str) -> list[tuple[int, int, bytes]]:
    """(flags, command, attributes) of every IPVS message sent in scenario ``name``."""
    found = []
    for kind, data in recorded()[name]:
        if kind != "sent":
            continue
        for msg_type, flags, _, start, end in messages(data):
            if msg_type != GENL_ID_CTRL:
                found.append((flags, data[start], data[start + 4:end]))
    return found


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.call == "apply"])
def test_each_request_is_the_bytes_the_kernel_accepted(name: str) -> None:
    ops = scenario(name).ops
    sent = sent_messages(name)
    assert len(sent) == len(ops)
    for op, (_, command, attributes) in zip(ops, sent, strict=True):
        assert codec.request(op) == (command, attributes), op
    # Pipelined: only the window's last request asks for an acknowledgement.
    assert [bool(flags & NLM_F_ACK) for flags, _, _ in sent] == [False] * (len(ops) - 1) + [True]


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.call == "sync"])
def test_each_sync_daemon_request_is_the_bytes_the_kernel_got(name: str) -> None:
    ops = scenario(name).sync_ops
    sent = sent_messages(name)
    assert [(command, attributes) for _, command, attributes in sent] == [
        codec.sync_request(op) for op in ops]
    assert all(flags & NLM_F_ACK for flags, _, _ in sent)  # one at a time, each acknowledged


def test_the_dest_packer_writes_what_the_attribute_table_encodes() -> None:
    for vs in SERVICES:
        for d in vs.dests:
            values = dict(zip(codec.DEST_REQUEST_ATTRS, codec.dest_values(d), strict=True))
            generic = codec.encode_attr(CmdAttr.DEST, codec.encode_nest(codec.DEST, values),
                                        nested=True)
            assert codec.dest_nest(d) == generic


# --- golden bytes: replies ----------------------------------------------------------------------


async def test_replayed_writes_succeed() -> None:
    for name in ("add services", "add destinations", "set timeouts", "edit", "delete"):
        assert await replayed(name) == [], name


async def test_replayed_timeouts_and_info() -> None:
    assert await replayed("get timeouts") == TIMEOUTS
    assert await replayed("info") == KernelInfo("1.2.1", 4096)


async def test_a_replayed_dump_is_the_table_that_was_programmed_with_its_counters() -> None:
    table = await replayed("dump with counters")

    assert table == Table(SERVICES, TIMEOUTS)
    counted = table.by_key()[COUNTED]
    # Four one-byte datagrams of 29 bytes on the wire (IPv4 + UDP headers), one per connection.
    assert counted.service.stats == ServiceStats(
        conns=COUNTED_DATAGRAMS, inpkts=COUNTED_DATAGRAMS, outpkts=0,
        inbytes=29 * COUNTED_DATAGRAMS, outbytes=0,
        cps=counted.service.stats.cps, inpps=counted.service.stats.inpps,
        outpps=0, inbps=counted.service.stats.inbps, outbps=0)
    for d in counted.dests:
        assert d.stats.traffic.conns == d.stats.active + d.stats.inactive == 2
        assert d.stats.traffic.inbytes == 58
    idle = table.by_key()[WEB]
    assert all(d.stats.traffic == ServiceStats() for d in idle.dests)


async def test_a_replayed_dump_after_edits_and_deletes() -> None:
    table = await replayed("dump after edits and deletes")

    web = SERVICES[0].dests
    dns = SERVICES[1].dests
    assert table == Table((
        VirtualService(EDITED_WEB, (EDITED_DEST4, web[1], web[2], web[3],
                                    dest("198.51.100.43", 80))),
        VirtualService(EDITED_DNS6, (dns[0], EDITED_DEST6)),
    ), TIMEOUTS)


async def test_replayed_sync_daemons_start_and_dump_as_the_kernel_runs_them() -> None:
    assert await replayed("start sync daemons") == []
    # The kernel reports the size it chose for a daemon started without one (MTU - 28).
    assert await replayed("get sync daemons") == (SYNC_MASTER, replace(SYNC_BACKUP, maxlen=1472))
    assert await replayed("stop sync daemons") == []
    assert await replayed("get sync daemons after stop") == ()


async def test_replayed_sync_daemon_refusals_are_typed_and_named_by_their_op() -> None:
    errors = await replayed("sync daemon refusals")

    assert [(e.name, e.errno) for e in errors] == [
        ("start_sync_daemon", errno.EEXIST), ("stop_sync_daemon", errno.ESRCH),
        ("start_sync_daemon", errno.ENODEV)]
    assert [e.target for e in errors] == [SYNC_REFUSED[0].target, SYNC_REFUSED[2].target,
                                          SYNC_REFUSED[3].target]
    assert "running already" in errors[0].reason
    assert "nosuch0" in errors[2].reason


async def test_in_a_replayed_window_the_third_of_five_failing_is_reported_against_it() -> None:
    errors = await replayed("window whose third request fails")

    assert [(e.op, e.errno) for e in errors] == [(WINDOW_OPS[2], errno.EEXIST)]
    assert str(errors[0]) == ("add service tcp:192.0.2.1:80: virtual service already exists "
                              "(errno 17)")


async def test_replayed_refusals_are_typed_and_each_names_its_op() -> None:
    errors = await replayed("refusals")

    assert [(e.op, e.errno) for e in errors] == list(zip(REFUSED_OPS, [
        errno.EEXIST, errno.ENOENT, errno.ESRCH, errno.ENOENT, errno.ERANGE, errno.ESRCH],
        strict=True))
    assert [e.name for e in errors] == ["add_service", "add_service", "edit_service",
                                        "delete_dest", "add_dest", "add_dest"]
    assert "scheduler 'nosuch' not found" in str(errors[1])
    assert "upper threshold is lower than lower threshold" in str(errors[4])


async def test_an_extended_ack_names_the_offending_attribute() -> None:
    replay = Replay(recorded()["malformed request"])
    channel = await Channel.open(ScriptedSocket(replay), ANSWER_TIMEOUT)
    try:
        outcomes = await channel.execute([MALFORMED_TIMEOUT])
    finally:
        channel.close()

    assert outcomes == [Outcome(errno.ERANGE, "Attribute failed policy validation at tcp "
                                              "timeout")]
    assert replay.finished


def dest_replies() -> Iterator[tuple[bytes, int, int]]:
    """Every destination message the kernel sent in the recordings."""
    for events in recorded().values():
        for kind, data in events:
            if kind != "received":
                continue
            for msg_type, _, _, start, end in messages(data):
                if msg_type not in (NLMSG_ERROR, NLMSG_DONE, GENL_ID_CTRL) \
                        and data[start] == Cmd.NEW_DEST:
                    yield data, start + 4, end


def test_the_learnt_destination_layout_decodes_as_the_attribute_walk_does() -> None:
    replies = list(dest_replies())
    layout = codec.DestLayout(*replies[0])
    assert len(replies) > 20
    fast = layout.decode_all(replies, Family.INET)
    for reply, decoded in zip(replies, fast, strict=True):
        walked = codec.decode_dest(*reply, Family.INET)
        assert layout.fits(*reply)
        assert decoded == walked and decoded.stats == walked.stats


# --- what the kernel should never answer ---------------------------------------------------------

FAMILY = 0x2A
_ERRHDR = struct.Struct("=IHHII")


def header_of(request: bytes) -> bytes:
    return request[:16]


def reply(seq: int, cmd: int, attributes: bytes, msg_type: int = FAMILY) -> bytes:
    return message(msg_type, 0, seq, cmd, attributes)


def ack(request_header: bytes, code: int = 0, tlvs: bytes = b"") -> bytes:
    seq = struct.unpack_from("=I", request_header, 8)[0]
    flags = NLM_F_CAPPED | (NLM_F_ACK_TLVS if tlvs else 0)
    body = struct.pack("=i", -code) + request_header + tlvs
    return _ERRHDR.pack(16 + len(body), NLMSG_ERROR, flags, seq, 0) + body


def done(seq: int) -> bytes:
    return _ERRHDR.pack(20, NLMSG_DONE, 0, seq, 0) + struct.pack("=i", 0)


def requests_in(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(sequence, flags, command, header) of every message of a sent datagram."""
    return [(seq, flags, data[start], data[start - 16:start])
            for _, flags, seq, start, _ in messages(data)]


def family_answer(data: bytes) -> list[bytes | BaseException]:
    seq, _, cmd, hdr = requests_in(data)[0]
    assert cmd == CTRL_CMD_GETFAMILY
    family_id = codec.encode_attr(CtrlAttr.FAMILY_ID, struct.pack("=H", FAMILY))
    return [reply(seq, 1, family_id, GENL_ID_CTRL), ack(hdr)]


class Kernel:
    """A scripted kernel: resolves the family, acknowledges writes (or fails chosen sequence
    numbers), and answers reads with ``reads(request header, command)``."""

    def __init__(self, fail: Callable[[int], int] = lambda seq: 0,
                 reads: Callable[[bytes, int], list[bytes | BaseException]] | None = None,
                 writes: Callable[[bytes], list[bytes | BaseException]] | None = None) -> None:
        self.fail = fail
        self.reads = reads or (lambda hdr, cmd: [])
        self.writes = writes
        self.windows: list[int] = []

    def __call__(self, data: bytes) -> list[bytes | BaseException]:
        found = requests_in(data)
        if struct.unpack_from("=H", data, 4)[0] == GENL_ID_CTRL:
            return family_answer(data)
        if found[0][2] in (Cmd.GET_CONFIG, Cmd.GET_SERVICE, Cmd.GET_DEST, Cmd.GET_INFO):
            return self.reads(found[0][3], found[0][2])
        if self.writes is not None:
            return self.writes(data)
        self.windows.append(len(found))
        answers: list[bytes | BaseException] = []
        for seq, flags, _, hdr in found:
            code = self.fail(seq)
            if code or flags & NLM_F_ACK:
                answers.append(ack(hdr, code))
        return answers


def backend(*responders: Callable[[bytes], Sequence[bytes | BaseException]]
            ) -> tuple[NetlinkIpvs, Sockets]:
    sockets = Sockets(*responders)
    return NetlinkIpvs(socket_factory=sockets, answer_timeout=ANSWER_TIMEOUT), sockets


KEY = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)


def many_dests(count: int) -> list[Op]:
    return [AddDest(KEY, dest(f"198.51.{100 + i // 250}.{1 + i % 250}", 80))
            for i in range(count)]


async def test_errors_in_many_windows_are_each_attributed_to_their_own_op() -> None:
    ops = many_dests(2 * WINDOW + 10)
    # Sequence 1 resolved the family; the ops are 2.. in order.
    failing = {2: errno.EEXIST, 2 + WINDOW - 1: errno.ENOENT, 2 + WINDOW: errno.ESRCH,
               2 + 2 * WINDOW + 3: errno.EINVAL}
    kernel = Kernel(fail=lambda seq: failing.get(seq, 0))
    ipvs, _ = backend(kernel)

    errors = await ipvs.apply(ops)

    assert kernel.windows == [WINDOW, WINDOW, 10]
    assert [(e.op, e.errno) for e in errors] == [(ops[seq - 2], code)
                                                 for seq, code in sorted(failing.items())]


async def test_answers_for_other_requests_are_skipped() -> None:
    ops = many_dests(5)

    def writes(data: bytes) -> list[bytes | BaseException]:
        found = requests_in(data)
        first_header = found[0][3]
        stale = ack(first_header[:8] + struct.pack("=I", 999) + first_header[12:], errno.EEXIST)
        foreign = reply(found[2][0] + 100, Cmd.NEW_SERVICE, b"")
        return [stale + foreign, ack(found[2][3], errno.EEXIST) + ack(found[-1][3])]

    ipvs, sockets = backend(Kernel(writes=writes), Kernel())

    errors = await ipvs.apply(ops)

    assert [(e.op, e.errno) for e in errors] == [(ops[2], errno.EEXIST)]
    assert [(e.op, e.errno) for e in await ipvs.apply(ops)] == [(ops[2], errno.EEXIST)]
    assert len(sockets.opened) == 1  # the channel stayed in step


def garbled_cases() -> list[tuple[str, Callable[[bytes], bytes]]]:
    return [
        ("a length beyond the datagram", lambda d: d[:0] + struct.pack("=I", len(d) + 64) + d[4:]),
        ("a length below a header", lambda d: struct.pack("=I", 8) + d[4:]),
        ("cut short", lambda d: d[: len(d) // 2 + 3]),
        ("stray bytes", lambda d: d + b"\x01\x02\x03"),
        ("an error without its code", lambda d: _ERRHDR.pack(18, NLMSG_ERROR, 0,
                                                              *struct.unpack_from("=II", d, 8))
         + b"\0\0"),
    ]


@pytest.mark.parametrize(("case", "garble"), garbled_cases(), ids=[c for c, _ in garbled_cases()])
async def test_a_garbled_write_answer_is_a_typed_error_and_the_channel_reopens(
    case: str, garble: Callable[[bytes], bytes]
) -> None:
    ops = many_dests(3)

    def writes(data: bytes) -> list[bytes | BaseException]:
        return [garble(ack(requests_in(data)[-1][3]))]

    ipvs, sockets = backend(Kernel(writes=writes), Kernel())

    errors = await ipvs.apply(ops)

    assert [(e.op, e.errno) for e in errors] == [(op, errno.EPROTO) for op in ops]
    assert all("outcome unknown: garbled reply" in e.reason for e in errors), errors
    assert await ipvs.apply(ops) == []
    assert len(sockets.opened) == 2


async def dump_fails_then_recovers(mutate: Callable[[int, bytes], bytes | BaseException],
                                   code: int) -> IpvsError:
    """A recorded dump, its received datagrams mutated, fails with ``code``; the next dump on
    the same backend opens a new channel and succeeds."""
    events = recorded()["dump after edits and deletes"]
    ipvs = NetlinkIpvs(socket_factory=Sockets(Replay(events, mutate), Replay(events)),
                       answer_timeout=ANSWER_TIMEOUT)
    with pytest.raises(IpvsError) as failed:
        await ipvs.dump()
    assert failed.value.errno == code, failed.value
    assert failed.value.operation == "dump" and failed.value.name == "dump"
    assert len(await ipvs.dump()) == 2
    await ipvs.close()
    return failed.value


def in_received(index: int, change: Callable[[bytes], bytes | BaseException]
                ) -> Callable[[int, bytes], bytes | BaseException]:
    return lambda i, data: change(data) if i == index else data


# The recorded dump's received datagrams: 0 family, 1 its ack, 2 timeouts, 3 their ack,
# 4 services, 5 done, 6 dests of the first service, 7 done, 8 dests of the second, 9 done.
@pytest.mark.parametrize(("case", "garble"), garbled_cases(), ids=[c for c, _ in garbled_cases()])
async def test_a_garbled_dump_is_a_typed_error_and_the_next_dump_works(
    case: str, garble: Callable[[bytes], bytes]
) -> None:
    error = await dump_fails_then_recovers(in_received(4, garble), errno.EPROTO)
    assert "garbled reply" in error.reason


def first_attribute_of_nest(data: bytes, nest_id: int) -> int:
    """The offset of the first attribute inside the first ``nest_id`` nest of a reply."""
    start = 16 + 4
    spans = codec.walk(data, start, struct.unpack_from("=I", data)[0], "test")
    return spans[nest_id][0]


async def test_a_truncated_attribute_in_a_reply_is_a_typed_error() -> None:
    def truncate(data: bytes) -> bytes:
        at = first_attribute_of_nest(data, CmdAttr.SERVICE)
        return data[:at] + struct.pack("=H", 200) + data[at + 2:]  # runs past its nest

    error = await dump_fails_then_recovers(in_received(4, truncate), errno.EPROTO)
    assert "unreadable reply from the kernel" in error.reason


async def test_an_attribute_of_the_wrong_size_is_a_typed_error() -> None:
    def shrink_family(data: bytes) -> bytes:
        at = first_attribute_of_nest(data, CmdAttr.SERVICE)
        assert struct.unpack_from("=HH", data, at) == (6, SvcAttr.AF)
        return data[:at] + struct.pack("=HH", 5, SvcAttr.AF) + data[at + 4:]

    error = await dump_fails_then_recovers(in_received(4, shrink_family), errno.EPROTO)
    assert "af: 1 bytes where a u16 has 2" in error.reason


async def test_a_value_the_model_does_not_know_is_a_typed_error() -> None:
    def unknown_protocol(data: bytes) -> bytes:
        at = first_attribute_of_nest(data, CmdAttr.SERVICE) + 8
        assert struct.unpack_from("=HH", data, at) == (6, SvcAttr.PROTOCOL)
        return data[:at + 4] + struct.pack("=H", 99) + data[at + 6:]

    error = await dump_fails_then_recovers(in_received(4, unknown_protocol), errno.EPROTO)
    assert "unknown protocol 99" in error.reason


async def test_unknown_attributes_are_skipped() -> None:
    extra = codec.encode_attr(0x3FF, b"future!!")

    def add_attribute(data: bytes) -> bytes:
        # A new attribute at the end of every destination nest (and so of every message).
        out = b""
        for msg_type, flags, seq, start, end in messages(data):
            body = data[start:end]
            if msg_type == FAMILY_OF_RECORDING:
                nest_size = struct.unpack_from("=H", body, 4)[0]
                body = (body[:4] + struct.pack("=H", nest_size + len(extra)) + body[6:]
                        + extra)
            out += _ERRHDR.pack(16 + len(body), msg_type, flags, seq, 0)[:16] + body
        return out

    events = recorded()["dump after edits and deletes"]
    plain = await NetlinkIpvs(socket_factory=Sockets(Replay(events))).dump()
    ipvs = NetlinkIpvs(socket_factory=Sockets(Replay(events, lambda i, d: add_attribute(d)
                                                     if i in (6, 8) else d)))
    assert await ipvs.dump() == plain


FAMILY_OF_RECORDING = struct.unpack_from(
    "=H", bytes.fromhex(json.loads(GOLDEN.read_text())["scenarios"]["info"][3][1]), 4)[0]


@pytest.mark.parametrize(("case", "failure", "code"), [
    ("ENOBUFS", OSError(errno.ENOBUFS, "No buffer space available"), errno.ENOBUFS),
    ("a closed socket", b"", errno.EPIPE),
    ("a bad descriptor", OSError(errno.EBADF, "Bad file descriptor"), errno.EBADF),
])
async def test_a_socket_failure_in_a_dump_is_a_typed_error_and_the_next_dump_works(
    case: str, failure: bytes | BaseException, code: int
) -> None:
    await dump_fails_then_recovers(in_received(6, lambda data: failure), code)


async def test_an_interrupted_receive_is_retried() -> None:
    events = recorded()["dump after edits and deletes"]
    replay = Replay(events)
    interrupted = Replay(events)

    def interrupt(data: bytes) -> list[bytes | BaseException]:
        return [InterruptedError(errno.EINTR, "Interrupted system call"), *interrupted(data)]

    reference = await NetlinkIpvs(socket_factory=Sockets(replay)).dump()
    assert await NetlinkIpvs(socket_factory=Sockets(interrupt)).dump() == reference


async def test_replies_with_the_wrong_sequence_number_time_out_as_a_typed_error() -> None:
    def renumber(index: int, data: bytes) -> bytes:
        if index not in (4, 5):  # the service dump and its end
            return data
        out = bytearray(data)
        for *_, start, _end in messages(data):
            out[start - 8:start - 4] = struct.pack("=I", 77)
        return bytes(out)

    error = await dump_fails_then_recovers(renumber, errno.ETIMEDOUT)
    assert "no answer from the kernel" in error.reason


async def test_a_dump_refused_by_the_kernel_is_a_typed_error_on_a_channel_kept() -> None:
    def reads(hdr: bytes, cmd: int) -> list[bytes | BaseException]:
        return [ack(hdr, errno.EINVAL, codec.encode_attr(ExtAck.MSG, b"no way\0"))]

    ipvs, sockets = backend(Kernel(reads=reads))

    with pytest.raises(IpvsError, match=r"dump IPVS table: invalid argument: no way"):
        await ipvs.dump()
    with pytest.raises(IpvsError):
        await ipvs.info()
    assert len(sockets.opened) == 1


async def test_a_write_window_cut_by_enobufs_reports_unknown_then_not_attempted() -> None:
    ops = many_dests(WINDOW + 5)

    def writes(data: bytes) -> list[bytes | BaseException]:
        return [OSError(errno.ENOBUFS, "No buffer space available")]

    ipvs, sockets = backend(Kernel(writes=writes), Kernel())

    errors = await ipvs.apply(ops)

    assert [e.errno for e in errors] == [errno.ENOBUFS] * WINDOW + [errno.ECANCELED] * 5
    assert "outcome unknown" in errors[0].reason
    assert "not attempted" in errors[-1].reason
    assert await ipvs.apply(ops) == []
    assert len(sockets.opened) == 2


async def test_a_kernel_without_ipvs_makes_the_backend_unavailable() -> None:
    def no_family(data: bytes) -> list[bytes | BaseException]:
        return [ack(requests_in(data)[0][3], errno.ENOENT)]

    ipvs, _ = backend(no_family)
    with pytest.raises(IpvsUnavailable, match="modprobe ip_vs"):
        await ipvs.dump()


async def test_a_socket_that_cannot_be_opened_makes_the_backend_unavailable() -> None:
    def refuse() -> socket.socket:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    with pytest.raises(IpvsUnavailable, match="cannot open a netlink socket"):
        await NetlinkIpvs(socket_factory=refuse).info()


V6 = ip_address("2001:db8::1")


@pytest.mark.parametrize(("op", "why"), [
    (AddService(Service(ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 70000), "rr")),
     "port 70000 is out of range 0..65535"),
    (AddService(Service(ServiceKey(Family.INET, Protocol.TCP, V6, 80), "rr")),
     "address 2001:db8::1 is not of family INET"),
    (AddService(Service(KEY, "a-scheduler-name-too-long")),
     "scheduler name 'a-scheduler-name-too-long' is longer than the kernel's 15 characters"),
    (AddService(Service(KEY, "rr", pe_name="sip-with-a-long-name")),
     "persistence engine name 'sip-with-a-long-name' is longer"),
    (AddService(Service(KEY, "rr", pe_name="s\0p")), "has a NUL"),
    (AddService(Service(KEY, "rr", persistence=Persistence(1 << 32))),
     "persistence timeout 4294967296 s is above 2678400 s"),
    (AddService(Service(ServiceKey.virtual(Protocol.TCP, V6, 80), "rr",
                        persistence=Persistence(60, 129))),
     "IPv6 persistence prefix 129 is out of range 1..128"),
    (EditService(Service(ServiceKey.mark(1 << 32), "rr")),
     "fwmark 4294967296 is out of range 1..4294967295"),
    (DeleteService(ServiceKey.mark(0)), "fwmark 0 is out of range"),
    (AddDest(KEY, replace(dest("198.51.100.1", 80), weight=1 << 32)),
     "weight 4294967296 is out of range 0..65535"),
    (AddDest(KEY, replace(dest("198.51.100.1", 80), weight=70000)),
     "weight 70000 is out of range 0..65535"),
    (EditDest(KEY, replace(dest("198.51.100.1", 80), upper_threshold=-1)),
     "upper threshold -1 is out of range"),
    (DeleteDest(KEY, DestKey(ip_address("198.51.100.1"), 1 << 16)),
     "port 65536 is out of range"),
    (SetTimeouts(Timeouts(1 << 32, 0, 0)), "tcp timeout 4294967296 s is above 2147483 s"),
    (SetTimeouts(Timeouts(0, 0, 3_000_000)), "udp timeout 3000000 s is above"),
])
async def test_unencodable_values_are_refused_before_the_kernel_sees_them(op: Op, why: str
                                                                          ) -> None:
    kernel = Kernel()
    ipvs, _ = backend(kernel)
    fine = AddService(Service(KEY, "rr"))

    errors = await ipvs.apply([op, fine])

    assert len(errors) == 1 and errors[0].op == op and errors[0].errno == errno.EINVAL
    assert errors[0].reason.startswith("cannot be expressed to the kernel: "), errors[0]
    assert why in errors[0].reason
    assert kernel.windows == [1]  # only the encodable op went out


def test_describe_offset_names_nested_attributes() -> None:
    op = AddDest(KEY, dest("198.51.100.1", 80, weight=3))
    cmd, body = codec.request(op)
    request = message(FAMILY, 0, 1, cmd, body)
    service_nest = len(codec.service_key_nest(KEY))
    weight_at = 20 + service_nest + 4 + 20 + 8 + 8  # dest nest header, address, port, method
    assert struct.unpack_from("=HH", request, weight_at) == (8, DestAttr.WEIGHT)

    assert codec.describe_offset(request, weight_at) == "destination weight"
    assert codec.describe_offset(request, 20 + 4) == "service af"
    assert codec.describe_offset(request, 20) == "service"
    assert codec.describe_offset(request, len(request) + 10) == ""


def test_a_forwarding_method_outside_the_model_is_a_decode_error() -> None:
    data, start, end = next(dest_replies())
    nest = codec.walk(data, start, end, "t")[CmdAttr.DEST]
    method = codec.walk(data, *nest, "t")[DestAttr.FWD_METHOD]
    broken = data[:method[0]] + struct.pack("=I", 6) + data[method[1]:]
    with pytest.raises(codec.DecodeError, match="unknown forwarding method 6"):
        codec.decode_dest(broken, start, end, Family.INET)
    layout = codec.DestLayout(data, start, end)
    assert layout.fits(broken, start, end)
    with pytest.raises(codec.DecodeError, match="unknown forwarding method 6"):
        layout.decode_all([(broken, start, end)], Family.INET)


def test_forwarding_flags_above_the_method_bits_are_ignored() -> None:
    data, start, end = next(dest_replies())
    nest = codec.walk(data, start, end, "t")[CmdAttr.DEST]
    method = codec.walk(data, *nest, "t")[DestAttr.FWD_METHOD]
    value = struct.unpack_from("=I", data, method[0])[0]
    flagged = data[:method[0]] + struct.pack("=I", value | 0x100) + data[method[1]:]
    assert codec.decode_dest(flagged, start, end, Family.INET).forward is Forward(value)


def test_every_recorded_service_decodes() -> None:
    data = recorded()["dump with counters"]
    services = [codec.decode_service(d, s + 4, e)
                for kind, d in data if kind == "received"
                for t, _, _, s, e in messages(d) if t == FAMILY_OF_RECORDING
                and d[s] == Cmd.NEW_SERVICE]
    assert {s.key for s in services} == {vs.key for vs in SERVICES}
    assert {s.key: s for s in services}[DNS6] == SERVICES[1].service


def test_the_service_and_dest_tables_match_the_kernel_header() -> None:
    # ip_vs.h numbers every attribute from 1; a table lists them in that order, once each.
    for nest in (codec.SERVICE, codec.DEST, codec.STATS, codec.COMMAND, codec.INFO):
        ids = [attr.id for attr in nest.attrs]
        assert ids == sorted(set(ids)), nest.name
    assert [a.name for a in codec.STATS.attrs][:2] == ["conns", "inpkts"]


@pytest.mark.parametrize(("daemon", "why"), [
    (SyncDaemon(SyncState.MASTER, "a-very-long-name0"), "interface"),
    (SyncDaemon(SyncState.MASTER, ""), "interface"),
    (SyncDaemon(SyncState.MASTER, "eth0", 256), "syncid"),
    (SyncDaemon(SyncState.MASTER, "eth0", group=ip_address("192.0.2.1")), "not a multicast"),
    (SyncDaemon(SyncState.MASTER, "eth0", ttl=0), "ttl"),
    (SyncDaemon(SyncState.MASTER, "eth0", maxlen=70000), "maxlen"),
])
async def test_a_sync_daemon_the_wire_cannot_carry_is_refused_before_the_kernel_sees_it(
        daemon: SyncDaemon, why: str) -> None:
    sockets = Sockets(lambda data: [])
    ipvs = NetlinkIpvs(socket_factory=sockets, answer_timeout=ANSWER_TIMEOUT)
    (error,) = await ipvs.apply_sync([StartSyncDaemon(daemon)])
    assert (error.name, error.errno) == ("start_sync_daemon", errno.EINVAL)
    assert why in error.reason
    assert all(not sock.sent for sock in sockets.opened)  # nothing went to the kernel


def test_a_daemon_reply_without_its_state_is_a_decode_error() -> None:
    body = codec.encode_attr(CmdAttr.DAEMON, codec.encode_nest(
        codec.DAEMON, {DaemonAttr.MCAST_IFN: "eth0", DaemonAttr.SYNC_ID: 1}), nested=True)
    with pytest.raises(codec.DecodeError, match="sync daemon without its state"):
        codec.decode_daemon(body, 0, len(body))
