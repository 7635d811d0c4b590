"""One generic-netlink socket bound to the IPVS family: requests out, answers matched back.

Writes are pipelined: a window of requests goes out in one ``send`` and only the window's last
request asks for an acknowledgement. The kernel handles every request synchronously inside
``send``, in order, answers each failure with an error naming its sequence number, and goes on
with the next request, so one round trip settles a whole window and every error is attributed
to its own request. Dumps run one at a time: the kernel allows one dump in flight per socket.

Nothing the socket yields is trusted. An answer naming another sequence number, or an error
for a request not in flight, is skipped; a datagram that does not parse, a socket error
(ENOBUFS: answers were dropped), a closed socket or an answer that never comes raises
``ChannelBroken`` and leaves the channel unusable (``in_sync`` False): its owner opens a new
one. A refusal by the kernel raises ``KernelError`` and leaves the channel as it was.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lvsd.ipvs.abi import (
    CTRL_CMD_GETFAMILY,
    CTRL_VERSION,
    GENL_HDRLEN,
    GENL_ID_CTRL,
    IPVS_GENL_NAME,
    IPVS_GENL_VERSION,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GENERIC,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    SO_RCVBUFFORCE,
    SOL_NETLINK,
    CtrlAttr,
    ExtAck,
)
from lvsd.ipvs.codec import DecodeError, describe_offset, encode_attr, walk

# Requests per send: every answer of a window must fit the receive buffer at once.
WINDOW = 256
RECEIVE_BUFFER = 4 << 20
RECV_SIZE = 65536  # the kernel fills dump datagrams up to 32 KiB
ANSWER_TIMEOUT = 30.0  # seconds; the kernel answers at once, this only bounds a broken socket

_HEADER = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr
_NLMSGHDR = struct.Struct("=IHHI")  # length, type, flags, sequence number (the port id follows)
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")

Reply = tuple[bytes, int, int]  # a datagram and the [start, end) of one message's attributes


class KernelError(Exception):
    """The kernel refused a request: ``code`` is its errno, ``detail`` its extended ack."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class ChannelBroken(KernelError):
    """The socket failed or spoke nonsense: the channel is out of step and must be reopened."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request of a batch: errno 0 for done."""

    code: int = 0
    detail: str = ""


DONE = Outcome()


