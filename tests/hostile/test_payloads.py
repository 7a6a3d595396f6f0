"""
Hostile frame bodies: binary junk after authentication, and v2 JSON that is
well-framed but poisonous (deep nesting, huge numbers, lone surrogates, wrong
types, NaN). Each is refused with a coded error and the connection closed, or
(where the protocol allows it) answered like any other message; never an
internal error.
"""

from __future__ import annotations

import random
import uuid

import pytest

from tests.fixtures.server import PASSWORD, USER

from ._support import (
    HEADER,
    V1_GOODBYE,
    V1_TERMINATOR,
    Guard,
    parse_v2,
    read_until_closed,
    v1_chunks,
    v1_error_text,
    v1_frame,
    v1_login,
    v2_error_codes,
    v2_frame,
    v2_login,
)

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_junk_after_authentication_v2(guard: Guard, seed: int) -> None:
    sock = v2_login(guard.server.port, USER, PASSWORD)
    sock.sendall(random.Random(seed).randbytes(8192))
    reply = read_until_closed(sock)
    sock.close()
    assert v2_error_codes(reply) in (["protocol_error"], ["frame_too_large"]), reply
    guard.check()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_junk_after_authentication_v1(guard: Guard, seed: int) -> None:
    sock = v1_login(guard.server.port, USER, PASSWORD)
    junk = random.Random(seed).randbytes(8192)
    if junk[:1].isdigit():  # keep it junk, not a (possibly valid) length header
        junk = b"\xff" + junk
    sock.sendall(junk)
    reply = read_until_closed(sock)
    sock.close()
    assert v1_chunks(reply)[-1].strip() == V1_GOODBYE, reply
    assert v1_error_text(reply).startswith("[ERROR] protocol_error:"), reply
    guard.check()


def test_binary_body_in_a_well_framed_v1_message_is_answered_safely(guard: Guard) -> None:
    # v1 frames carry raw bytes: invalid UTF-8, NULs and control characters are
    # a message like any other (decoded with replacement), not a crash.
    sock = v1_login(guard.server.port, USER, PASSWORD)
    marker = uuid.uuid4().hex[:8].encode()
    sock.sendall(v1_frame(marker + b" \x00\xff\xfe\x1b[2J\r\n\x80 tail"))
    data = b""
    sock.settimeout(15)
    while not (data.endswith(V1_TERMINATOR) and len(data) % HEADER == 0):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.decode("ascii").startswith("Echo: " + marker.decode())  # ASCII-only on v1
    sock.close()
    [turn] = [t for t in guard.server.history(USER) if marker.decode() in t["user"]]
    assert turn["status"] == "complete"
    guard.check()


POISON = [
    ("deeply_nested_array", b'{"id":1,"text":' + b"[" * 20000 + b"]" * 20000 + b"}"),
    ("deeply_nested_object", b'{"id":1,"text":"x","conversation":' + b'{"a":' * 5000
     + b"1" + b"}" * 5000 + b"}"),
    ("huge_integer_id", b'{"id":' + b"9" * 5000 + b',"text":"x"}'),
    ("negative_id", b'{"id":-1,"text":"x"}'),
    ("float_id", b'{"id":1.5,"text":"x"}'),
    ("bool_id", b'{"id":true,"text":"x"}'),
    ("nan_id", b'{"id":NaN,"text":"x"}'),
    ("infinity_id", b'{"id":Infinity,"text":"x"}'),
    ("lone_surrogate_text", b'{"id":1,"text":"\\ud800"}'),
    ("lone_surrogate_conversation", b'{"id":1,"text":"x","conversation":"\\udfff"}'),
    ("text_is_a_number", b'{"id":1,"text":5}'),
    ("text_is_an_object", b'{"id":1,"text":{"a":1}}'),
    ("body_is_a_list", b"[1,2,3]"),
    ("body_is_a_string", b'"CHAT"'),
    ("invalid_utf8", b'{"id":1,"text":"\xff\xfe"}'),
    ("truncated_json", b'{"id":1,"text":"x'),
    ("empty_body", b""),
    ("missing_text", b'{"id":1}'),
    # Readers disagree on which value of a repeated key wins (docs/PROTOCOL.md §3).
    ("duplicate_keys", b'{"id":1,"text":"first","text":"second"}'),
    ("nested_33_levels", b'{"id":1,"text":"x","deep":' + b"[" * 32 + b"]" * 32 + b"}"),
]


@pytest.mark.parametrize("body", [b for _, b in POISON], ids=[n for n, _ in POISON])
def test_poisonous_v2_chat_body_is_refused_with_a_protocol_error(guard: Guard, body: bytes) -> None:
    sock = v2_login(guard.server.port, USER, PASSWORD)
    sock.sendall(v2_frame("CHAT", body))
    reply = read_until_closed(sock)
    sock.close()
    assert v2_error_codes(reply) == ["protocol_error"], reply
    [(_, error)] = [f for f in parse_v2(reply) if f[0] == "ERROR"]
    assert len(error["message"]) < 200  # short and fixed, never the peer's bytes echoed
    guard.check()


ODD_BUT_VALID = [
    ("unknown_fields", b'{"id":1,"text":"extra","zzz":[1,2,{"a":null}]}', "extra"),
    ("escaped_unicode", b'{"id":1,"text":"caf\\u00e9 \\ud83d\\ude00"}', "caf\u00e9 \U0001f600"),
    # Accepted as the user's text; the answer that echoes it drops them
    # (docs/PROTOCOL.md §4, "Text that is shown").
    ("control_characters", b'{"id":1,"text":"a\\u0000b\\u001bc"}', "abc"),
    ("max_safe_id", b'{"id":9007199254740991,"text":"big id"}', "big id"),
]


@pytest.mark.parametrize(("body", "echo"), [(b, e) for _, b, e in ODD_BUT_VALID],
                         ids=[n for n, _, _ in ODD_BUT_VALID])
def test_odd_but_valid_v2_chat_body_is_answered(guard: Guard, body: bytes, echo: str) -> None:
    sock = v2_login(guard.server.port, USER, PASSWORD)
    sock.sendall(v2_frame("CHAT", body))
    data = b""
    sock.settimeout(15)
    while not any(kind in ("END", "ERROR") for kind, _ in parse_v2(data)):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    frames = parse_v2(data)
    assert frames[-1][0] == "END", frames
    text = "".join(b["text"] for k, b in frames if k == "DELTA")
    assert text.startswith(f"Echo: {echo}")
    sock.close()
    guard.check()
