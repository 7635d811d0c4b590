"""What ``lvsd ctl`` asks the daemon over: the standard library's http.client on the control
socket, its blocking calls made in a thread each. Loaded only to send a request (its email
modules cost every other command's start)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import struct
from collections.abc import Callable
from pathlib import Path

ANSWER_ERRORS = (http.client.HTTPException, OSError, ValueError)  # a cut or broken answer


class UnixConnection(http.client.HTTPConnection):
    """http.client's HTTP/1.1 over the control socket (AF_UNIX) instead of TCP."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("lvsd")
        self.path = path
        self.connect_timeout = timeout
        self.unix_socket: socket.socket | None = None

    def connect(self) -> None:
        """Connect, waiting at most ``connect_timeout`` for room in lvsd's accept backlog. A unix
        socket in timeout mode would not wait (EAGAIN at once): a blocking one with a send
        timeout does, then fails with EAGAIN."""
        self.unix_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                    struct.pack("ll", int(self.connect_timeout),
                                                int(self.connect_timeout % 1 * 1e6)))
        try:
            self.unix_socket.connect(str(self.path))
        except BlockingIOError:
            raise TimeoutError from None
        self.unix_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bytes(16))
        self.sock = self.unix_socket

    def ask(self, method: str, url: str, payload: bytes | None,
            headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send the request, read the answer's status and headers."""
        self.request(method, url, payload, headers)
        response = self.getresponse()
        if response.msg.defects:  # a head cut or broken after the status line
            raise http.client.HTTPException(f"a broken header: {response.msg.defects[0]!r}")
        return response

    def stop(self, response: http.client.HTTPResponse | None) -> None:
        """Close, unblocking first a thread still reading the answer: a shut-down socket
        reads an end (closing it, or the response, would not wake a blocked read)."""
        if self.unix_socket is not None:
            with contextlib.suppress(OSError):
                self.unix_socket.shutdown(socket.SHUT_RDWR)
            self.unix_socket.close()
        if response is not None:
            response.close()
        self.close()


class Answer:
    """One HTTP/1.1 response from the control socket: ``status``, then its body, read as it
    comes: ``content`` (``readline()``, or ``async for line in content``), or ``text()``.
    Each read is one call of http.client in a thread."""

    def __init__(self, response: http.client.HTTPResponse,
                 closed: Callable[[BaseException], Exception]) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.content = self
        self._response = response
        self._closed = closed
        self._buffer = b""

    async def _read(self, read: Callable[[], bytes]) -> bytes:
        try:
            return await asyncio.to_thread(read)
        except ANSWER_ERRORS as exc:
            raise self._closed(exc) from None

    def _line(self) -> bytes:
        """The next line, in a thread. On ``read1``: http.client's ``readline`` ends a cut or
        broken chunked body quietly (its ``peek`` ignores a bad chunk), ``read1`` raises."""
        while b"\n" not in self._buffer:
            piece = self._response.read1(65536)
            if not piece:
                if self._response.length:  # the end came before the Content-Length did
                    raise http.client.IncompleteRead(self._buffer, self._response.length)
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += piece
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest + self._response.read()

    async def readline(self) -> bytes:
        """The next line with its b"\\n", what is left at the end, or b"" after it."""
        return await self._read(self._line)

    def __aiter__(self) -> Answer:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def read(self) -> bytes:
        return await self._read(self._rest)

    async def text(self) -> str:
        return (await self.read()).decode("utf-8", errors="replace")