def open_socket(netns: str | None) -> socket.socket:
    """A non-blocking generic-netlink socket, inside network namespace ``netns`` if named.

    Raises ``OSError`` when the kernel refuses the socket or its options.
    """
    if netns is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    else:
        from pyroute2 import netns as pyroute2_netns  # costly import: only when a netns is named

        try:
            sock = pyroute2_netns.create_socket(
                netns=netns, family=socket.AF_NETLINK, socket_type=socket.SOCK_RAW,
                proto=NETLINK_GENERIC, flags=0,
            )
        except (RuntimeError, TimeoutError) as exc:
            raise OSError(errno.ENOENT, str(exc)) from exc
    try:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def message(msg_type: int, flags: int, seq: int, cmd: int, body: bytes,
            version: int = IPVS_GENL_VERSION) -> bytes:
    """One generic-netlink request (port id 0: the kernel fills in ours)."""
    return _HEADER.pack(NLMSG_HDRLEN + GENL_HDRLEN + len(body), msg_type, flags, seq, 0, cmd,
                        version, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, sequence, payload start, payload end) of each message in a datagram;
    raises ``ChannelBroken`` on a header that does not fit the datagram."""
    offset = 0
    while offset < len(data):
        if offset + NLMSG_HDRLEN > len(data):
            raise ChannelBroken(errno.EPROTO, f"garbled reply: {len(data) - offset} stray bytes "
                                "after the last message")
        size, kind, flags, seq = _NLMSGHDR.unpack_from(data, offset)
        if size < NLMSG_HDRLEN or offset + size > len(data):
            raise ChannelBroken(errno.EPROTO, f"garbled reply: a message of length {size} in "
                                f"a {len(data)}-byte datagram")
        yield kind, flags, seq, offset + NLMSG_HDRLEN, offset + size
        offset += (size + 3) & ~3


def error_reply(data: bytes, flags: int, start: int, end: int,
                request: bytes | None = None) -> Outcome:
    """The errno (0 for an acknowledgement) and the kernel's extended-ack text, if any.

    ``request``, when known, names the attribute an extended ack points at.
    """
    if end - start < 4:
        raise ChannelBroken(errno.EPROTO, "garbled reply: an error message without its errno")
    code = -_I32.unpack_from(data, start)[0]
    if code < 0:
        raise ChannelBroken(errno.EPROTO, f"garbled reply: error code {-code}")
    if not code or not flags & NLM_F_ACK_TLVS:
        return Outcome(code)
    if start + 4 + NLMSG_HDRLEN > end:
        raise ChannelBroken(errno.EPROTO, "garbled reply: an error without the failed header")
    request_size = NLMSG_HDRLEN if flags & NLM_F_CAPPED else _U32.unpack_from(data, start + 4)[0]
    try:
        tlvs = walk(data, start + 4 + ((request_size + 3) & ~3), end, "extended ack")
    except DecodeError as exc:
        raise ChannelBroken(errno.EPROTO, f"garbled reply: {exc}") from exc
    parts = []
    if ExtAck.MSG in tlvs:
        a, b = tlvs[ExtAck.MSG]
        parts.append(data[a:b].split(b"\0", 1)[0].decode(errors="replace"))
    if ExtAck.OFFS in tlvs and tlvs[ExtAck.OFFS][1] - tlvs[ExtAck.OFFS][0] == 4:
        offset = _U32.unpack_from(data, tlvs[ExtAck.OFFS][0])[0]
        where = describe_offset(request, offset) if request is not None else ""
        parts.append(f"at {where}" if where else f"at byte {offset} of the request")
    return Outcome(code, " ".join(parts))


class Channel:
    """A socket whose family is resolved; callers take turns (their lock, not ours)."""

    def __init__(self, sock: socket.socket, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self._sock = sock
        self._timeout = answer_timeout
        self._seq = 0
        self.family = 0
        # False from the start of an exchange until it settles: an exchange cut short (a
        # cancelled task, a broken socket) can leave a dump running and stale answers queued.
        self.in_sync = True

    @classmethod
    async def open(cls, sock: socket.socket, answer_timeout: float = ANSWER_TIMEOUT) -> Channel:
        """The channel over ``sock`` once the kernel has named the IPVS family's id.

        Raises ``KernelError`` (ENOENT: no IPVS) or ``ChannelBroken``; closes ``sock`` then.
        """
        channel = cls(sock, answer_timeout)
        try:
            data, start, end = await channel.query(
                GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                encode_attr(CtrlAttr.FAMILY_NAME, IPVS_GENL_NAME.encode() + b"\0"),
                version=CTRL_VERSION,
            )
            try:
                found = walk(data, start, end, "family")
            except DecodeError as exc:
                raise ChannelBroken(errno.EPROTO, f"garbled reply: {exc}") from exc
            span = found.get(CtrlAttr.FAMILY_ID)
            if span is None or span[1] - span[0] != 2:
                raise ChannelBroken(errno.EPROTO, "the kernel did not tell the IPVS family id")
            channel.family = _U16.unpack_from(data, span[0])[0]
            return channel
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self.in_sync = False
        self._sock.close()

    def _next_seqs(self, count: int) -> int:
        if self._seq + count >= 1 << 32:
            self._seq = 0
        first = self._seq + 1
        self._seq += count
        return first

    def _broken(self, code: int, detail: str) -> ChannelBroken:
        self.in_sync = False
        return ChannelBroken(code, detail)

    def _send(self, payload: bytes) -> None:
        try:
            sent = self._sock.send(payload)
        except InterruptedError:
            sent = self._sock.send(payload)
        except OSError as exc:
            raise self._broken(exc.errno or errno.EIO, f"send failed: {exc}") from exc
        if sent != len(payload):
            raise self._broken(errno.EMSGSIZE, f"send took {sent} of {len(payload)} bytes")

    async def _recv(self) -> bytes:
        # The kernel answers inside send() and refills a dump inside recv(), so the answer is
        # nearly always queued already: skip the event loop unless the socket is really empty.
        while True:
            try:
                try:
                    data = self._sock.recv(RECV_SIZE)
                except BlockingIOError:
                    data = await asyncio.wait_for(
                        asyncio.get_running_loop().sock_recv(self._sock, RECV_SIZE),
                        self._timeout)
            except InterruptedError:
                continue
            except TimeoutError as exc:
                raise self._broken(errno.ETIMEDOUT, "no answer from the kernel") from exc
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise self._broken(errno.ENOBUFS, "answers were dropped (receive buffer "
                                       "full)") from exc
                raise self._broken(exc.errno or errno.EIO, f"receive failed: {exc}") from exc
            if not data:
                raise self._broken(errno.EPIPE, "the netlink socket was closed")
            return data

    def _parse(self, data: bytes) -> list[tuple[int, int, int, int, int]]:
        try:
            return list(messages(data))
        except ChannelBroken:
            self.in_sync = False
            raise

    async def query(self, msg_type: int, cmd: int, body: bytes = b"",
                    version: int = IPVS_GENL_VERSION) -> Reply:
        """Send one request that has a single reply; return it."""
        self.in_sync = False
        seq = self._next_seqs(1)
        request = message(msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, cmd, body, version)
        self._send(request)
        reply: Reply | None = None
        while True:
            data = await self._recv()
            for kind, flags, mseq, start, end in self._parse(data):
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    outcome = self._outcome(data, flags, start, end, request)
                    self.in_sync = True
                    if outcome.code:
                        raise KernelError(outcome.code, outcome.detail)
                    if reply is None:
                        raise KernelError(errno.EPROTO, "acknowledged without a reply")
                    return reply
                if kind == msg_type:
                    if end - start < GENL_HDRLEN:
                        raise self._broken(errno.EPROTO, "garbled reply: no generic header")
                    reply = (data, start + GENL_HDRLEN, end)

    async def dump(self, cmd: int, body: bytes = b"") -> list[Reply]:
        """Every reply message of a dump."""
        self.in_sync = False
        seq = self._next_seqs(1)
        request = message(self.family, NLM_F_REQUEST | NLM_F_DUMP, seq, cmd, body)
        self._send(request)
        replies: list[Reply] = []
        family = self.family
        while True:
            data = await self._recv()
            for kind, flags, mseq, start, end in self._parse(data):
                if mseq != seq:
                    continue
                if kind == family:
                    if end - start < GENL_HDRLEN:
                        raise self._broken(errno.EPROTO, "garbled reply: no generic header")
                    replies.append((data, start + GENL_HDRLEN, end))
                elif kind in (NLMSG_DONE, NLMSG_ERROR):
                    # A DONE carries an errno too, and its extended ack the same way.
                    outcome = (self._outcome(data, flags, start, end, request)
                               if end - start >= 4 or kind == NLMSG_ERROR else DONE)
                    self.in_sync = True
                    if outcome.code:
                        raise KernelError(outcome.code, outcome.detail)
                    return replies

    def _outcome(self, data: bytes, flags: int, start: int, end: int,
                 request: bytes | None) -> Outcome:
        try:
            return error_reply(data, flags, start, end, request)
        except ChannelBroken:
            self.in_sync = False
            raise

    async def execute(self, requests: Sequence[tuple[int, bytes]]) -> list[Outcome]:
        """Run the requests (command, attributes) in order; return the outcome of each.

        A broken channel does not raise here: the window in flight gets the outcome
        "unknown" (the next dump tells), the rest "not attempted", and ``in_sync`` is False.
        """
        results: list[Outcome] = [DONE] * len(requests)
        for base in range(0, len(requests), WINDOW):
            window = requests[base : base + WINDOW]
            first = self._next_seqs(len(window))
            last = first + len(window) - 1
            family = self.family
            encoded = [message(family, NLM_F_REQUEST, first + i, cmd, body)
                       for i, (cmd, body) in enumerate(window[:-1])]
            encoded.append(message(family, NLM_F_REQUEST | NLM_F_ACK, last, *window[-1]))
            self.in_sync = False
            try:
                self._send(b"".join(encoded))
                settled = False
                while not settled:
                    data = await self._recv()
                    for kind, flags, seq, start, end in self._parse(data):
                        if kind != NLMSG_ERROR or not first <= seq <= last:
                            continue  # a stale answer, or an error for no request of ours
                        outcome = self._outcome(data, flags, start, end, encoded[seq - first])
                        if outcome.code:
                            results[base + seq - first] = outcome
                        if seq == last:
                            settled = True
            except ChannelBroken as exc:
                for i in range(base, base + len(window)):
                    if not results[i].code:
                        results[i] = Outcome(exc.code, f"outcome unknown: {exc.detail}")
                for i in range(base + len(window), len(requests)):
                    results[i] = Outcome(errno.ECANCELED, "not attempted after an earlier "
                                         "failure")
                return results
            self.in_sync = True
            if base + WINDOW < len(requests):
                await asyncio.sleep(0)
        return results
