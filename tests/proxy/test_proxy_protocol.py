"""The PROXY protocol parser (chat_server.proxy_protocol): vectors from the
specification's grammar, hostile input, and properties over any split."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from chat_server.proxy_protocol import (
    MAX_HEADER_BYTES,
    V1_MAX_BYTES,
    V2_SIGNATURE,
    HeaderReader,
    ProxyCommand,
    ProxyProtocolError,
    TrustedProxies,
    crc32c,
    encode_v1,
    encode_v2,
    looks_like_header,
    parse,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------------------- v1 vectors
V1_GOOD = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 5050\r\n", ("192.0.2.7", 56324), ("198.51.100.1", 5050)),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", ("0.0.0.0", 0), ("255.255.255.255", 65535)),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", ("2001:db8::1", 1), ("2001:db8::2", 2)),
    (b"PROXY TCP6 ::ffff:192.0.2.7 ::1 40000 5050\r\n", ("::ffff:c000:207", 40000), ("::1", 5050)),
    # The spec's worst case: 107 bytes exactly.
    (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
     b" 65535 65535\r\n", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
     ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
]


@pytest.mark.parametrize(("line", "source", "destination"), V1_GOOD)
def test_v1_tcp_lines_give_the_client_address(line: bytes, source: tuple[str, int],
                                              destination: tuple[str, int]) -> None:
    header = parse(line + b"HELLO 0\r\n")
    assert header is not None
    assert (header.version, header.command) == (1, ProxyCommand.PROXY)
    assert header.source == source and header.destination == destination
    assert header.length == len(line) <= V1_MAX_BYTES


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n",
                                  b"PROXY UNKNOWN whatever the sender put here\r\n"])
def test_v1_unknown_keeps_the_connection_address(line: bytes) -> None:
    header = parse(line)
    assert header is not None
    assert header.command is ProxyCommand.LOCAL and header.source is None
    assert header.length == len(line)


V1_BAD = {
    "lowercase keyword": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "unknown protocol": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "double space": b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "missing port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "port too big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "leading zero port": b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "signed port": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "IPv6 under TCP4": b"PROXY TCP4 ::1 ::2 1 2\r\n",
    "IPv4 under TCP6": b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "mixed families": b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
    "octet too big": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "leading zero octet": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "bare LF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "CR without LF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    "trailing space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "no CRLF in 107 bytes": b"PROXY UNKNOWN " + b"x" * 200,
    "junk in the address": b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n",
    "non-ASCII digits": "PROXY TCP4 1.2.3.4 5.6.7.8 ١ 2\r\n".encode(),
}


@pytest.mark.parametrize("data", V1_BAD.values(), ids=V1_BAD.keys())
def test_v1_malformed_lines_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v1_line_that_cannot_become_valid_is_refused_before_its_end() -> None:
    # The protocol name and the address characters are checked as they arrive.
    for prefix in (b"PROXY TCP5", b"PROXY TCP4 1.2.3.4 x", b"PROXZ"):
        with pytest.raises(ProxyProtocolError):
            parse(prefix)
    assert parse(b"PROXY TCP4 1.2.3.4 5.6") is None  # may still become valid


# ---------------------------------------------------------------------------- v2 vectors
def _v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def test_v2_proxy_ipv4_and_ipv6() -> None:
    v4 = _v2(0x21, 0x11, bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack("!HH", 56324, 5050))
    header = parse(v4)
    assert header is not None
    assert (header.version, header.command) == (2, ProxyCommand.PROXY)
    assert header.source == ("192.0.2.7", 56324) and header.destination == ("10.0.0.1", 5050)
    assert header.length == 28
    v6 = _v2(0x21, 0x21, ipaddress.ip_address("2001:db8::7").packed
             + ipaddress.ip_address("::1").packed + struct.pack("!HH", 1, 2))
    header = parse(v6)
    assert header is not None and header.source == ("2001:db8::7", 1) and header.length == 52


def test_v2_local_keeps_the_connection_address() -> None:
    # HAProxy's health checks with check-send-proxy: LOCAL, UNSPEC, no addresses.
    header = parse(_v2(0x20, 0x00, b""))
    assert header is not None
    assert header.command is ProxyCommand.LOCAL and header.source is None and header.length == 16
    # LOCAL discards whatever address block follows.
    header = parse(_v2(0x20, 0x11, b"\x01" * 12))
    assert header is not None and header.source is None and header.length == 28


def test_v2_proxy_unspec_keeps_the_connection_address() -> None:
    header = parse(_v2(0x21, 0x00, b""))
    assert header is not None and header.command is ProxyCommand.PROXY and header.source is None


def test_v2_tlvs_are_returned_and_checked() -> None:
    tlvs = [(0x05, b"unique-id-1"), (0x01, b"h2"), (0x04, b""), (0x20, b"\x01" + b"\0" * 4
                                                               + b"\x21\x00\x07TLSv1.3")]
    data = encode_v2(("192.0.2.7", 40000), ("10.0.0.1", 5050), tlvs=tlvs, checksum=True)
    header = parse(data)
    assert header is not None
    assert header.tlv(0x05) == b"unique-id-1" and header.tlv(0x01) == b"h2"
    assert header.tlv(0x03) == data[-4:]  # the checksum is a TLV too
    assert header.tlv(0x7F) is None


V2_BAD = {
    "version 1 in the v2 format": _v2(0x11, 0x11, b"\0" * 12),
    "unknown command": _v2(0x22, 0x11, b"\0" * 12),
    "UDP over IPv4": _v2(0x21, 0x12, b"\0" * 12),
    "Unix stream": _v2(0x21, 0x31, b"\0" * 216),
    "undefined family": _v2(0x21, 0x41, b"\0" * 12),
    "INET with unspecified transport": _v2(0x21, 0x10, b"\0" * 12),
    "shorter than the IPv4 block": _v2(0x21, 0x11, b"\0" * 11),
    "shorter than the IPv6 block": _v2(0x21, 0x21, b"\0" * 35),
    "truncated TLV header": _v2(0x21, 0x11, b"\0" * 12 + b"\x05\x00"),
    "TLV overruns": _v2(0x21, 0x11, b"\0" * 12 + b"\x05\x00\x09abc"),
    "CRC32C of 3 bytes": _v2(0x21, 0x11, b"\0" * 12 + b"\x03\x00\x03abc"),
    "truncated SSL TLV": _v2(0x21, 0x11, b"\0" * 12 + b"\x20\x00\x02ab"),
    "SSL sub-TLV overruns": _v2(0x21, 0x11, b"\0" * 12 + b"\x20\x00\x08\x01\0\0\0\0\x21\x00\x09"),
    "bad signature": b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x0c" + b"\0" * 12,
    "oversized": _v2(0x21, 0x11, b"\0" * 12 + b"\x04" + struct.pack("!H", MAX_HEADER_BYTES)
                     + b"\0" * MAX_HEADER_BYTES),
}


@pytest.mark.parametrize("data", V2_BAD.values(), ids=V2_BAD.keys())
def test_v2_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v2_checksum_mismatch_is_refused() -> None:
    data = bytearray(encode_v2(("192.0.2.7", 1), ("10.0.0.1", 2), checksum=True))
    data[17] ^= 0x01  # a bit of the source address
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(bytes(data))


def test_v2_oversized_length_is_refused_from_the_fixed_part_alone() -> None:
    head = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 65535)
    with pytest.raises(ProxyProtocolError, match="more than"):
        parse(head)  # no need to wait for 64 KiB that will be refused anyway
    # Bounded: a reader never holds more than one header's worth.
    reader = HeaderReader()
    with pytest.raises(ProxyProtocolError):
        reader.feed(head + b"\0" * 100_000)


@pytest.mark.parametrize("data", [b"", b"\r", b"\r\n\r\n\x00", b"P", b"PROXY", b"PROXY TCP4 1.",
                                  V2_SIGNATURE + b"\x21\x11\x00"])
def test_incomplete_headers_ask_for_more(data: bytes) -> None:
    assert parse(data) is None


@pytest.mark.parametrize("data", [b"HELLO 12\r\n", b"0000000005", b"\x16\x03\x01", b"GET / HTTP/1.1",
                                  b"\r\n\r\n\x01", b"PROXX"])
def test_not_a_proxy_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


def test_looks_like_header_tells_proxy_from_chat_traffic() -> None:
    assert looks_like_header(b"PROXY TCP4 ")
    assert looks_like_header(b"PRO")
    assert looks_like_header(V2_SIGNATURE[:5])
    assert not looks_like_header(b"HELLO")
    assert not looks_like_header(b"PING 0")
    assert not looks_like_header(b"0000000003")
    assert not looks_like_header(b"\x16\x03\x01")
    assert not looks_like_header(b"")


# ---------------------------------------------------------------------------- reader
def test_reader_consumes_exactly_the_header() -> None:
    header = encode_v1(("192.0.2.7", 1234), ("10.0.0.1", 5050))
    reader = HeaderReader()
    assert reader.feed(header[:7]) == 7 and reader.header is None
    assert reader.feed(header[7:] + b"HELLO") == len(header) - 7
    assert reader.header is not None and reader.header.source == ("192.0.2.7", 1234)
    assert reader.feed(b"more") == 0  # done: the rest is the client's


# ---------------------------------------------------------------------------- properties
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
endpoint4 = st.tuples(ipv4, port)
endpoint6 = st.tuples(ipv6, port)
endpoints = st.one_of(st.tuples(endpoint4, endpoint4), st.tuples(endpoint6, endpoint6))
tlv = st.tuples(st.integers(0, 255).filter(lambda t: t not in (0x03, 0x20)),
                st.binary(max_size=40))


def _split_feed(data: bytes, cuts: list[int]) -> tuple[HeaderReader, int]:
    reader = HeaderReader()
    consumed, start = 0, 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if cut < start:
            continue
        consumed += reader.feed(data[start:cut])
        start = cut
        if reader.header is not None:
            break
    return reader, consumed


@settings(max_examples=300, deadline=None)
@given(endpoints, st.booleans(), st.lists(tlv, max_size=4), st.booleans(),
       st.binary(max_size=30), st.lists(st.integers(0, 4000), max_size=6))
def test_any_encoded_header_parses_back_over_any_split(
        pair: tuple[tuple[str, int], tuple[str, int]], v2: bool, tlvs: list[tuple[int, bytes]],
        checksum: bool, after: bytes, cuts: list[int]) -> None:
    source, destination = pair
    data = (encode_v2(source, destination, tlvs=tlvs, checksum=checksum) if v2
            else encode_v1(source, destination))
    reader, consumed = _split_feed(data + after, cuts)
    header = reader.header
    assert header is not None
    assert consumed == len(data) == header.length  # never a byte of the client's
    assert header.source == (str(ipaddress.ip_address(source[0])), source[1])
    assert header.destination == (str(ipaddress.ip_address(destination[0])), destination[1])
    if v2:
        assert [t for t in header.tlvs if t[0] != 0x03] == tlvs


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_junk_never_crashes_and_never_overreads(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyProtocolError as exc:
        assert "\n" not in str(exc)
        return
    if header is not None:
        assert header.length <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(endpoints.map(lambda p: encode_v1(*p)),
                 endpoints.map(lambda p: encode_v2(*p, checksum=True))),
       st.data())
def test_any_corruption_is_refused_or_still_well_formed(header: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(header) - 1))
    flip = data.draw(st.integers(1, 255))
    corrupted = header[:index] + bytes([header[index] ^ flip]) + header[index + 1:]
    try:
        parsed = parse(corrupted)
    except ProxyProtocolError:
        return
    # v1 has no checksum: a changed digit can still be a valid, different line.
    # With a CRC32C every changed byte is caught, except where the change
    # removes the checksum itself (it is an optional TLV): the TLV's own type
    # byte, or a length field shortened to end exactly before that TLV. Either
    # way the header then has no checksum (a longer length field makes the
    # header incomplete, which is not an acceptance).
    if parsed is not None and header.startswith(V2_SIGNATURE):
        dropped = index in (14, 15) and parsed.length == len(header) - 7 and not parsed.tlvs
        assert index == len(header) - 7 or dropped, f"corrupted v2 header accepted at byte {index}"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=V1_MAX_BYTES + 50))
def test_reader_holds_at_most_one_header(data: bytes) -> None:
    reader = HeaderReader()
    try:
        for i in range(0, len(data), 7):
            reader.feed(data[i:i + 7])
    except ProxyProtocolError:
        pass
    assert reader.buffered <= MAX_HEADER_BYTES


def test_reader_gives_up_on_a_v1_line_at_107_bytes() -> None:
    reader = HeaderReader()
    data = b"PROXY UNKNOWN " + b"x" * 200
    with pytest.raises(ProxyProtocolError, match="107"):
        for i in range(0, len(data), 7):
            reader.feed(data[i:i + 7])
    assert reader.buffered <= V1_MAX_BYTES


# ---------------------------------------------------------------------------- trust
def test_trusted_proxies_parse_and_match() -> None:
    trusted = TrustedProxies.parse(" 10.0.0.0/8, 192.0.2.7 ,fd00::/8,")
    assert "10.1.2.3" in trusted and "192.0.2.7" in trusted and "192.0.2.8" not in trusted
    assert "fd12::1" in trusted and "fe80::1" not in trusted
    assert "::ffff:10.9.9.9" in trusted  # IPv4-mapped on a dual-stack socket
    assert "not an address" not in trusted and None not in trusted
    assert str(trusted) == "10.0.0.0/8,192.0.2.7/32,fd00::/8"
    assert not TrustedProxies.parse("") and not TrustedProxies.parse(" , ")


@pytest.mark.parametrize("text", ["10.0.0.0/33", "10.0.0.1/8", "example.com", "10.0.0.0/8;1.2.3.4"])
def test_trusted_proxies_refuse_bad_entries(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a CIDR"):
        TrustedProxies.parse(text)
