"""
docs/PROTOCOL.md §11 (the worked example) is what the server really sends.

The example is recorded from a real session: a real ``chat-server`` process,
the Ollama stand-in, a client on a real socket. :func:`record` plays that
session; the test compares the recording with the blocks in the spec, and
``python -m tests.server.test_spec_example --write`` rewrites the blocks from a
fresh recording when the server changes on purpose.

What may differ between two runs, and is normalised here (the spec names
exactly these fields, §11):

* ``AUTH_RESULT``: ``token`` (a fresh random session token every login);
* ``END``: ``prompt_tokens``, ``answer_tokens``, ``first_token_ms``, ``total_ms``;
* ``PING``/``PONG``: ``nonce`` (the server picks it);
* how the answer is cut into ``DELTA`` frames (it follows the model's tokens
  and their timing): the texts of consecutive DELTAs are joined.

Every other byte must be identical, and every documented line must be a
well-formed frame (its LENGTH counts the body's bytes, the padding fills 64).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcore.protocol import V1_TERMINATOR, Cancel, encode_v1_frame

from tests.fixtures.server import LiveServer, make_server_env
from tests.fixtures.standin import StandIn
from tests.fixtures.v1client import OriginalV1Client

from .clients import logged_in, raw_v2_frame, wait_until

SPEC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
V2_BEGIN, V2_END = "<!-- example-v2:start -->", "<!-- example-v2:end -->"
V1_BEGIN, V1_END = "<!-- example-v1:start -->", "<!-- example-v1:end -->"

USER, PASSWORD = "alice", "correct horse"
OTHER, OTHER_PASSWORD = "bob", "battery staple"
QUESTION = "Wie spät ist es?"
#: The server of the example: defaults, except one generation at a time (so
#: the message waits behind another user's) and a short keepalive interval.
SERVER_ENV = {"CHAT_MAX_PARALLEL": "1", "CHAT_PING_INTERVAL": "2"}
VARYING = {"AUTH_RESULT": ("token",),
           "END": ("prompt_tokens", "answer_tokens", "first_token_ms", "total_ms"),
           "PING": ("nonce",), "PONG": ("nonce",)}


@dataclass
class Frame:
    direction: str  # "C→S" or "S→C"
    data: bytes

    @property
    def type(self) -> str:
        return self.data[:64].split(b" ", 1)[0].decode()

    @property
    def body(self) -> bytes:
        return self.data[64:]


# -- recording ------------------------------------------------------------------


class RecordingClient:
    """A v2 client on a raw socket that records every frame both ways."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.frames: list[Frame] = []

    def send(self, frame_type: str, body: str) -> None:
        data = frame_type.encode() + b" " + str(len(body.encode())).encode()
        data = data.ljust(64) + body.encode()
        self.frames.append(Frame("C→S", data))
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"server closed after {buf!r}")
            buf += chunk
        return buf

    def receive(self) -> tuple[str, dict[str, Any]]:
        header = self._exactly(64)
        frame_type, length = header.split()
        body = self._exactly(int(length))
        self.frames.append(Frame("S→C", header + body))
        return frame_type.decode(), json.loads(body)

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""


def _record_v2(server: LiveServer, standin: StandIn) -> list[Frame]:
    # Another user's long answer holds the only slot, so ours has to wait.
    bob = logged_in(server.port, OTHER, OTHER_PASSWORD)
    bobs = bob.start_chat("a long story [standin:tokens=400] [standin:delay-ms=25]")
    wait_until(lambda: standin.requests())
    standin.control(tokens=5, delay_ms=80)  # our answer: "Echo: Wie spät ist es?"

    c = RecordingClient(server.port)
    c.send("HELLO", '{"versions":[2],"agent":"chat-client/0.1.0"}')
    assert c.receive()[0] == "HELLO"
    c.send("AUTH", json.dumps({"user": USER, "password": PASSWORD}, separators=(",", ":")))
    assert c.receive()[1]["ok"] is True
    c.send("CHAT", json.dumps({"id": 1, "conversation": "c1", "text": QUESTION},
                              separators=(",", ":"), ensure_ascii=False))
    frame_type, body = c.receive()
    assert (frame_type, body.get("kind")) == ("NOTICE", "queue"), body
    bob.send(Cancel(message_id=bobs))  # the slot comes free
    while frame_type != "END":
        frame_type, body = c.receive()
    bob.close()
    frame_type, body = c.receive()  # the keepalive, after 2 s of silence
    assert frame_type == "PING", (frame_type, body)
    c.send("PONG", json.dumps({"nonce": body["nonce"]}, separators=(",", ":")))
    c.send("BYE", '{"reason":"quit"}')
    assert c.receive()[0] == "BYE"
    assert c.closed_by_server()
    c.sock.close()
    return c.frames


