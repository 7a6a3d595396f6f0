"""`chat-server status` rendering, from a snapshot: what an operator reads."""

from __future__ import annotations

import io

from chat_server.status import duration, render, run
from rich.console import Console

SNAPSHOT = {
    "version": 1,
    "server": {"version": "0.1.0", "pid": 42, "started_at": "2025-01-02T03:04:05Z",
               "uptime_seconds": 7384.0, "stopping": False, "model": "llama3.2"},
    "connections": {"open": 3, "logged_in": 2, "max": 10000, "by_protocol": {"v1": 1, "v2": 2},
                    "by_transport": {"plain": 3}},
    "users": [
        {"user": "alice", "session": "a1", "protocol": "v2", "transport": "plain",
         "since": "2025-01-02T03:10:00Z", "connected_seconds": 65.0, "messages": 12, "refused": 0},
        {"user": "[bold]mallory[/bold]", "session": "b2", "protocol": "v1", "transport": "plain",
         "since": "2025-01-02T03:11:00Z", "connected_seconds": 5.0, "messages": 3, "refused": 2},
    ],
    "queue": {"waiting": 4, "in_flight": 2, "max_parallel": 2},
    "backends": [{"name": "default", "state": "unavailable", "model": "llama3.2",
                  "detail": "The model service is not reachable right now.",
                  "in_flight": None, "max_parallel": None}],
    "totals": {"messages": {"answered": 10, "refused": 2, "failed": 1},
               "logins": {"success": 5, "failure": 3, "throttled": 1}},
}


def text_of(snapshot: dict, **kwargs) -> str:
    out = io.StringIO()
    Console(file=out, width=160, highlight=False).print(render(snapshot, **kwargs))
    return out.getvalue()


def test_view_shows_uptime_connections_users_queue_and_model():
    text = text_of(SNAPSHOT)
    assert "up 2h 03m" in text
    assert "3 open (v1 1, v2 2) · 2 logged in · limit 10000" in text
    assert "4 waiting · 2/2 generating" in text
    assert "default (llama3.2): unavailable - The model service is not reachable" in text
    assert "10 answered" in text and "1 failed" in text
    assert "5 ok · 3 failed · 1 throttled" in text
    alice = next(line for line in text.splitlines() if "alice" in line)
    assert "v2" in alice and "2025-01-02 03:10:00Z" in alice and "1m 05s" in alice and "12" in alice


def test_a_user_name_is_shown_literally_never_as_markup():
    assert "[bold]mallory[/bold]" in text_of(SNAPSHOT)


def test_long_lists_are_cut_with_a_count():
    many = dict(SNAPSHOT, users=[dict(SNAPSHOT["users"][0], user=f"u{i}") for i in range(50)])
    text = text_of(many, max_rows=10)
    assert "u9 " in text and "u10 " not in text
    assert "and 40 more" in text


def test_nobody_logged_in_is_said_plainly():
    assert "No one is logged in." in text_of(dict(SNAPSHOT, users=[]))


def test_durations():
    assert [duration(s) for s in (0, 59, 61, 3600, 3661, 90000)] == [
        "0s", "59s", "1m 01s", "1h 00m", "1h 01m", "1d 01h"]


def test_without_a_server_status_exits_1_with_one_line(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = run(tmp_path / "admin.sock", once=True, as_json=False, interval=1, out=out, err=err)
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and "no chat-server is running" in err.getvalue()


def test_each_backend_shows_its_state_and_load():
    snap = dict(SNAPSHOT, backends=[
        {"name": "gpu1", "state": "ready", "model": "llama3.2", "detail": "", "in_flight": 1,
         "max_parallel": 2},
        {"name": "cpu", "state": "pulling", "model": "", "detail": "Downloading (40%).",
         "in_flight": 0, "max_parallel": 1},
    ])
    text = text_of(snap)
    assert "gpu1 (llama3.2): ready 1/2 generating · cpu: pulling 0/1 generating - Downloading (40%)." in text
