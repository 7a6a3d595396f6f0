"""`chat-server status` against a real server process, through its local admin
endpoint: who is logged in, the queue, the model; the endpoint is private to the
server's user and never shows a password or message text."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pexpect
import pytest
from chatcore.protocol import Cancel

from tests.fixtures.server import PASSWORD, REPO, LiveServer
from tests.fixtures.v1client import OriginalV1Client
from tests.server.clients import V2Client, logged_in

pytestmark = pytest.mark.timeout(180)

SLOW = "[standin:tokens=400][standin:delay-ms=25] a long answer marker-message-77"


def socket_of(server: LiveServer) -> Path:
    return Path(server.env["CHAT_DB"]).parent / "admin.sock"


def status(server: LiveServer, *args: str):
    return server.cli("status", *args)


@pytest.fixture
def busy_server(server_factory):
    """alice's answer is generating, bob's waits for the only model slot, carol
    is logged in over v1 and idle."""
    server = server_factory(CHAT_MAX_PARALLEL="1",
                            users={"alice": PASSWORD, "bob": PASSWORD, "carol": PASSWORD})
    alice = logged_in(server.port, "alice", PASSWORD)
    bob = logged_in(server.port, "bob", PASSWORD)
    carol = OriginalV1Client(server.port)
    carol.login("carol", PASSWORD)
    a = alice.start_chat(SLOW)
    alice.collect(a, until=lambda e: getattr(e, "text", None))
    b = bob.start_chat(SLOW)
    bob.collect(b, until=lambda e: getattr(e, "position", None) == 1)
    yield server
    alice.send(Cancel(a))
    bob.send(Cancel(b))
    for c in (alice, bob, carol):
        c.close()


def test_status_once_shows_who_is_logged_in_and_the_queue(busy_server: LiveServer):
    result = status(busy_server, "--once")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 open (v1 1, v2 2) · 3 logged in" in out
    assert "1 waiting · 1/1 generating" in out
    assert "ollama (llama3.2): ready 1/1 generating" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("alice", "bob", "carol")}
    assert set(rows) == {"alice", "bob", "carol"}
    assert rows["alice"][1] == "v2" and rows["carol"][1] == "v1"
    assert rows["alice"][-2] == "1" and rows["carol"][-2] == "0"  # messages sent


def test_status_json_for_scripts(busy_server: LiveServer):
    result = status(busy_server, "--json")
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert snap["queue"] == {"waiting": 1, "in_flight": 1, "max_parallel": 1}
    assert {u["user"] for u in snap["users"]} == {"alice", "bob", "carol"}
    assert snap["server"]["pid"] == busy_server.pid
    assert snap["server"]["uptime_seconds"] >= 0
    assert snap["backends"] == [{"name": "ollama", "state": "ready", "model": "llama3.2",
                                 "detail": "", "in_flight": 1, "max_parallel": 1}]


def test_status_never_shows_a_password_or_message_text(busy_server: LiveServer):
    wrong = V2Client(busy_server.port)
    wrong.login("alice", "marker-password-99")
    wrong.close()
    out = status(busy_server, "--json").stdout + status(busy_server, "--once").stdout
    for secret in (PASSWORD, "marker-password-99", "marker-message-77", "127.0.0.1"):
        assert secret not in out


def test_admin_socket_is_private_to_the_servers_user(live_server: LiveServer):
    path = socket_of(live_server)
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_status_without_a_running_server_says_so(live_server: LiveServer):
    live_server.stop()
    assert not socket_of(live_server).exists()  # removed at shutdown
    result = status(live_server, "--once")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("chat-server status: no chat-server is running")
    assert result.stderr.count("\n") == 1


def test_a_socket_left_by_a_killed_server_is_replaced_at_start(live_server: LiveServer):
    live_server.stop(signal.SIGKILL)
    assert socket_of(live_server).exists()
    live_server.start()
    assert status(live_server, "--json").returncode == 0


def test_configured_socket_path_is_used_by_server_and_status(server_factory, tmp_path):
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    server = server_factory(CHAT_ADMIN_SOCKET=str(short / "chat.sock"))
    assert (short / "chat.sock").exists() and not socket_of(server).exists()
    result = status(server, "--json")
    assert result.returncode == 0, result.stderr
    server.stop()


@pytest.mark.parametrize("inherited_sigint", ["default", "ignored"])
def test_live_view_refreshes_in_a_terminal_until_ctrl_c(live_server: LiveServer,
                                                        inherited_sigint: str):
    # "ignored": started by something that ignores SIGINT (a script's
    # background job, nohup): Ctrl-C must still leave the view.
    env = {**live_server.env, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}

    def set_inherited_sigint() -> None:
        if inherited_sigint == "ignored":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    child = pexpect.spawn(sys.executable, ["-m", "chat_server", "status", "--interval", "0.3"],
                          env=env, cwd=str(REPO), encoding="utf-8", timeout=20,
                          dimensions=(40, 120), preexec_fn=set_inherited_sigint)
    try:
        child.expect("No one is logged in")
        client = logged_in(live_server.port, "alice", PASSWORD)
        child.expect("alice")  # a later refresh shows the new login
        child.expect("refreshing every 0.3 s")
        child.sendintr()
        child.expect(pexpect.EOF)
        client.close()
    finally:
        child.close()
    assert child.exitstatus == 0
