"""
Writes tests/vectors/v1.json and v2.json (run: ``python tests/protocol/make_vectors.py``).

The expected bytes are built here BY HAND from the specification (padding,
headers, JSON text written out literally), never by calling the codec: the
vectors check the codec, so they must not come from it. Format:
tests/vectors/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "vectors"

# ---------------------------------------------------------------------------- v1


def frame(body: bytes) -> bytes:
    """A v1 client frame: decimal length right-padded to 64, then the body."""
    return str(len(body)).encode().ljust(64, b" ") + body


def chunk(text: bytes) -> bytes:
    assert len(text) <= 64
    return text.ljust(64, b" ")


TERM = b" " * 64
WARNING = b"[WARNING] use of cuss words are not allowed"
WARNING_TEXT = WARNING.decode()


def ev(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, **fields}


def step(
    sender: str,
    data: bytes,
    events: list[dict[str, Any]] | None = None,
    *,
    received: list[dict[str, Any]] | None = None,
    auto: bool = False,
    eof: bool = False,
    error: str | None = None,
    reply: bytes | None = None,
    state: dict[str, str] | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {"from": sender}
    if auto:
        s["auto"] = True
    elif events is not None:
        s["events"] = events
    s["bytes"] = data.decode("latin-1")
    if received is not None:
        s["received"] = received
    if eof:
        s["eof"] = True
    if error is not None:
        s["error"] = error
    if reply is not None:
        s["reply"] = reply.decode("latin-1")
    if state is not None:
        s["state"] = state
    return s


def case(
    name: str, version: int, steps: list[dict[str, Any]], *, split: bool = True, note: str = ""
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "version": version}
    if note:
        c["note"] = note
    if not split:
        c["split"] = False
    c["steps"] = steps
    return c


def v1_login(user: str = "alice", password: str = "secret") -> list[dict[str, Any]]:
    return [
        step(
            "client",
            frame(user.encode()),
            [ev("Authenticate", user=user, password=password)],
            received=[],
        ),
        step("server", b" username accepted", auto=True, received=[]),
        step(
            "client",
            frame(password.encode()),
            auto=True,
            received=[ev("Authenticate", user=user, password=password)],
        ),
        step(
            "server",
            b" password accepted",
            [ev("AuthResult", ok=True, user=user)],
            received=[ev("AuthResult", ok=True, user=user, message="password accepted")],
            state={"client": "chatting", "server": "chatting"},
        ),
    ]


def v1_chat(text: str, message_id: int) -> dict[str, Any]:
    return step(
        "client",
        frame(text.encode()),
        [ev("ChatMessage", text=text)],
        received=[ev("ChatMessage", text=text, conversation="", message_id=message_id)],
    )


def v1_cases() -> list[dict[str, Any]]:
    a1 = "Hi! How can I help you today?"
    a2 = " I run on your own machine, so your questions stay private."
    answer = (a1 + a2).encode()
    first, rest = answer[:64], answer[64:]
    assert not first.endswith(b" ")
    bad = lambda header, name, error="protocol_error": case(  # noqa: E731
        name,
        1,
        [
            step(
                "client",
                frame(b"alice"),
                [ev("Authenticate", user="alice", password="x")],
                received=[],
            ),
            step(
                "client",
                header.ljust(64, b" ") if len(header) < 64 else header,
                error=error,
                reply=b"invalid password : closing connection",
            ),
        ],
        note="after the username frame, so the refusal is the password one",
    )
    return [
        case(
            "original client session",
            1,
            [
                *v1_login(),
                v1_chat("hello", 1),
                step("server", b"", [ev("AnswerDelta", text=a1, message_id=1)], received=[]),
                step(
                    "server",
                    first,
                    [ev("AnswerDelta", text=a2, message_id=1)],
                    received=[ev("AnswerDelta", text=first.decode(), message_id=1)],
                ),
                step(
                    "server",
                    chunk(rest) + TERM,
                    [ev("AnswerEnd", message_id=1)],
                    received=[
                        ev("AnswerDelta", text=rest.decode(), message_id=1),
                        ev("AnswerEnd", message_id=1),
                    ],
                ),
                v1_chat("and you?", 2),
                step(
                    "server",
                    chunk(b"Fine.") + TERM,
                    [ev("AnswerDelta", text="Fine.", message_id=2), ev("AnswerEnd", message_id=2)],
                    received=[
                        ev("AnswerDelta", text="Fine.", message_id=2),
                        ev("AnswerEnd", message_id=2),
                    ],
                ),
                step(
                    "client",
                    frame(b"<GoodBye>"),
                    [ev("Bye")],
                    state={"client": "closed", "server": "closed"},
                ),
                step("server", b"[DISCONNECTED]disconnected from server", [ev("Bye")]),
                step("server", b"", [], eof=True, received=[ev("ConnectionClosed")]),
                step("client", b"", [], eof=True, received=[ev("ConnectionClosed")]),
            ],
            note="every byte as the original client and server exchange them",
        ),
        case(
            "cuss-word warning then <GoodBye>",
            1,
            [
                *v1_login(),
                v1_chat("you abcxyz", 1),
                step(
                    "server",
                    chunk(WARNING) + chunk(b"<GoodBye>"),
                    [ev("Notice", kind="moderation", message="banned word")],
                    received=[
                        ev("Notice", kind="moderation", message=WARNING_TEXT),
                        ev("Bye", reason="goodbye"),
                    ],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        case(
            "wrong password",
            1,
            [
                *v1_login()[:3],
                step(
                    "server",
                    b"invalid password : closing connection",
                    [ev("AuthResult", ok=False, message="login failed")],
                    received=[
                        ev(
                            "AuthResult",
                            ok=False,
                            user="alice",
                            message="invalid password : closing connection",
                        )
                    ],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        case(
            "invalid username reply of the original server",
            1,
            [
                step(
                    "client",
                    frame(b"mallory"),
                    [ev("Authenticate", user="mallory", password="x")],
                    received=[],
                ),
                step(
                    "server",
                    b"invalid username : closing connection",
                    received=[
                        ev(
                            "AuthResult",
                            ok=False,
                            user="mallory",
                            message="invalid username : closing connection",
                        )
                    ],
                    state={"client": "closed"},
                ),
            ],
            note="our server never sends it for a name; the client must still understand it",
        ),
        case(
            "any other login reply counts as accepted",
            1,
            [
                step(
                    "client",
                    frame(b"alice"),
                    [ev("Authenticate", user="alice", password="secret")],
                    received=[],
                ),
                step("server", b"welcome", received=[]),
                step(
                    "client",
                    frame(b"secret"),
                    auto=True,
                    received=[ev("Authenticate", user="alice", password="secret")],
                ),
                step(
                    "server",
                    b"ok",
                    received=[ev("AuthResult", ok=True, user="alice", message="ok")],
                    state={"client": "chatting"},
                ),
            ],
            split=False,
            note="the original client did one recv(64) and compared to the refusal",
        ),
        case(
            "non-ASCII answer is transliterated",
            1,
            [
                *v1_login(),
                v1_chat("café?", 1),
                step(
                    "server",
                    chunk(b'"Cafe" - naive :coffee: resume, BeiJing') + TERM,
                    [
                        ev("AnswerDelta", text="“Café” – naïve ☕ résumé, 北京", message_id=1),
                        ev("AnswerEnd", message_id=1),
                    ],
                    received=[
                        ev(
                            "AnswerDelta",
                            text='"Cafe" - naive :coffee: resume, BeiJing',
                            message_id=1,
                        ),
                        ev("AnswerEnd", message_id=1),
                    ],
                ),
            ],
        ),
        case(
            "100 spaces in an answer can't forge the terminator",
            1,
            [
                *v1_login(),
                v1_chat("spaces", 1),
                step(
                    "server",
                    b"a" + b" " * 63,
                    [ev("AnswerDelta", text="a" + " " * 100 + "b", message_id=1)],
                    received=[ev("AnswerDelta", text="a", message_id=1)],
                ),
                step(
                    "server",
                    chunk(b"b") + TERM,
                    [ev("AnswerEnd", message_id=1)],
                    received=[
                        ev("AnswerDelta", text=" " * 63 + "b", message_id=1),
                        ev("AnswerEnd", message_id=1),
                    ],
                ),
            ],
        ),
        case(
            "<GoodBye> in an answer can't end the session",
            1,
            [
                *v1_login(),
                v1_chat("say goodbye", 1),
                step(
                    "server",
                    chunk(b"<Goodbye>") + TERM,
                    [
                        ev("AnswerDelta", text="<GoodBye>", message_id=1),
                        ev("AnswerEnd", message_id=1),
                    ],
                    received=[
                        ev("AnswerDelta", text="<Goodbye>", message_id=1),
                        ev("AnswerEnd", message_id=1),
                    ],
                ),
            ],
        ),
        case(
            "error reply to one message",
            1,
            [
                *v1_login(),
                v1_chat("hello", 1),
                step(
                    "server",
                    chunk(b"[ERROR] model_unavailable: the model service is not reachable") + TERM,
                    [
                        ev(
                            "Error",
                            code="model_unavailable",
                            message="the model service is not reachable",
                            message_id=1,
                        )
                    ],
                    received=[
                        ev(
                            "Error",
                            code="model_unavailable",
                            message="the model service is not reachable",
                            message_id=1,
                        )
                    ],
                    state={"client": "chatting", "server": "chatting"},
                ),
            ],
        ),
        case(
            "fatal error ends with <GoodBye>",
            1,
            [
                *v1_login(),
                v1_chat("hello", 1),
                step(
                    "server",
                    chunk(b"[ERROR] shutting_down: the server is restarting") + chunk(b"<GoodBye>"),
                    [ev("Error", code="shutting_down", message="the server is restarting")],
                    received=[
                        ev(
                            "Error",
                            code="shutting_down",
                            message="the server is restarting",
                            message_id=1,
                        ),
                        ev("Bye", reason="goodbye"),
                    ],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        case(
            "oversized header before login",
            1,
            [
                step(
                    "client",
                    b"5000".ljust(64, b" "),
                    error="frame_too_large",
                    reply=b"invalid username : closing connection",
                ),
            ],
            note="4096 bytes is the limit before login; refused before any body byte",
        ),
        case(
            "larger frames after login",
            1,
            [
                *v1_login(),
                v1_chat("x" * 5000, 1),
            ],
        ),
        bad(b"-5", "negative length header"),
        bad(b"+5", "plus-sign length header"),
        bad(b"1_0", "underscore length header"),
        bad("٥".encode(), "non-ASCII digit header"),
        bad(b"5\t", "tab in header"),
        bad(b"5\x00", "NUL in header"),
        bad(b" 5", "leading space in header"),
        bad(b" " * 64, "all-space header"),
        bad(b"0x10", "hex length header"),
        bad(b"123456789012345678901", "21-digit length header", "frame_too_large"),
        bad(b"000000000000000000001", "21-digit zero-padded length header"),
        case(
            "EOF mid-frame",
            1,
            [
                step(
                    "client",
                    b"5".ljust(64, b" ") + b"al",
                    eof=True,
                    error="protocol_error",
                    reply=b"invalid username : closing connection",
                ),
            ],
        ),
    ]


# ---------------------------------------------------------------------------- v2


def f2(frame_type: str, body: str) -> bytes:
    data = body.encode("utf-8")
    return f"{frame_type} {len(data)}".encode().ljust(64, b" ") + data


#: What our server announces with its default settings (docs/PROTOCOL.md §4).
SERVER_LIMITS = {
    "max_frame_bytes": 65536,
    "max_unauthenticated_frame_bytes": 4096,
    "auth_timeout_ms": 10000,
    "idle_timeout_ms": 900000,
    "ping_timeout_ms": 20000,
    "messages_per_minute": 20,
    "model_ready": 1,
}
SERVER_LIMITS_JSON = (
    '{"max_frame_bytes":65536,"max_unauthenticated_frame_bytes":4096,"auth_timeout_ms":10000,'
    '"idle_timeout_ms":900000,"ping_timeout_ms":20000,"messages_per_minute":20,"model_ready":1}'
)


def v2_hello() -> list[dict[str, Any]]:
    return [
        step(
            "client",
            f2("HELLO", '{"versions":[2],"agent":"chat-client/0.1.0"}'),
            [ev("ClientHello", versions=[2], agent="chat-client/0.1.0")],
            state={"client": "negotiating", "server": "negotiating"},
        ),
        step(
            "server",
            f2(
                "HELLO",
                '{"version":2,"agent":"chat-server/0.1.0","model":"llama3.2",'
                '"models":["llama3.2","qwen2.5:0.5b"],'
                '"limits":' + SERVER_LIMITS_JSON + "}",
            ),
            [
                ev(
                    "ServerHello",
                    version=2,
                    agent="chat-server/0.1.0",
                    model="llama3.2",
                    limits=SERVER_LIMITS,
                    models=["llama3.2", "qwen2.5:0.5b"],
                )
            ],
            state={"client": "authenticating", "server": "authenticating"},
        ),
    ]


def v2_login() -> list[dict[str, Any]]:
    return [
        *v2_hello(),
        step(
            "client",
            f2("AUTH", '{"user":"alice","password":"secret"}'),
            [ev("Authenticate", user="alice", password="secret")],
        ),
        step(
            "server",
            f2("AUTH_RESULT", '{"ok":true,"user":"alice","message":"welcome"}'),
            [ev("AuthResult", ok=True, user="alice", message="welcome")],
            state={"client": "chatting", "server": "chatting"},
        ),
    ]


def v2_raw_error(
    name: str, data: bytes, error: str, *, login: bool = False, note: str = ""
) -> dict[str, Any]:
    steps = v2_login() if login else v2_hello()[:1]
    return case(name, 2, [*steps, step("client", data, error=error)], note=note)


def v2_cases() -> list[dict[str, Any]]:
    hello = f2("HELLO", '{"versions":[2],"agent":""}')
    return [
        case(
            "full session",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":1,"conversation":"c1","text":"Bonjour, ça va ?"}'),
                    [ev("ChatMessage", text="Bonjour, ça va ?", conversation="c1", message_id=1)],
                ),
                step(
                    "server",
                    f2(
                        "NOTICE",
                        '{"kind":"queue","message":"waiting for a free slot","id":1,"position":1}',
                    ),
                    [
                        ev(
                            "Notice",
                            kind="queue",
                            message="waiting for a free slot",
                            message_id=1,
                            position=1,
                        )
                    ],
                ),
                step(
                    "server",
                    f2("DELTA", '{"id":1,"text":"Ça va"}')
                    + f2("DELTA", '{"id":1,"text":" bien !"}')
                    + f2(
                        "END",
                        '{"id":1,"reason":"stop","prompt_tokens":12,"answer_tokens":3,'
                        '"first_token_ms":250,"total_ms":900}',
                    ),
                    [
                        ev("AnswerDelta", text="Ça va", message_id=1),
                        ev("AnswerDelta", text=" bien !", message_id=1),
                        ev(
                            "AnswerEnd",
                            message_id=1,
                            reason="stop",
                            prompt_tokens=12,
                            answer_tokens=3,
                            first_token_ms=250,
                            total_ms=900,
                        ),
                    ],
                ),
                step("server", f2("PING", '{"nonce":"n1"}'), [ev("Ping", nonce="n1")]),
                step("client", f2("PONG", '{"nonce":"n1"}'), [ev("Pong", nonce="n1")]),
                step(
                    "client",
                    f2("CHAT", '{"id":2,"conversation":"c1","text":"tell me a long story"}')
                    + f2("CANCEL", '{"id":2}'),
                    [
                        ev(
                            "ChatMessage",
                            text="tell me a long story",
                            conversation="c1",
                            message_id=2,
                        ),
                        ev("Cancel", message_id=2),
                    ],
                ),
                step(
                    "server",
                    f2(
                        "END",
                        '{"id":2,"reason":"cancelled","prompt_tokens":0,"answer_tokens":0,'
                        '"first_token_ms":0,"total_ms":40}',
                    ),
                    [ev("AnswerEnd", message_id=2, reason="cancelled", total_ms=40)],
                ),
                step(
                    "client",
                    f2("CHAT", '{"id":3,"conversation":"","text":"my mail is a@b.cd"}'),
                    [ev("ChatMessage", text="my mail is a@b.cd", message_id=3)],
                ),
                step(
                    "server",
                    f2("ERROR", '{"code":"refused","message":"personal data","id":3}'),
                    [ev("Error", code="refused", message="personal data", message_id=3)],
                    state={"client": "chatting", "server": "chatting"},
                ),
                step(
                    "client",
                    f2("BYE", '{"reason":"quit"}'),
                    [ev("Bye", reason="quit")],
                    state={"client": "closed", "server": "closed"},
                ),
                step("server", f2("BYE", '{"reason":""}'), [ev("Bye")]),
                step("server", b"", [], eof=True, received=[ev("ConnectionClosed")]),
            ],
        ),
        case(
            "login refused",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","password":"wrong"}'),
                    [ev("Authenticate", user="alice", password="wrong")],
                ),
                step(
                    "server",
                    f2("AUTH_RESULT", '{"ok":false,"user":"","message":"login failed"}'),
                    [ev("AuthResult", ok=False, message="login failed")],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        *token_cases(),
        case(
            "fatal error before login",
            2,
            [
                *v2_hello(),
                step(
                    "server",
                    f2("ERROR", '{"code":"auth_timeout","message":"log in within 30 s"}'),
                    [ev("Error", code="auth_timeout", message="log in within 30 s")],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        case(
            "unknown keys, codes and kinds are tolerated",
            2,
            [
                step("client", hello, [ev("ClientHello")]),
                step(
                    "server",
                    f2("HELLO", '{"version":2,"resume":true}'),
                    received=[ev("ServerHello")],
                ),
                step(
                    "server",
                    f2("NOTICE", '{"kind":"weather","message":"sunny","mood":"good"}'),
                    received=[ev("Notice", kind="info", message="sunny")],
                ),
                step(
                    "server",
                    f2("ERROR", '{"code":"quota_exceeded","message":"later"}'),
                    received=[ev("Error", code="internal_error", message="later")],
                    state={"client": "authenticating"},
                ),
            ],
            note="forward compatibility: a newer peer may add keys, error codes and notice kinds",
        ),
        case(
            "minimal bodies take defaults",
            2,
            [
                *v2_login(),
                step(
                    "server",
                    f2("END", '{"id":7}') + f2("NOTICE", '{"kind":"info"}') + f2("BYE", "{}"),
                    received=[ev("AnswerEnd", message_id=7), ev("Notice", kind="info"), ev("Bye")],
                ),
            ],
        ),
        case(
            "no common version",
            2,
            [
                step("client", f2("HELLO", '{"versions":[3,4]}'), error="unsupported_version"),
            ],
        ),
        case(
            "first frame must be HELLO",
            2,
            [
                step("client", f2("AUTH", '{"user":"a","password":"b"}'), error="unexpected_frame"),
            ],
        ),
        case(
            "chat before login",
            2,
            [
                *v2_hello(),
                step("client", f2("CHAT", '{"id":1,"text":"hi"}'), error="unexpected_frame"),
            ],
        ),
        case(
            "frame type the client may not send",
            2,
            [
                *v2_login(),
                step("client", f2("DELTA", '{"id":1,"text":"hi"}'), error="unexpected_frame"),
            ],
        ),
        v2_raw_error("unknown frame type", f2("FOO", "{}"), "unexpected_frame", login=True),
        v2_raw_error(
            "oversized header before login",
            b"AUTH 5000".ljust(64, b" "),
            "frame_too_large",
            note="refused before any body byte",
        ),
        case(
            "larger frames after login",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":1,"conversation":"","text":"' + "x" * 5000 + '"}'),
                    [ev("ChatMessage", text="x" * 5000, message_id=1)],
                ),
            ],
        ),
        v2_raw_error("negative length header", b"AUTH -5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("plus-sign length header", b"AUTH +5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("underscore length header", b"AUTH 1_0".ljust(64, b" "), "protocol_error"),
        v2_raw_error("non-ASCII digit header", "AUTH ٥".encode().ljust(64, b" "), "protocol_error"),
        v2_raw_error("lowercase type", b"auth 5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("two spaces in header", b"AUTH  5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("tab in header", b"AUTH\t5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("17-letter type", b"ABCDEFGHIJKLMNOPQ 5".ljust(64, b" "), "protocol_error"),
        v2_raw_error("11-digit length", b"AUTH 00000000005".ljust(64, b" "), "protocol_error"),
        v2_raw_error("body not UTF-8", f2("AUTH", "{}")[:-2] + b"\xff}", "protocol_error"),
        v2_raw_error("body not JSON", f2("AUTH", "user=alice"), "protocol_error"),
        v2_raw_error("body not an object", f2("AUTH", '["alice","secret"]'), "protocol_error"),
        v2_raw_error("missing key", f2("AUTH", '{"user":"alice"}'), "protocol_error"),
        v2_raw_error(
            "mistyped key", f2("AUTH", '{"user":"alice","password":12}'), "protocol_error"
        ),
        v2_raw_error(
            "boolean id", f2("CHAT", '{"id":true,"text":"hi"}'), "protocol_error", login=True
        ),
        v2_raw_error(
            "negative id", f2("CHAT", '{"id":-1,"text":"hi"}'), "protocol_error", login=True
        ),
        v2_raw_error(
            "float id", f2("CHAT", '{"id":1.0,"text":"hi"}'), "protocol_error", login=True
        ),
        v2_raw_error("NaN", f2("CHAT", '{"id":NaN,"text":"hi"}'), "protocol_error", login=True),
        v2_raw_error(
            "lone surrogate", f2("CHAT", '{"id":1,"text":"\\ud800"}'), "protocol_error", login=True
        ),
        v2_raw_error(
            "lone surrogate in an unknown key",
            f2("CHAT", '{"id":1,"text":"hi","x":["\\udc80"]}'),
            "protocol_error",
            login=True,
            note="unknown keys are ignored, but a body that is not valid Unicode is refused "
            "wherever the surrogate is",
        ),
        v2_raw_error(
            "body with a byte order mark",
            f2("CHAT", '\ufeff{"id":1,"text":"hi"}'),
            "protocol_error",
            login=True,
            note="RFC 8259 §8.1: no BOM in JSON on the wire",
        ),
        v2_raw_error(
            "lone surrogate in a key name",
            f2("CHAT", '{"id":1,"text":"hi","\\ud83d":1}'),
            "protocol_error",
            login=True,
        ),
        case(
            "EOF mid-frame",
            2,
            [
                step("client", hello[:70], eof=True, error="protocol_error"),
            ],
        ),
        *settled_cases(),
        *model_cases(),
        *name_cases(),
    ]


def model_cases() -> list[dict[str, Any]]:
    """Choosing a model: HELLO lists them, CHAT names one, END says who answered."""
    return [
        case(
            "models: a CHAT names a model, END reports the model and the backend",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":1,"conversation":"c1","model":"qwen2.5:0.5b","text":"hi"}'),
                    [ev("ChatMessage", text="hi", conversation="c1", message_id=1,
                        model="qwen2.5:0.5b")],
                ),
                step(
                    "server",
                    f2("DELTA", '{"id":1,"text":"Hello"}')
                    + f2(
                        "END",
                        '{"id":1,"reason":"stop","prompt_tokens":5,"answer_tokens":1,'
                        '"first_token_ms":80,"total_ms":95,"model":"qwen2.5:0.5b",'
                        '"backend":"gpu1"}',
                    ),
                    [
                        ev("AnswerDelta", text="Hello", message_id=1),
                        ev("AnswerEnd", message_id=1, prompt_tokens=5, answer_tokens=1,
                           first_token_ms=80, total_ms=95, model="qwen2.5:0.5b",
                           backend="gpu1"),
                    ],
                ),
                step(
                    "client",
                    f2("CHAT", '{"id":2,"conversation":"c1","model":"gpt-9","text":"hi"}'),
                    [ev("ChatMessage", text="hi", conversation="c1", message_id=2,
                        model="gpt-9")],
                ),
                step(
                    "server",
                    f2("ERROR", '{"code":"unknown_model","message":"that model is not offered'
                       ' here; HELLO lists the models","id":2}'),
                    [ev("Error", code="unknown_model", message="that model is not offered"
                        " here; HELLO lists the models", message_id=2)],
                ),
            ],
            note="CHAT.model absent or empty: the conversation's model (the default for a new"
            " one); END.model and END.backend are absent when not reported; unknown_model is"
            " not fatal",
        ),
        case(
            "models: an older server's HELLO without models decodes to an empty list",
            2,
            [
                step(
                    "client",
                    f2("HELLO", '{"versions":[2],"agent":""}'),
                    [ev("ClientHello", versions=[2], agent="")],
                ),
                step(
                    "server",
                    f2("HELLO", '{"version":2,"agent":"","model":"llama3.2","limits":{}}'),
                    [ev("ServerHello", version=2, agent="", model="llama3.2", limits={},
                        models=[])],
                    state={"client": "authenticating", "server": "authenticating"},
                ),
            ],
        ),
        case(
            "models: HELLO models must be a list of non-empty strings",
            2,
            [
                step(
                    "client",
                    f2("HELLO", '{"versions":[2],"agent":""}'),
                    [ev("ClientHello", versions=[2], agent="")],
                ),
                step("server", f2("HELLO", '{"version":2,"model":"m","models":["m",""]}'),
                     error="protocol_error"),
            ],
        ),
    ]


def name_cases() -> list[dict[str, Any]]:
    """Names (conversation ids, model and backend names, agents): at most 256
    characters, no control characters (docs/PROTOCOL.md §4)."""
    longest, too_long = "c" * 256, "c" * 257
    # 256 characters of three bytes each: the bound counts characters.
    wide = "\u4f1a" * 256
    return [
        case(
            "names: a conversation id of 256 characters is accepted",
            2,
            [
                *v2_login(),
                step("client", f2("CHAT", '{"id":1,"conversation":"' + longest + '","text":"hi"}'),
                     [ev("ChatMessage", text="hi", conversation=longest, message_id=1)]),
                step("client", f2("CHAT", '{"id":2,"conversation":"' + wide + '","text":"hi"}'),
                     [ev("ChatMessage", text="hi", conversation=wide, message_id=2)]),
            ],
            note="characters, not bytes: the second id is 768 bytes of UTF-8",
        ),
        v2_raw_error(
            "names: a conversation id of 257 characters",
            f2("CHAT", '{"id":1,"conversation":"' + too_long + '","text":"hi"}'),
            "protocol_error",
            login=True,
            note="refused as the frame arrives, before anything is done with the message",
        ),
        v2_raw_error(
            "names: a control character in a conversation id",
            f2("CHAT", '{"id":1,"conversation":"a\\u0000b","text":"hi"}'),
            "protocol_error",
            login=True,
        ),
        v2_raw_error(
            "names: a model name of 257 characters",
            f2("CHAT", '{"id":1,"model":"' + too_long + '","text":"hi"}'),
            "protocol_error",
            login=True,
        ),
        v2_raw_error(
            "names: a newline in a model name",
            f2("CHAT", '{"id":1,"model":"llama3.2\\n","text":"hi"}'),
            "protocol_error",
            login=True,
        ),
        case(
            "names: a HELLO agent of 257 characters",
            2,
            [step("client", f2("HELLO", '{"versions":[2],"agent":"' + too_long + '"}'),
                  error="protocol_error")],
        ),
    ]


#: Session tokens in the vectors: 43 characters of base64url (32 random bytes).
TOKEN_1 = "Jq3Vx0N8cXhHk2sS6pLw1mZ4tYb9RfUeAaDgC5iKoEn"
TOKEN_2 = "tB7wPz2LmQe4Ns8Xy1Vc6Hd0Ju5Kf3GaRi9So-_ZxWq"


def token_cases() -> list[dict[str, Any]]:
    """Session tokens (docs/PROTOCOL.md §4): issued in AUTH_RESULT, used in AUTH."""
    return [
        case(
            "a session token comes with a successful login",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","password":"secret"}'),
                    [ev("Authenticate", user="alice", password="secret")],
                ),
                step(
                    "server",
                    f2(
                        "AUTH_RESULT",
                        '{"ok":true,"user":"alice","message":"welcome","token":"'
                        + TOKEN_1 + '"}',
                    ),
                    [ev("AuthResult", ok=True, user="alice", message="welcome", token=TOKEN_1)],
                    state={"client": "chatting", "server": "chatting"},
                ),
            ],
            note="the token is random (at least 128 bits); the client keeps it in memory "
            "to log in again after a reconnect",
        ),
        case(
            "login with a session token instead of the password",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","token":"' + TOKEN_1 + '"}'),
                    [ev("Authenticate", user="alice", token=TOKEN_1)],
                ),
                step(
                    "server",
                    f2(
                        "AUTH_RESULT",
                        '{"ok":true,"user":"alice","message":"welcome","token":"'
                        + TOKEN_2 + '"}',
                    ),
                    [ev("AuthResult", ok=True, user="alice", message="welcome", token=TOKEN_2)],
                    state={"client": "chatting", "server": "chatting"},
                ),
            ],
            note="every successful login issues a fresh token; the client uses the newest",
        ),
        case(
            "a refused token login looks like a refused password",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","token":"' + TOKEN_2 + '"}'),
                    [ev("Authenticate", user="alice", token=TOKEN_2)],
                ),
                step(
                    "server",
                    f2("AUTH_RESULT", '{"ok":false,"user":"","message":"login failed"}'),
                    [ev("AuthResult", ok=False, message="login failed")],
                    state={"client": "closed", "server": "closed"},
                ),
            ],
        ),
        case(
            "null password or token means absent (AUTH)",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","password":"secret","token":null}'),
                    received=[ev("Authenticate", user="alice", password="secret")],
                    state={"server": "verifying"},
                ),
            ],
        ),
        case(
            "null password or token means absent (AUTH_RESULT)",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","password":"secret"}'),
                    [ev("Authenticate", user="alice", password="secret")],
                    state={"client": "verifying", "server": "verifying"},
                ),
                step(
                    "server",
                    f2("AUTH_RESULT", '{"ok":true,"user":"alice","message":"hi","token":null}'),
                    received=[ev("AuthResult", ok=True, user="alice", message="hi")],
                    state={"client": "chatting"},
                ),
            ],
        ),
        case(
            "AUTH_RESULT before AUTH",
            2,
            [
                *v2_hello(),
                step(
                    "server",
                    f2("AUTH_RESULT", '{"ok":true,"user":"alice","message":"welcome"}'),
                    error="unexpected_frame",
                ),
            ],
            note="A verdict answers an AUTH: a client that has not sent one refuses it.",
        ),
        v2_raw_error(
            "AUTH with both password and token",
            f2("AUTH", '{"user":"alice","password":"secret","token":"' + TOKEN_1 + '"}'),
            "protocol_error",
        ),
        v2_raw_error("AUTH with an empty token", f2("AUTH", '{"user":"alice","token":""}'),
                     "protocol_error"),
        v2_raw_error("AUTH with a mistyped token", f2("AUTH", '{"user":"alice","token":7}'),
                     "protocol_error"),
        case(
            "a failed login carries no token",
            2,
            [
                *v2_hello(),
                step(
                    "client",
                    f2("AUTH", '{"user":"alice","password":"secret"}'),
                    [ev("Authenticate", user="alice", password="secret")],
                ),
                step(
                    "server",
                    f2("AUTH_RESULT", '{"ok":false,"message":"login failed","token":"'
                       + TOKEN_1 + '"}'),
                    error="protocol_error",
                ),
            ],
        ),
    ]


def settled_cases() -> list[dict[str, Any]]:
    """One case per rule that docs/PROTOCOL.md settles."""
    nested_ok = '{"id":1,"text":"hi","x":' + "[" * 31 + "]" * 31 + "}"  # 32 levels
    nested_bad = '{"id":1,"text":"hi","x":' + "[" * 32 + "]" * 32 + "}"  # 33 levels
    return [
        case(
            "frame limits: HELLO announces both, the smaller one holds until login",
            2,
            [
                *v2_hello(),
                step("client", b"AUTH 4097".ljust(64, b" "), error="frame_too_large"),
            ],
            note="max_unauthenticated_frame_bytes (4096) applies until AUTH_RESULT ok, "
            "max_frame_bytes (65536) after it; a HELLO announces both",
        ),
        case(
            "BYE as the first frame",
            2,
            [step("client", f2("BYE", '{"reason":"quit"}'), error="unexpected_frame")],
            note="the first frame of a v2 client is HELLO; one that wants to leave "
            "before it just closes the connection",
        ),
        case(
            "AUTH pipelined behind HELLO",
            2,
            [
                step(
                    "client",
                    f2("HELLO", '{"versions":[2],"agent":""}'),
                    [ev("ClientHello")],
                    state={"client": "negotiating", "server": "negotiating"},
                ),
                step("client", f2("AUTH", '{"user":"a","password":"b"}'), error="unexpected_frame"),
            ],
            note="a client waits for the server's HELLO before it logs in",
        ),
        case(
            "the client's BYE: the server answers BYE and closes; frames crossing it are dropped",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("BYE", '{"reason":"quit"}'),
                    [ev("Bye", reason="quit")],
                    state={"client": "closed", "server": "closed"},
                ),
                step(
                    "server",
                    f2("NOTICE", '{"kind":"info","message":"crossed the BYE"}'),
                    received=[],
                ),
                step(
                    "server",
                    f2("BYE", '{"reason":"goodbye"}'),
                    [ev("Bye", reason="goodbye")],
                ),
                step("server", b"", [], eof=True, received=[ev("ConnectionClosed")]),
            ],
            note="the sender of BYE sends nothing more and reads until the peer's BYE or "
            "EOF, ignoring other frames; the receiver answers BYE and closes at once",
        ),
        case(
            "a refused message: a NOTICE says why, then ERROR refused ends it",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":4,"conversation":"","text":"mail me: bob@example.com"}'),
                    [ev("ChatMessage", text="mail me: bob@example.com", message_id=4)],
                ),
                step(
                    "server",
                    f2(
                        "NOTICE",
                        '{"kind":"privacy","message":"you are not allowed to share email '
                        'address with the chat help","id":4}',
                    )
                    + f2(
                        "ERROR",
                        '{"code":"refused","message":"you are not allowed to share email '
                        'address with the chat help","id":4}',
                    ),
                    [
                        ev(
                            "Notice",
                            kind="privacy",
                            message="you are not allowed to share email address with the chat help",
                            message_id=4,
                        ),
                        ev(
                            "Error",
                            code="refused",
                            message="you are not allowed to share email address with the chat help",
                            message_id=4,
                        ),
                    ],
                    state={"client": "chatting", "server": "chatting"},
                ),
            ],
            note="always both, in this order, with the same text: the NOTICE's kind says why "
            "(moderation or privacy), the ERROR ends the message for clients that show "
            "only errors",
        ),
        case(
            "busy: a second CHAT while an answer is in flight",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":1,"conversation":"","text":"first"}')
                    + f2("CHAT", '{"id":2,"conversation":"","text":"second"}'),
                    [ev("ChatMessage", text="first", message_id=1),
                     ev("ChatMessage", text="second", message_id=2)],
                ),
                step(
                    "server",
                    f2("ERROR", '{"code":"busy","message":"an answer is already in progress",'
                       '"id":2}')
                    + f2("DELTA", '{"id":1,"text":"One"}')
                    + f2("END", '{"id":1,"reason":"stop","prompt_tokens":9,"answer_tokens":1,'
                         '"first_token_ms":40,"total_ms":41}'),
                    [
                        ev("Error", code="busy", message="an answer is already in progress",
                           message_id=2),
                        ev("AnswerDelta", text="One", message_id=1),
                        ev("AnswerEnd", message_id=1, prompt_tokens=9, answer_tokens=1,
                           first_token_ms=40, total_ms=41),
                    ],
                    state={"client": "chatting", "server": "chatting"},
                ),
            ],
            note="the server always refuses it; the first answer goes on",
        ),
        case(
            "cancel mid-answer: END counts the tokens produced so far",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("CHAT", '{"id":5,"conversation":"","text":"count to 100"}'),
                    [ev("ChatMessage", text="count to 100", message_id=5)],
                ),
                step(
                    "server",
                    f2("DELTA", '{"id":5,"text":"1 2 3"}'),
                    [ev("AnswerDelta", text="1 2 3", message_id=5)],
                ),
                step("client", f2("CANCEL", '{"id":5}'), [ev("Cancel", message_id=5)]),
                step(
                    "server",
                    f2("END", '{"id":5,"reason":"cancelled","prompt_tokens":0,"answer_tokens":3,'
                       '"first_token_ms":120,"total_ms":300}'),
                    [ev("AnswerEnd", message_id=5, reason="cancelled", answer_tokens=3,
                        first_token_ms=120, total_ms=300)],
                ),
            ],
            note="prompt_tokens is 0 (the model reports it only at the end); answer_tokens "
            "counts what the model produced before it stopped",
        ),
        case(
            "a client's non-fatal ERROR keeps the session open",
            2,
            [
                *v2_login(),
                step(
                    "client",
                    f2("ERROR", '{"code":"internal_error","message":"could not render"}'),
                    [ev("Error", code="internal_error", message="could not render")],
                    state={"client": "chatting", "server": "chatting"},
                ),
                step(
                    "client",
                    f2("CHAT", '{"id":1,"conversation":"","text":"still there?"}'),
                    [ev("ChatMessage", text="still there?", message_id=1)],
                ),
            ],
            note="the receiver logs it and carries on; only a fatal code closes",
        ),
        case(
            "keepalive: the server's PING, the client's PONG",
            2,
            [
                *v2_login(),
                step("server", f2("PING", '{"nonce":"ka-1"}'), [ev("Ping", nonce="ka-1")]),
                step("client", f2("PONG", '{"nonce":"ka-1"}'), [ev("Pong", nonce="ka-1")]),
            ],
            note="sent after 30 s without a frame either way; no frame within "
            "ping_timeout_ms of it closes the connection with idle_timeout",
        ),
        case(
            "unknown END reason reads as an end",
            2,
            [
                *v2_login(),
                step(
                    "server",
                    f2("END", '{"id":1,"reason":"content_filter"}'),
                    received=[ev("AnswerEnd", message_id=1, reason="content_filter")],
                ),
            ],
            note="the reason is passed on unchanged; the answer is over whatever it says",
        ),
        v2_raw_error(
            "duplicate key",
            f2("CHAT", '{"id":1,"text":"hi","text":"bye"}'),
            "protocol_error",
            login=True,
            note="readers disagree on which one wins, so neither does",
        ),
        v2_raw_error(
            "nesting deeper than 32 levels",
            f2("CHAT", nested_bad),
            "protocol_error",
            login=True,
            note="the body object is level 1",
        ),
        case(
            "nesting of 32 levels in an unknown key is accepted",
            2,
            [
                *v2_login(),
                step("client", f2("CHAT", nested_ok),
                     received=[ev("ChatMessage", text="hi", message_id=1)]),
            ],
        ),
    ]


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    for version, cases in ((1, v1_cases()), (2, v2_cases())):
        path = VECTORS / f"v{version}.json"
        path.write_text(json.dumps(cases, indent=1, ensure_ascii=True) + "\n", encoding="ascii")
        print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
