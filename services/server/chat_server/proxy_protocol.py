"""
chat_server.proxy_protocol
~~~~~~~~~~~~~~~~~~~~~~~~~~

The PROXY protocol (versions 1 and 2), sans-IO: a load balancer in TCP mode
(HAProxy's ``send-proxy`` / ``send-proxy-v2``) opens its connection to the
server with one header naming the client it relays, so the server can throttle,
cap and log by the real client address instead of the balancer's. The facts this
module relies on are restated in docs/PROTOCOL.md §14.

Strict and bounded:

* A header is refused (:exc:`ProxyProtocolError`) as soon as its bytes can no
  longer become a valid one (a v1 line's addresses and ports are checked at its
  CRLF, at most 107 bytes in): a wrong signature or protocol name, a v1 line
  without CRLF within 107 bytes, a field that is not exactly what the grammar says
  (single spaces, addresses of the announced family, ports 0-65535 without
  leading zeros), a v2 version other than 2, an unknown command, family or
  transport, a length shorter than the address block, a TLV that overruns the
  header, a CRC32C TLV that does not match.
* A v2 header longer than :data:`MAX_HEADER_BYTES` is refused from its 16th
  byte on (the length is known there); nothing is buffered beyond a header.
* :class:`HeaderReader` says how many of the bytes it was given belong to the
  header, so an adapter that *peeks* at a socket consumes exactly the header
  and leaves the client's own first byte for what comes next (the TLS /
  protocol sniffing of :mod:`chat_server.gate`).

Who may send a header at all is :class:`TrustedProxies` (``CHAT_TRUSTED_PROXIES``);
:func:`encode_v1` / :func:`encode_v2` build headers (tests, benchmarks).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEADER_BYTES",
    "V1_MAX_BYTES",
    "V2_SIGNATURE",
    "HeaderReader",
    "ProxyCommand",
    "ProxyHeader",
    "ProxyProtocolError",
    "TrustedProxies",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "looks_like_header",
    "parse",
]

#: The first 12 bytes of every v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: A v1 line, CRLF included, is never longer (the spec's worst case: two full
#: IPv6 addresses and two 5-digit ports).
V1_MAX_BYTES = 107
V2_FIXED_BYTES = 16
#: Our bound on a whole v2 header (fixed part, addresses, TLVs). HAProxy's
#: headers in TCP mode are 28 (IPv4) or 52 (IPv6) bytes plus any TLVs it is
#: configured to add (unique id, ALPN, authority, TLS details): far below this.
MAX_HEADER_BYTES = 4096

# TLV types (docs/PROTOCOL.md §14).
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_SSL = 0x20

_V1_LINE = re.compile(
    rb"PROXY (?:(TCP4|TCP6) ([0-9A-Fa-f.:]{2,45}) ([0-9A-Fa-f.:]{2,45})"
    rb" (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})|UNKNOWN(?: [^\r\n]*)?)\r\n"
)
_V2_ADDRESS_BYTES = {0x11: 12, 0x21: 36}  # family+transport we serve -> address block
_V2_ANY_ADDRESS_BYTES = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}


class ProxyProtocolError(Exception):
    """Not a valid PROXY header. ``str(exc)`` is one line and never contains
    the peer's bytes."""