def _record_v1(server: LiveServer, standin: StandIn) -> list[tuple[str, bytes]]:
    standin.control(tokens=5, delay_ms=0)
    c = OriginalV1Client(server.port)
    out: list[tuple[str, bytes]] = []
    for text in (USER, PASSWORD):
        c.send_frame(text)
        out.append(("C→S", encode_v1_frame(text.encode())))
        reply = c.recv(64)
        out.append(("S→C", reply))
    c.send_frame(QUESTION)
    out.append(("C→S", encode_v1_frame(QUESTION.encode())))
    while True:
        chunk = c.read_chunk()
        out.append(("S→C", chunk))
        if chunk == V1_TERMINATOR:
            break
    c.send_frame("<GoodBye>")
    out.append(("C→S", encode_v1_frame(b"<GoodBye>")))
    out.append(("S→C", c.recv(2048)))
    c.close()
    return out


def record(workdir: Path) -> tuple[list[Frame], list[tuple[str, bytes]]]:
    """Run the example sessions against a fresh server and stand-in."""
    standin = StandIn(pull_seconds=0.3).start()
    server = LiveServer(env=make_server_env(workdir, standin.url, **SERVER_ENV),
                        log_path=workdir / "server.log", standin=standin)
    try:
        server.add_user(USER, PASSWORD)
        server.add_user(OTHER, OTHER_PASSWORD)
        server.start()
        return _record_v2(server, standin), _record_v1(server, standin)
    finally:
        server.stop()
        standin.stop()


# -- the blocks in the spec -------------------------------------------------------------

_LINE = re.compile(r"^(C→S|S→C)  ([A-Z_]+) (\d+)␠×(\d+) +(\{.*\})$")


def format_v2(frames: list[Frame]) -> str:
    lines = []
    for f in frames:
        header = f.data[:64].rstrip(b" ").decode()
        pad = 64 - len(header)
        lines.append(f"{f.direction}  {f'{header}␠×{pad}':<19}  {f.body.decode()}")
    return "\n".join(["```", *lines, "     (both sides close)", "```"])


def parse_v2(block: str) -> list[Frame]:
    frames = []
    for line in block.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        direction, frame_type, length, pad, body = m.groups()
        header = f"{frame_type} {length}"
        # Each documented line is a well-formed frame on its own.
        assert int(length) == len(body.encode()), f"LENGTH is not the body's size: {line}"
        assert int(pad) == 64 - len(header), f"padding does not fill 64 bytes: {line}"
        frames.append(Frame(direction, header.encode() + b" " * int(pad) + body.encode()))
    return frames


def _show_v1(data: bytes) -> str:
    text = data.decode("utf-8")
    stripped = text.rstrip(" ")
    pad = len(text) - len(stripped)
    if not stripped:
        return f"␠×{pad}"
    if "\n" in text or '"' in text:
        raise ValueError(f"can't show {data!r}")
    return stripped + (f"␠×{pad}" if pad else "")


def format_v1(exchange: list[tuple[str, bytes]]) -> str:
    lines = []
    for direction, data in exchange:
        if direction == "C→S":
            header, body = data[:64], data[64:]
            length = header.rstrip(b" ").decode()
            lines.append(f"{direction}  {f'{length}␠×{64 - len(length)}':<7}  {body.decode()}")
        elif len(data) == 64:
            lines.append(f"{direction}  {_show_v1(data)}")
        else:
            lines.append(f'{direction}  "{data.decode()}"   ({len(data)} bytes, bare)')
    return "\n".join(["```", *lines, "```"])


