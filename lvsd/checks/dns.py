"""DNS check: one query over UDP (or TCP); the reply has the expected rcode and, when
``expect_answer`` is given, contains every listed record of the queried type.

dnspython builds and parses the messages; the exchange runs on asyncio transports so that the
DR path (SO_MARK, source address) applies to DNS probes as to the others. dnspython is imported
where it is used: a daemon without a DNS check never loads it (it costs seconds of start-up
under emulation).
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, cast

from pydantic import field_validator, model_validator

from lvsd.checks.base import (
    CheckSpec,
    Flag,
    Prober,
    Text,
    close_with_reset,
    open_stream,
    os_error_reason,
    set_stage,
)
from lvsd.checks.target import ProbeTarget
from lvsd.probe import ProbeResult

if TYPE_CHECKING:
    import dns.rdata

_MAX_TCP_MESSAGE = 65535


def _known_word(value: str, parse: Callable[[str], object], what: str) -> str:
    """``value`` upper-cased if dnspython knows it, else a validation error naming ``what``."""
    import dns.exception

    try:
        parse(value)
    except (dns.exception.DNSException, ValueError):
        raise ValueError(f"unknown {what} {value!r}") from None
    return value.upper()


class DnsCheck(CheckSpec):
    type: Literal["dns"] = "dns"
    query_name: Text
    query_type: Text = "A"
    expect_rcode: Text = "NOERROR"
    expect_answer: tuple[Text, ...] = ()
    transport: Literal["udp", "tcp"] = "udp"
    recursion_desired: Flag = True

    @field_validator("query_name")
    @classmethod
    def _name_parses(cls, value: str) -> str:
        import dns.exception
        import dns.name

        try:
            dns.name.from_text(value)
        except (dns.exception.DNSException, ValueError) as exc:
            raise ValueError(f"bad query_name {value!r}: {exc}") from None
        return value

    @field_validator("query_type")
    @classmethod
    def _type_parses(cls, value: str) -> str:
        import dns.rdatatype

        return _known_word(value, dns.rdatatype.from_text, "query_type")

    @field_validator("expect_rcode")
    @classmethod
    def _rcode_parses(cls, value: str) -> str:
        import dns.rcode

        return _known_word(value, dns.rcode.from_text, "rcode")

    @model_validator(mode="after")
    def _answers_parse(self) -> DnsCheck:
        self.expected_rdata()
        return self

    def expected_rdata(self) -> frozenset[dns.rdata.Rdata]:
        import dns.exception
        import dns.rdata
        import dns.rdataclass
        import dns.rdatatype

        rdtype = dns.rdatatype.from_text(self.query_type)
        try:
            return frozenset(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
                             for text in self.expect_answer)
        except (dns.exception.DNSException, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"expect_answer is not {self.query_type} data: {exc}") from None

    def prober(self) -> Prober:
        return DnsProber(self)


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, query: bytes, done: asyncio.Future[bytes | str]) -> None:
        self.query = query
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.DatagramTransport, transport).sendto(self.query)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.done.done() and data[:2] == self.query[:2]:
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_result(os_error_reason(exc) if isinstance(exc, OSError) else str(exc))


class _TcpExchange(asyncio.Protocol):
    def __init__(self, query: bytes, done: asyncio.Future[bytes | str]) -> None:
        self.query = query
        self.done = done
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(struct.pack("!H", len(self.query)) + self.query)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) >= 2 + length and not self.done.done():
                self.done.set_result(bytes(self.buffer[2:2 + length]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(os_error_reason(exc) if isinstance(exc, OSError)
                                 else "closed before a reply")


class DnsProber(Prober):
    def __init__(self, spec: DnsCheck) -> None:
        import dns.flags
        import dns.message
        import dns.name
        import dns.rcode
        import dns.rdatatype

        self.spec = spec
        self.name = dns.name.from_text(spec.query_name)
        self.rdtype = dns.rdatatype.from_text(spec.query_type)
        self.rcode = dns.rcode.from_text(spec.expect_rcode)
        self.expected = spec.expected_rdata()
        query = dns.message.make_query(self.name, self.rdtype)
        if not spec.recursion_desired:
            query.flags &= ~dns.flags.RD
        self.wire = query.to_wire()  # the message id (first 2 bytes) is replaced per probe

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        query = struct.pack("!H", random.getrandbits(16)) + self.wire[2:]
        done: asyncio.Future[bytes | str] = loop.create_future()
        set_stage("connect")
        transport: asyncio.BaseTransport
        try:
            if self.spec.transport == "tcp":
                transport, _ = await open_stream(lambda: _TcpExchange(query, done), target)
            else:
                transport = await self._open_udp(target, query, done)
        except OSError as exc:
            return ProbeResult(False, os_error_reason(exc), loop.time() - start)
        set_stage("reply")
        try:
            reply = await done
        finally:
            if self.spec.transport == "tcp":
                close_with_reset(transport)
            else:
                transport.close()
        latency = loop.time() - start
        if isinstance(reply, str):
            return ProbeResult(False, reply, latency)
        return ProbeResult(*self.judge(reply), latency)

    async def _open_udp(self, target: ProbeTarget, query: bytes,
                        done: asyncio.Future[bytes | str]) -> asyncio.BaseTransport:
        loop = asyncio.get_running_loop()
        if target.mark or target.source is not None:
            from lvsd.checks.drpath import connected_socket

            sock = await connected_socket(target, stream=False)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpExchange(query, done), sock=sock)
            except BaseException:
                sock.close()
                raise
            return transport
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpExchange(query, done), remote_addr=(str(target.address), target.port))
        return transport

    def judge(self, wire: bytes) -> tuple[bool, str]:
        import dns.exception
        import dns.message
        import dns.rcode

        try:
            reply = dns.message.from_wire(wire)
        except dns.exception.DNSException as exc:
            return False, f"bad reply: {exc}"
        question = reply.question[0] if reply.question else None
        if question is None or question.name != self.name or question.rdtype != self.rdtype:
            return False, "reply to another question"
        rcode = reply.rcode()
        if rcode != self.rcode:
            return False, f"rcode {dns.rcode.to_text(rcode)}"
        if self.expected:
            answers = {rdata for rrset in reply.answer if rrset.rdtype == self.rdtype
                       for rdata in rrset}
            missing = self.expected - answers
            if missing:
                listed = ", ".join(sorted(rdata.to_text() for rdata in missing))
                return False, f"answer lacks {listed}"
        return True, f"rcode {dns.rcode.to_text(rcode)}"