class ProxyCommand(enum.Enum):
    #: The balancer relays a client: the header names it.
    PROXY = "proxy"
    #: The balancer speaks for itself (a health check, or v1 ``UNKNOWN``): the
    #: connection's own endpoints stand.
    LOCAL = "local"


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` / ``destination`` are ``(host, port)``, or
    ``None`` when the header does not name them (LOCAL, v1 UNKNOWN, v2 UNSPEC):
    then the connection's own addresses stand."""

    version: int
    command: ProxyCommand
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes the header took on the wire
    tlvs: tuple[tuple[int, bytes], ...] = field(default=(), repr=False)

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``."""
        return next((value for t, value in self.tlvs if t == kind), None)


# ---------------------------------------------------------------------------- parsing
def looks_like_header(prefix: bytes) -> bool:
    """Whether ``prefix`` (the first bytes a peer sent, at least one) is the
    start of a PROXY header of either version."""
    if not prefix:
        return False
    for signature in (V1_PREFIX, V2_SIGNATURE):
        n = min(len(prefix), len(signature))
        if prefix[:n] == signature[:n]:
            return True
    return False


def _host(text: bytes, version: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> str:
    try:
        address = version(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        family = "IPv4" if version is ipaddress.IPv4Address else "IPv6"
        raise ProxyProtocolError(f"v1 header: not an {family} address") from None
    return str(address)


_V1_PROTOCOLS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
_V1_ADDRESS_CHARS = frozenset(b"0123456789abcdefABCDEF.: ")


def _v1_prefix_possible(buf: bytes) -> bool:
    """Whether an incomplete v1 line can still become valid (signature,
    protocol name, and for TCP4/TCP6 the characters of the address fields)."""
    rest = buf[len(V1_PREFIX):]
    for proto in _V1_PROTOCOLS:
        n = min(len(rest), len(proto))
        if rest[:n] != proto[:n]:
            continue
        if proto == b"UNKNOWN" or len(rest) <= len(proto):
            return True
        tail = rest[len(proto):].rstrip(b"\r")
        return all(c in _V1_ADDRESS_CHARS for c in tail)
    return False


def _parse_v1(buf: bytes) -> ProxyHeader | None:
    end = buf.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if not _v1_prefix_possible(buf):
            raise ProxyProtocolError("v1 header: malformed")
        if len(buf) >= V1_MAX_BYTES:
            raise ProxyProtocolError(f"v1 header: no CRLF within {V1_MAX_BYTES} bytes")
        # A lone LF, or CR followed by something other than LF, can never end well.
        cr = buf.find(b"\r")
        if b"\n" in buf or (0 <= cr < len(buf) - 1):
            raise ProxyProtocolError("v1 header: malformed line end")
        return None
    line = buf[: end + 2]
    m = _V1_LINE.fullmatch(line)
    if m is None:
        raise ProxyProtocolError("v1 header: malformed")
    if m.group(1) is None:  # UNKNOWN
        return ProxyHeader(1, ProxyCommand.LOCAL, None, None, len(line))
    version = ipaddress.IPv4Address if m.group(1) == b"TCP4" else ipaddress.IPv6Address
    ports = [int(m.group(4)), int(m.group(5))]
    if any(p > 65535 for p in ports):
        raise ProxyProtocolError("v1 header: port out of range")
    source = (_host(m.group(2), version), ports[0])
    destination = (_host(m.group(3), version), ports[1])
    return ProxyHeader(1, ProxyCommand.PROXY, source, destination, len(line))


def _iter_tlvs(data: bytes, what: str) -> Iterator[tuple[int, int, bytes]]:
    """(offset, type, value) of each TLV in ``data``, which they must fill exactly."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError(f"v2 header: truncated {what}")
        kind, length = struct.unpack_from("!BH", data, offset)
        if length > len(data) - offset - 3:
            raise ProxyProtocolError(f"v2 header: {what} overruns the header")
        yield offset, kind, data[offset + 3: offset + 3 + length]
        offset += 3 + length


def _check_tlvs(header: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    """The TLVs of ``header`` from byte ``start`` on, checked."""
    tlvs = []
    for offset, kind, value in _iter_tlvs(header[start:], "TLV"):
        if kind == PP2_TYPE_CRC32C:
            if len(value) != 4:
                raise ProxyProtocolError("v2 header: CRC32C TLV is not 4 bytes")
            # The checksum covers the whole header with its own value zeroed.
            at = start + offset + 3
            if crc32c(header[:at] + b"\0\0\0\0" + header[at + 4:]) != struct.unpack("!I", value)[0]:
                raise ProxyProtocolError("v2 header: CRC32C mismatch")
        elif kind == PP2_TYPE_SSL:
            # client (1 byte), verify (4 bytes), then sub-TLVs.
            if len(value) < 5:
                raise ProxyProtocolError("v2 header: truncated SSL TLV")
            for _ in _iter_tlvs(value[5:], "SSL sub-TLV"):
                pass
        tlvs.append((kind, value))
    return tuple(tlvs)


def _parse_v2(buf: bytes, max_bytes: int) -> ProxyHeader | None:
    n = min(len(buf), len(V2_SIGNATURE))
    if buf[:n] != V2_SIGNATURE[:n]:
        raise ProxyProtocolError("v2 header: bad signature")
    if len(buf) > 12 and buf[12] >> 4 != 2:
        raise ProxyProtocolError("v2 header: version is not 2")
    if len(buf) > 12 and buf[12] & 0x0F not in (0, 1):
        raise ProxyProtocolError("v2 header: unknown command")
    if len(buf) < V2_FIXED_BYTES:
        return None
    command = ProxyCommand.LOCAL if buf[12] & 0x0F == 0 else ProxyCommand.PROXY
    family = buf[13]
    (length,) = struct.unpack_from("!H", buf, 14)
    total = V2_FIXED_BYTES + length
    if total > max_bytes:
        raise ProxyProtocolError(f"v2 header: {total} bytes, more than the {max_bytes} accepted")
    if command is ProxyCommand.PROXY and family not in (0x00, *_V2_ADDRESS_BYTES):
        # 0x12/0x22 (UDP) and 0x31/0x32 (Unix sockets) cannot front a chat
        # connection; other values are not defined.
        raise ProxyProtocolError("v2 header: unsupported address family or transport")
    if len(buf) < total:
        return None
    header = bytes(buf[:total])
    if command is ProxyCommand.LOCAL:
        # The receiver uses the real endpoints and discards the address block;
        # TLVs after a block of a known size are still checked (a checksum).
        block = _V2_ANY_ADDRESS_BYTES.get(family)
        tlvs: tuple[tuple[int, bytes], ...] = ()
        if block is not None and length >= block:
            tlvs = _check_tlvs(header, V2_FIXED_BYTES + block)
        return ProxyHeader(2, ProxyCommand.LOCAL, None, None, total, tlvs)
    address_bytes = _V2_ADDRESS_BYTES.get(family, 0)
    if length < address_bytes:
        raise ProxyProtocolError("v2 header: shorter than its address block")
    body = header[V2_FIXED_BYTES:]
    tlvs = _check_tlvs(header, V2_FIXED_BYTES + address_bytes)
    if family == 0x00:
        return ProxyHeader(2, ProxyCommand.PROXY, None, None, total, tlvs)
    size = 4 if family == 0x11 else 16
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size: 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyHeader(2, ProxyCommand.PROXY, (str(src), sport), (str(dst), dport), total, tlvs)


def parse(buf: bytes, *, max_bytes: int = MAX_HEADER_BYTES) -> ProxyHeader | None:
    """The header at the start of ``buf``: ``None`` while it is incomplete but
    can still become valid; :exc:`ProxyProtocolError` as soon as it cannot.
    Bytes after the header are not looked at."""
    if not buf:
        return None
    if buf[:1] == b"P":
        n = min(len(buf), len(V1_PREFIX))
        if buf[:n] != V1_PREFIX[:n]:
            raise ProxyProtocolError("v1 header: bad signature")
        return _parse_v1(bytes(buf[:V1_MAX_BYTES]))
    if buf[:1] == b"\r":
        return _parse_v2(bytes(buf[: max_bytes + 1]), max_bytes)
    raise ProxyProtocolError("no PROXY protocol header")


class HeaderReader:
    """Incremental reading of one header.

    ``feed(data)`` returns how many bytes at the start of ``data`` belong to
    the header: all of them while it is incomplete, exactly the rest of it once
    it completes (then :attr:`header` is set and further bytes are the
    client's). Raises :exc:`ProxyProtocolError`; buffers at most one header.
    """

    def __init__(self, *, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.header: ProxyHeader | None = None

    @property
    def started(self) -> bool:
        """Some bytes of an incomplete header have arrived."""
        return bool(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes held (of an incomplete header)."""
        return len(self._buf)

    def feed(self, data: bytes) -> int:
        if self.header is not None:
            return 0
        before = len(self._buf)
        first = (self._buf or data)[:1]
        limit = V1_MAX_BYTES if first == b"P" else self.max_bytes + 1
        self._buf += data[: limit - before]
        header = parse(bytes(self._buf), max_bytes=self.max_bytes)
        if header is None:
            if len(self._buf) > self.max_bytes:  # cannot happen: parse bounds it
                raise ProxyProtocolError("header too long")
            return len(data)
        self.header = header
        self._buf.clear()
        return header.length - before


# ---------------------------------------------------------------------------- encoding
def encode_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A v1 line; ``source=None`` gives ``PROXY UNKNOWN``."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    src = ipaddress.ip_address(source[0])
    dst_host, dst_port = destination or ("0.0.0.0" if src.version == 4 else "::", 0)
    dst = ipaddress.ip_address(dst_host)
    if src.version != dst.version:
        raise ValueError("source and destination must be of one address family")
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {dst_port}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None, *,
              local: bool = False, tlvs: Iterable[tuple[int, bytes]] = (),
              checksum: bool = False) -> bytes:
    """A v2 header (TCP over IPv4/IPv6, or LOCAL / UNSPEC when ``source`` is
    ``None``), with ``tlvs`` and, if ``checksum``, a CRC32C TLV last."""
    if local or source is None:
        family, addresses = 0x00, b""
    else:
        src = ipaddress.ip_address(source[0])
        dst_host, dst_port = destination or ("0.0.0.0" if src.version == 4 else "::", 0)
        dst = ipaddress.ip_address(dst_host)
        if src.version != dst.version:
            raise ValueError("source and destination must be of one address family")
        family = 0x11 if src.version == 4 else 0x21
        addresses = src.packed + dst.packed + struct.pack("!HH", source[1], dst_port)
    body = addresses + b"".join(struct.pack("!BH", t, len(v)) + v for t, v in tlvs)
    if checksum:
        body += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\0\0\0\0"
    command = 0x20 if local else 0x21
    header = V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body
    if checksum:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header


# ---------------------------------------------------------------------------- CRC32C
def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the v2 checksum TLV uses."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------- trust
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers allowed (and required) to open with a PROXY header:
    ``CHAT_TRUSTED_PROXIES``, comma-separated CIDRs or single addresses.
    Empty: nobody."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Raises :exc:`ValueError` with one line naming the bad entry."""
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=True))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a CIDR block or address ({exc})") from None
        return cls(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedProxies) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({str(self)!r})"

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks)

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False  # a Unix socket peer, or nothing
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