def _block(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def _normalised(frames: list[Frame]) -> list[tuple[str, str, Any]]:
    """(direction, TYPE, what must match): raw bytes, or the JSON with the
    varying fields blanked, or for DELTAs the joined answer text."""
    out: list[tuple[str, str, Any]] = []
    for f in frames:
        if f.type == "DELTA":
            body = json.loads(f.body)
            if out and out[-1][1] == "DELTA" and out[-1][2][0] == body["id"]:
                out[-1] = (f.direction, "DELTA", (body["id"], out[-1][2][1] + body["text"]))
            else:
                out.append((f.direction, "DELTA", (body["id"], body["text"])))
        elif f.type in VARYING:
            pairs = json.loads(f.body, object_pairs_hook=list)
            blank = [(k, "<varies>" if k in VARYING[f.type] else v) for k, v in pairs]
            out.append((f.direction, f.type, blank))
        else:
            out.append((f.direction, f.type, f.data))
    return out


def write_spec(frames: list[Frame], v1: list[tuple[str, bytes]]) -> None:
    text = SPEC.read_text()
    for begin, end, block in ((V2_BEGIN, V2_END, format_v2(frames)),
                              (V1_BEGIN, V1_END, format_v1(v1))):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block}\n{end}{tail}"
    SPEC.write_text(text)


# -- the test ---------------------------------------------------------------------------


def test_worked_example_is_what_the_server_sends(tmp_path: Path) -> None:
    frames, v1 = record(tmp_path)
    spec = SPEC.read_text()
    documented = parse_v2(_block(spec, V2_BEGIN, V2_END))
    hint = "the server and docs/PROTOCOL.md §11 drifted: python -m tests.server.test_spec_example --write"
    assert _normalised(documented) == _normalised(frames), hint
    assert _block(spec, V1_BEGIN, V1_END) == format_v1(v1), hint
    # The hex dump above the example is the first frame, byte for byte.
    dump = spec.split("as hex.", 1)[1].split("```", 2)[1]
    hex_bytes = bytes.fromhex("".join(line[6:54] for line in dump.strip().splitlines()))
    assert hex_bytes == documented[0].data


def test_the_spec_example_checker_catches_drift() -> None:
    """The comparison is not vacuous: a changed byte or field is a difference."""
    hello = Frame("S→C", raw_v2_frame("AUTH_RESULT", {"ok": True, "user": "a", "message": "welcome"}))
    other = Frame("S→C", raw_v2_frame("AUTH_RESULT", {"ok": True, "user": "a", "message": "hi"}))
    assert _normalised([hello]) != _normalised([other])
    t1, t2 = ({"ok": True, "user": "a", "message": "welcome", "token": t} for t in ("x" * 43, "y" * 43))
    assert _normalised([Frame("S→C", raw_v2_frame("AUTH_RESULT", t1))]) == _normalised(
        [Frame("S→C", raw_v2_frame("AUTH_RESULT", t2))])  # a token varies ...
    assert _normalised([Frame("S→C", raw_v2_frame("AUTH_RESULT", t1))]) != _normalised(
        [hello])  # ... but must be there
    end = Frame("S→C", raw_v2_frame("END", {"id": 1, "reason": "stop", "total_ms": 5}))
    end_later = Frame("S→C", raw_v2_frame("END", {"id": 1, "reason": "stop", "total_ms": 9}))
    end_other = Frame("S→C", raw_v2_frame("END", {"id": 1, "reason": "length", "total_ms": 5}))
    assert _normalised([end]) == _normalised([end_later])
    assert _normalised([end]) != _normalised([end_other])
    d = [Frame("S→C", raw_v2_frame("DELTA", {"id": 1, "text": t})) for t in ("a", "b", "ab")]
    assert _normalised(d[:2]) == _normalised(d[2:])
    assert parse_v2(format_v2([hello, end])) == [hello, end]


if __name__ == "__main__":
    if "--write" not in sys.argv[1:]:
        sys.exit("usage: python -m tests.server.test_spec_example --write")
    with tempfile.TemporaryDirectory() as tmp:
        recorded = record(Path(tmp))
    write_spec(*recorded)
    print(f"rewrote the worked examples in {SPEC}")
