"""Operations: one port for both protocols, isolation between clients,
structured logs without secrets."""

from __future__ import annotations

import json
import re
import socket

import psutil

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import OriginalV1Client, answer_text

from .clients import V2Client, logged_in


def test_v1_and_v2_clients_share_one_port(live_server):
    v1 = OriginalV1Client(live_server.port)
    v2 = logged_in(live_server.port, USER, PASSWORD)
    assert v1.login(USER, PASSWORD) == (b" username accepted", b" password accepted")
    assert v2.chat("from v2").text.startswith("Echo: from v2")
    assert answer_text(v1.chat("from v1")).startswith("Echo: from v1")
    v1.close()
    v2.close()


def test_a_stuck_client_does_not_delay_others(live_server):
    # One client sends half a header and stops; another stops reading a long
    # answer; a third chats normally meanwhile.
    stuck = socket.create_connection(("127.0.0.1", live_server.port))
    stuck.sendall(b"12")
    reader = logged_in(live_server.port, USER, PASSWORD)
    reader.start_chat("big [standin:tokens=2000]")  # and never read it
    live_server.add_user("carol", "carol's password")
    normal = logged_in(live_server.port, "carol", "carol's password")
    assert normal.chat("hi").text.startswith("Echo: hi")
    normal.close()
    stuck.close()
    reader.close()


def test_json_logs_carry_session_ids_and_no_secrets_or_message_text(server_factory):
    server = server_factory(CHAT_LOG_FORMAT="json")
    client = logged_in(server.port, USER, PASSWORD)
    client.chat("a very private sentence")
    client.close()
    wrong = V2Client(server.port)
    wrong.login(USER, "hunter2-wrong")
    wrong.close()
    server.wait_for_log("connection closed")
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    assert lines, server.log_text()
    events = {line.get("event") for line in lines}
    assert {"connect", "auth_ok", "auth_failed", "turn_end", "disconnect"} <= events
    [turn] = [line for line in lines if line.get("event") == "turn_end"]
    assert turn["model"] == "llama3.2" and turn["answer_tokens"] > 0 and turn["session"]
    assert all("session" in line for line in lines if line.get("event") in {"connect", "auth_ok", "turn_end"})
    text = server.log_text()
    assert PASSWORD not in text and "hunter2-wrong" not in text
    assert "a very private sentence" not in text


def test_moderation_runs_in_a_worker_process_of_the_server(server_factory):
    server = server_factory()
    pid = int(server.wait_for_log(re.compile(r"moderation worker ready \(pid (\d+)\)"), timeout=60).group(1))
    assert server.proc is not None
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert pid in {c.pid for c in children}
    # A long message is checked there (and refused as in the server's own process).
    client = logged_in(server.port, USER, PASSWORD)
    reply = client.chat("tell me more " * 60 + "+1 212 736 5000")
    client.close()
    assert not reply.text and any("phone number" in getattr(e, "message", "") for e in reply.events)


def test_the_moderation_worker_ends_with_a_killed_server(server_factory):
    server = server_factory()
    pid = int(server.wait_for_log(re.compile(r"moderation worker ready \(pid (\d+)\)"), timeout=60).group(1))
    worker = psutil.Process(pid)
    assert server.proc is not None
    server.proc.kill()  # no shutdown: the worker must notice on its own
    server.proc.wait(10)
    worker.wait(timeout=30)  # psutil.TimeoutExpired if it is left behind
    assert not psutil.pid_exists(pid) or worker.status() == psutil.STATUS_ZOMBIE


def test_healthcheck_follows_the_model_state(server_factory, standin):
    standin.control(models=[], pull_seconds=4)
    server = server_factory(wait_ready=False)
    env = {**server.env, "CHAT_PORT": str(server.port)}
    from tests.fixtures.server import run_cli

    pulling = run_cli(["healthcheck"], env)
    assert pulling.returncode == 1 and "not ready" in pulling.stderr
    server.wait_for_log("model ready", timeout=30)
    ready = run_cli(["healthcheck"], env)
    assert ready.returncode == 0, ready.stderr
    server.stop()
    down = run_cli(["healthcheck"], env)
    assert down.returncode == 1 and "cannot reach chat-server" in down.stderr
