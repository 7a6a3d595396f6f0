"""The Ollama API stand-in is faithful: the official ``ollama`` client (sync and
async) and raw HTTP see what they would see from ollama 0.12.6 (docs/MODEL-APIS.md)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest
from ollama_standin import BUSY_ERROR, MID_STREAM_ERROR, RUNNER_ERROR, UNICODE_ANSWER, say

from tests.fixtures.standin import TESTS_DIR, StandIn


def run(coro):  # no pytest-asyncio here: each async test runs its own loop
    return asyncio.run(asyncio.wait_for(coro, 60))


def raw(standin: StandIn, method: str, path: str, body: object = None
        ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=30)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- simple endpoints ------------------------------------------------------------------
def test_root_version_and_unknown_paths(standin: StandIn) -> None:
    assert raw(standin, "GET", "/")[::2] == (200, b"Ollama is running")
    status, headers, body = raw(standin, "HEAD", "/")
    assert (status, body, headers["content-type"]) == (200, b"", "text/plain; charset=utf-8")
    assert json.loads(raw(standin, "GET", "/api/version")[2]) == {"version": "0.12.6"}
    assert raw(standin, "GET", "/api/nope")[::2] == (404, b"404 page not found")
    assert raw(standin, "GET", "/api/chat")[::2] == (405, b"405 method not allowed")


def test_tags_empty_is_a_list_never_null(standin_factory) -> None:
    s = standin_factory(models="")
    status, headers, body = raw(s, "GET", "/api/tags")
    assert (status, body) == (200, b'{"models":[]}')
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert raw(s, "GET", "/api/ps")[2] == b'{"models":[]}'
    assert ollama.Client(host=s.url).list().models == []


def test_tags_show_ps_shapes(standin: StandIn) -> None:
    client = ollama.Client(host=standin.url)
    (m,) = client.list().models
    assert m.model == "llama3.2:latest" and m.size and len(m.digest or "") == 64
    assert m.details is not None and m.details.quantization_level == "Q4_K_M"
    shown = client.show("llama3.2")
    assert shown.modelinfo and shown.details is not None
    assert client.show("llama3.2:latest").modelinfo == shown.modelinfo
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope")
    assert (err.value.status_code, err.value.error) == (404, "model 'nope' not found")
    assert client.ps().models == []
    client.chat(model="llama3.2", messages=user("hi"))
    (loaded,) = client.ps().models
    assert loaded.model == "llama3.2:latest" and loaded.expires_at is not None


# -- chat / generate ---------------------------------------------------------------------
def test_chat_stream_bytes_are_ollama_ndjson(standin: StandIn) -> None:
    status, headers, body = raw(standin, "POST", "/api/chat",
                                {"model": "llama3.2", "messages": user("hi <b> & co")})
    assert status == 200
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert body.endswith(b"\n") and b"\n\n" not in body
    lines = body.split(b"\n")[:-1]
    assert len(lines) == 21  # 20 tokens + done
    first = json.loads(lines[0])
    assert list(first) == ["model", "created_at", "message", "done"]
    assert first["message"] == {"role": "assistant", "content": "Echo:"}
    assert first["created_at"].endswith("Z")
    assert b" \\u003cb\\u003e" in lines[2] and b"\\u0026" in lines[3]  # Go's HTML escaping
    last = json.loads(lines[-1])
    assert list(last) == ["model", "created_at", "message", "done", "done_reason",
                          "total_duration", "load_duration", "prompt_eval_count",
                          "prompt_eval_duration", "eval_count", "eval_duration"]
    assert last["done"] is True and last["done_reason"] == "stop" and last["eval_count"] == 20
    assert all(b" " not in line.split(b'"content"')[0] for line in lines)  # compact JSON


def test_chat_with_official_sync_client(standin: StandIn) -> None:
    client = ollama.Client(host=standin.url)
    parts = list(client.chat(model="llama3.2", messages=user("hello world"), stream=True))
    text = "".join(p.message.content or "" for p in parts)
    assert text.startswith("Echo: hello world lorem ipsum")
    assert [p.done for p in parts] == [False] * 20 + [True]
    assert parts[-1].eval_count == 20 and parts[-1].prompt_eval_count == 2
    whole = client.chat(model="llama3.2", messages=user("hello world"))
    assert whole.message.content == text and whole.done and whole.eval_count == 20


def test_non_stream_is_one_json_object_without_newline(standin: StandIn) -> None:
    status, headers, body = raw(standin, "POST", "/api/chat", {
        "model": "llama3.2", "stream": False, "messages": user("[standin:tokens=3] x")})
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    assert not body.endswith(b"\n")
    obj = json.loads(body)
    assert obj["message"]["content"] == "Echo: x lorem" and obj["done_reason"] == "stop"


def test_generate_stream_and_not_with_async_client(standin: StandIn) -> None:
    async def go() -> None:
        client = ollama.AsyncClient(host=standin.url)
        parts = [p async for p in await client.generate(model="llama3.2", prompt="why",
                                                        stream=True)]
        assert "".join(p.response for p in parts).startswith("Echo: why lorem")
        assert parts[-1].done and parts[-1].context and parts[-1].eval_count == 20
        whole = await client.generate(model="llama3.2", prompt="why", options={"num_predict": 4})
        assert whole.response == "Echo: why lorem ipsum" and whole.done_reason == "length"
        chat = [p async for p in await client.chat(model="llama3.2", messages=user("a"),
                                                   stream=True)]
        assert chat[-1].done and chat[0].message.content == "Echo:"
    run(go())


def test_load_shortcut_and_missing_model(standin: StandIn) -> None:
    client = ollama.Client(host=standin.url)
    loaded = client.chat(model="llama3.2", messages=[])
    assert loaded.done_reason == "load" and loaded.message.content == ""
    assert client.generate(model="llama3.2", prompt="", keep_alive=0).done_reason == "unload"
    for call in (lambda: client.chat(model="mistral", messages=user("x")),
                 lambda: list(client.generate(model="mistral", prompt="x", stream=True))):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert (err.value.status_code, err.value.error) == (404, "model 'mistral' not found")
    assert raw(standin, "POST", "/api/chat", {"messages": user("x")})[::2] == (
        400, b'{"error":"model is required"}')
    assert raw(standin, "POST", "/api/chat", b"")[::2] == (400, b'{"error":"missing request body"}')


@pytest.mark.parametrize(("directive", "status", "message"), [
    ("status-404", 404, "model 'llama3.2' not found"),
    ("status-503", 503, BUSY_ERROR),
    ("status-500", 500, RUNNER_ERROR),
])
def test_http_error_statuses(standin: StandIn, directive: str, status: int, message: str) -> None:
    client = ollama.Client(host=standin.url)
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="llama3.2", messages=user(f"[standin:{directive}]"), stream=True))
    assert (err.value.status_code, err.value.error) == (status, message)
    _, headers, body = raw(standin, "POST", "/api/chat",
                           {"model": "llama3.2", "messages": user(f"[standin:{directive}]")})
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"error": message}


def test_error_line_mid_stream(standin: StandIn) -> None:
    got: list[str] = []
    with pytest.raises(ollama.ResponseError) as err:
        for p in ollama.Client(host=standin.url).chat(
                model="llama3.2", messages=user("[standin:error-mid-stream]"), stream=True):
            got.append(p.message.content or "")
    assert err.value.status_code == -1 and err.value.error == MID_STREAM_ERROR
    assert got == ["Echo:", " lorem"]
    body = raw(standin, "POST", "/api/chat",
               {"model": "llama3.2", "messages": user("[standin:error-mid-stream]")})[2]
    assert body.endswith(b'\n{"error":"' + MID_STREAM_ERROR.encode() + b'"}\n')
    assert b'"done":true' not in body


def test_cut_and_no_done_as_the_raw_client_sees_them(standin: StandIn) -> None:
    client = ollama.Client(host=standin.url)
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.chat(model="llama3.2", messages=user("[standin:cut-mid-stream]"),
                         stream=True))
    parts = list(client.chat(model="llama3.2", messages=user("[standin:no-done]"), stream=True))
    assert len(parts) == 20 and not any(p.done for p in parts)


def test_unicode_answer_is_ascii_on_the_wire(standin: StandIn) -> None:
    body = raw(standin, "POST", "/api/chat",
               {"model": "llama3.2", "messages": user("[standin:unicode]")})[2]
    body.decode("ascii")  # \u2028 and everything else escaped: splitlines() is safe
    parts = list(ollama.Client(host=standin.url).chat(
        model="llama3.2", messages=user("[standin:unicode]"), stream=True))
    assert "".join(p.message.content or "" for p in parts) == UNICODE_ANSWER
    assert " " * 70 in UNICODE_ANSWER and "\u2028" in UNICODE_ANSWER


def test_say_b64_tokens_are_small(standin: StandIn) -> None:
    text = "Mail me: bob@example.com, caf\u00e9 \U0001F600!"
    parts = list(ollama.Client(host=standin.url).chat(
        model="llama3.2", messages=user("please " + say(text)), stream=True))
    pieces = [p.message.content for p in parts if not p.done]
    assert "".join(pieces) == text
    assert all(1 <= len(p or "") <= 3 for p in pieces) and len(pieces) > len(text) // 3
    assert parts[-1].eval_count == len(pieces)
    assert say(text) == "[standin:say-b64=" + base64.b64encode(text.encode()).decode() + "]"


# -- pull -------------------------------------------------------------------------------
def test_pull_progress_shapes_then_listed(standin_factory) -> None:
    s = standin_factory(models="", pull_seconds=0.3)
    client = ollama.Client(host=s.url)
    parts = list(client.pull("llama3.2", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [p for p in parts if p.status == statuses[1]]
    assert statuses[1].startswith("pulling ") and len(statuses[1]) == len("pulling ") + 12
    assert layer[0].digest == "sha256:" + layer[0].digest[7:] and len(layer[0].digest) == 71
    assert statuses[1][8:] == layer[0].digest[7:19]
    assert layer[0].completed is None and layer[-1].completed == layer[-1].total
    done = [p.completed for p in layer[1:]]
    assert done == sorted(done) and len(done) >= 2
    assert [m.model for m in client.list().models] == ["llama3.2:latest"]
    assert client.pull("qwen3").status == "success"  # stream=False: one JSON object
    assert {m.model for m in client.list().models} == {"llama3.2:latest", "qwen3:latest"}


def test_refused_pull_is_an_error_line(standin_factory) -> None:
    s = standin_factory(models="")
    s.control(refuse_pull=True)
    client = ollama.Client(host=s.url)
    with pytest.raises(ollama.ResponseError) as err:
        list(client.pull("llama3.2", stream=True))
    assert err.value.status_code == -1 and "file does not exist" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3.2")
    assert err.value.status_code == 500
    assert client.list().models == []


# -- control API, concurrency, lifecycle ---------------------------------------------------
def test_control_fault_count_and_request_log(standin: StandIn) -> None:
    standin.control(fault="status-503", fault_count=1)
    client = ollama.Client(host=standin.url)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3.2", messages=user("one"))
    assert err.value.status_code == 503
    assert client.chat(model="llama3.2", messages=user("two")).message.content.startswith(
        "Echo: two")
    reqs = standin.requests()
    assert [r["body"]["messages"][-1]["content"] for r in reqs] == ["one", "two"]
    assert [r["status"] for r in reqs] == [503, 200] and reqs[0]["fault"] == "status-503"
    assert not any(r["aborted_by_client"] for r in reqs)
    standin.control(tokens=3, models=[])
    with pytest.raises(ollama.ResponseError):
        client.chat(model="llama3.2", messages=user("x"))
    standin.reset()
    assert standin.requests() == []
    assert client.chat(model="llama3.2", messages=user("x")).eval_count == 20


def test_client_disconnect_is_recorded(standin_factory) -> None:
    s = standin_factory(delay_ms=20, tokens=500)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    body = json.dumps({"model": "llama3.2", "messages": user("bye")}).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    seen = b""
    while b"Echo:" not in seen:
        chunk = sock.recv(4096)
        assert chunk, "the stand-in closed the stream early"
        seen += chunk
    sock.close()
    (rec,) = s.wait_for_requests(1)
    assert rec["aborted_by_client"] is True and rec["finished"] is not None
    assert rec["tokens_sent"] < 500


def test_many_concurrent_streams(standin_factory) -> None:
    s = standin_factory(delay_ms=5, tokens=30)

    async def one(client: ollama.AsyncClient, i: int) -> str:
        parts = [p async for p in await client.chat(model="llama3.2", messages=user(f"n{i}"),
                                                    stream=True)]
        assert parts[-1].done
        return "".join(p.message.content or "" for p in parts)

    async def go() -> list[str]:
        client = ollama.AsyncClient(host=s.url)
        return await asyncio.gather(*(one(client, i) for i in range(40)))

    texts = run(go())
    assert [t.split()[1] for t in texts] == [f"n{i}" for i in range(40)]


def test_sigterm_exits_zero_and_restart_same_port(standin: StandIn) -> None:
    proc, port = standin.proc, standin.port
    assert proc is not None
    standin.stop()
    assert proc.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    standin.start()
    assert standin.port == port
    assert raw(standin, "GET", "/")[0] == 200


def test_healthcheck_script(standin: StandIn) -> None:
    script = str(Path(TESTS_DIR, "ollama_standin", "healthcheck.py"))
    assert subprocess.run([sys.executable, script, standin.url + "/"], timeout=30).returncode == 0
    standin.stop()
    bad = subprocess.run([sys.executable, script, standin.url + "/"], timeout=30,
                         capture_output=True)
    assert bad.returncode == 1


def test_runs_without_site_packages() -> None:
    """``python -S``: no third-party import sneaks in (it must run in a bare image)."""
    proc = subprocess.Popen([sys.executable, "-S", "-m", "ollama_standin", "--port", "0"],
                            cwd=TESTS_DIR, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on 127.0.0.1:") and "(version 0.12.6)" in line
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
