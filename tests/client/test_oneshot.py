"""One-shot mode (``chat-client --message``) against a real chat-server and the stand-in."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

from chatcore.privacy import EMAIL_NOTICE, PHONE_NOTICE

from tests.client.conftest import CHAT_CLIENT, REPO, client_env, run_client, server_args
from tests.fixtures.server import PASSWORD, USER


def _oneshot(server: object, message: str, *extra: str, password: str = PASSWORD,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_client([*server_args(server), "--user", USER, "--message", message, *extra],
                      env=client_env(CHAT_PASSWORD=password), stdin=stdin)


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    return lines[0]


def _banned_word() -> str:
    for line in (REPO / "cuss_words.txt").read_text().splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            return word
    raise AssertionError("cuss_words.txt lists no word")


def test_success_prints_the_answer_and_exits_0(live_server):
    r = _oneshot(live_server, "hello there")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: hello there")
    assert r.stdout.endswith("\n")
    assert r.stderr == ""
    [request] = live_server.standin.requests()
    assert request["body"]["messages"][-1]["content"] == "hello there"


def test_message_from_stdin(live_server):
    r = _oneshot(live_server, "-", stdin="a question\non two lines\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: a question")
    [request] = live_server.standin.requests()
    assert request["body"]["messages"][-1]["content"] == "a question\non two lines"


def test_password_stdin(live_server):
    env = client_env()  # no CHAT_PASSWORD
    r = run_client([*server_args(live_server), "--user", USER, "--password-stdin",
                    "--message", "via stdin"], env=env, stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: via stdin")


def test_password_stdin_then_message_stdin(live_server):
    r = run_client([*server_args(live_server), "--user", USER, "--password-stdin",
                    "--message", "-"], env=client_env(), stdin=f"{PASSWORD}\nthe message\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: the message")


def test_environment_fallbacks(live_server):
    env = client_env(CHAT_SERVER_HOST=live_server.host, CHAT_SERVER_PORT=str(live_server.port),
                     CHAT_USER=USER, CHAT_PASSWORD=PASSWORD)
    r = run_client(["--message", "from the environment"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: from the environment")


def test_bad_password_exits_3_with_one_line(live_server):
    r = _oneshot(live_server, "hello", password="wrong password")
    assert r.returncode == 3
    line = _one_line(r.stderr)
    assert "authentication failed" in line
    assert "wrong password" not in r.stderr + r.stdout
    assert r.stdout == ""
    assert live_server.standin.requests() == []


def test_privacy_refusal_exits_4_and_nothing_reaches_the_server(live_server):
    r = _oneshot(live_server, "write to bob.smith@example.com please")
    assert r.returncode == 4
    assert _one_line(r.stderr) == EMAIL_NOTICE
    r = _oneshot(live_server, "call me on 9876543210")
    assert r.returncode == 4
    assert _one_line(r.stderr) == PHONE_NOTICE
    assert r.stdout == ""
    assert live_server.standin.requests() == []
    log = live_server.log_text()
    assert "bob.smith" not in log and "9876543210" not in log


def test_server_moderation_refusal_exits_4(live_server):
    r = _oneshot(live_server, f"you {_banned_word()} machine")
    assert r.returncode == 4, r.stderr
    line = _one_line(r.stderr)
    assert "cuss" in line.lower() or "refused" in line.lower()
    assert live_server.standin.requests() == []


def test_model_error_exits_5(live_server):
    r = _oneshot(live_server, "break please [standin:error-mid-stream]")
    assert r.returncode == 5
    line = _one_line(r.stderr)
    assert "error" in line.lower()
    assert "Traceback" not in r.stderr


def _slow_answer(server: object) -> subprocess.Popen[str]:
    """``--message`` asking for a 200-token answer at 5 tokens a second."""
    return subprocess.Popen(
        [CHAT_CLIENT, *server_args(server), "--user", USER,
         "--message", "go slowly [standin:delay-ms=200] [standin:tokens=200]"],
        env=client_env(CHAT_PASSWORD=PASSWORD), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, cwd=REPO,
    )


def test_server_killed_mid_answer_exits_6(live_server):
    proc = _slow_answer(live_server)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        # The answer streams: its first word is on stdout long before its end.
        assert proc.stdout.read(5) == "Echo:"
        live_server.stop(signal.SIGKILL)
        rest = proc.stdout.read()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 6
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(rest.split()) < 199  # only part of the 200-token answer arrived
    assert "lost" in _one_line(stderr) or "closed" in _one_line(stderr)


def test_account_disabled_mid_answer_exits_3_without_reconnecting(server_factory):
    server = server_factory(CHAT_ACCOUNT_CHECK_INTERVAL="0.2")
    proc = _slow_answer(server)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(5) == "Echo:"
        assert server.cli("users", "disable", USER).returncode == 0
        proc.stdout.read()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    line = _one_line(stderr)
    assert "session was ended" in line and "disabled or removed" in line
    # It did not try to log in again (with its token or otherwise).
    assert server.log_text().count("event=auth_ok") == 1


def test_connection_refused_exits_6(live_server):
    port = live_server.port
    live_server.stop()
    r = run_client(["--host", "127.0.0.1", "--port", str(port), "--user", USER,
                    "--message", "hi"], env=client_env(CHAT_PASSWORD=PASSWORD))
    assert r.returncode == 6
    assert "cannot connect" in _one_line(r.stderr)


def test_usage_errors_exit_2(tmp_path: Path):
    # No user, no password, a bad port, an empty message: all before connecting.
    r = run_client(["--port", "1", "--message", "hi"], env=client_env(CHAT_PASSWORD="x"))
    assert r.returncode == 2 and "user" in _one_line(r.stderr)
    r = run_client(["--port", "1", "--user", "u", "--message", "hi"], env=client_env())
    assert r.returncode == 2 and "password" in _one_line(r.stderr)
    r = run_client(["--port", "nope", "--user", "u", "--message", "hi"],
                   env=client_env(CHAT_PASSWORD="x"))
    assert r.returncode == 2 and "port" in _one_line(r.stderr)
    r = run_client(["--user", "u", "--message", "-"], env=client_env(CHAT_PASSWORD="x"), stdin="")
    assert r.returncode == 2 and "empty" in _one_line(r.stderr)
    r = run_client(["--bogus"])
    assert r.returncode == 2 and "usage error" in _one_line(r.stderr)


def test_help_documents_the_exit_codes():
    r = run_client(["--help"])
    assert r.returncode == 0
    for code in ("0", "2", "3", "4", "5", "6"):
        assert f"\n  {code}  " in r.stdout
    assert "CHAT_PASSWORD" in r.stdout and "--password-stdin" in r.stdout


def test_v1_mode_against_our_server(live_server):
    r = _oneshot(live_server, "old school", "--protocol", "v1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: old school")
    r = _oneshot(live_server, "old school", "--protocol", "v1", password="nope")
    assert r.returncode == 3


def test_v1_mode_model_error_against_our_server(live_server):
    r = _oneshot(live_server, "boom [standin:error-mid-stream]", "--protocol", "v1")
    assert r.returncode == 5
    _one_line(r.stderr)


def test_two_clients_at_once(live_server):
    # Each one-shot run is its own connection and conversation.
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(_oneshot(live_server, f"q{i}")))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.returncode for r in results) == [0, 0]
    assert {r.stdout.split()[1] for r in results} == {"q0", "q1"}
