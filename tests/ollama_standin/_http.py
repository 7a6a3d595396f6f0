"""A minimal HTTP/1.1 server connection over asyncio streams (stdlib only).

Just enough of RFC 9112 for the clients that talk to Ollama (httpx, curl, Go):
keep-alive, ``Content-Length`` and chunked request bodies, ``Expect: 100-continue``,
fixed-length and chunked responses. It also knows when the peer went away in the
middle of a response, which is what lets the stand-in report ``aborted_by_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 413: "Request Entity Too Large", 499: "Client Closed Request",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class BadRequest(Exception):
    """The peer sent bytes that are not a request we can parse; answer 400 and close."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


class HttpConnection:
    """One accepted TCP connection: read requests, write responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self._eof = False
        #: The connection's number in accept order (set by the server).
        self.number = 0

    # -- reading -----------------------------------------------------------------
    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self._reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def _read_line(self, limit: int) -> bytes:
        while (i := self._buf.find(b"\n")) < 0:
            if len(self._buf) > limit:
                raise BadRequest("line too long")
            if not await self._fill():
                raise EOFError
        line = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        return line

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise EOFError
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def read_request(self) -> Request | None:
        """The next request, or None when the peer closed cleanly between requests."""
        try:
            line = await self._read_line(MAX_HEADER_BYTES)
            while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore leading empty lines
                line = await self._read_line(MAX_HEADER_BYTES)
        except EOFError:
            return None
        try:
            method, target, version = line.decode("latin-1").strip().split(" ")
        except ValueError:
            raise BadRequest("bad request line") from None
        if not version.startswith("HTTP/1."):
            raise BadRequest("bad version")
        headers: dict[str, str] = {}
        total = len(line)
        try:
            while True:
                raw = await self._read_line(MAX_HEADER_BYTES)
                total += len(raw)
                if total > MAX_HEADER_BYTES:
                    raise BadRequest("headers too large")
                if raw in (b"\r\n", b"\n"):
                    break
                name, sep, value = raw.decode("latin-1").partition(":")
                if not sep or not name or name != name.strip():
                    raise BadRequest("bad header line")
                key = name.lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
            req = Request(method, target, version, headers)
            if headers.get("expect", "").lower() == "100-continue":
                await self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.body = await self._read_body(headers)
        except EOFError:
            raise BadRequest("truncated request") from None
        return req

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await self._read_line(4096)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size") from None
                if size == 0:
                    while (await self._read_line(MAX_HEADER_BYTES)) not in (b"\r\n", b"\n"):
                        pass  # trailers are ignored
                    return bytes(body)
                body += await self._read_exactly(size)
                await self._read_line(4096)
                if len(body) > MAX_BODY_BYTES:
                    raise BadRequest("body too large")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest("bad content-length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest("bad content-length")
        return await self._read_exactly(length)

    async def wait_peer_gone(self) -> None:
        """Return when the peer closes or resets the connection.

        Run as a task while a response streams: an HTTP/1.1 client sends nothing
        while it waits for an answer, so EOF here means it hung up (a cancel).
        Pipelined bytes, if any, are kept for the next ``read_request``.
        """
        while await self._fill():
            pass

    # -- writing -----------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self._writer.transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Write and drain; raises ConnectionError once the peer is gone."""
        if self.closing:
            raise ConnectionResetError("connection lost")
        self._writer.write(data)
        await self._writer.drain()

    @staticmethod
    def head(status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Date: {formatdate(usegmt=True)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status: int, content_type: str, body: bytes, *,
                   head_only: bool = False, close: bool = False) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        await self.write(self.head(status, headers) + (b"" if head_only else body))

    async def start_chunked(self, status: int, content_type: str) -> None:
        await self.write(self.head(status, [("Content-Type", content_type),
                                            ("Transfer-Encoding", "chunked")]))

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunked(self) -> None:
        await self.write(b"0\r\n\r\n")

    def close(self) -> None:
        """Close with a FIN (what a crashed or restarted server looks like)."""
        with contextlib.suppress(Exception):
            self._writer.close()

    def abort(self) -> None:
        """Close with an RST."""
        with contextlib.suppress(Exception):
            self._writer.transport.abort()
