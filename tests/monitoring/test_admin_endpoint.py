"""The admin endpoint in-process: only the server's user (and root) can reach
it, it answers one snapshot per request, and it starts safely over what it
finds at its path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server.admin import AdminEndpoint, AdminError, Limits, request, snapshot, start
from chat_server.metrics import BackendState, BackendView, Metrics, Outcome, Protocol, Reason

LIMITS = Limits(max_connections=100, max_parallel=2, model="llama3.2")


class Running:
    """An AdminEndpoint served by an event loop in a thread."""

    def __init__(self, path: Path, m: Metrics) -> None:
        self.path = path
        self.metrics = m
        self.loop = asyncio.new_event_loop()
        self.endpoint: AdminEndpoint | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> AdminEndpoint | None:
        self.endpoint = self.call(start(self.path, LIMITS, self.metrics))
        return self.endpoint

    def stop(self) -> None:
        if self.endpoint is not None:
            self.call(self.endpoint.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (sun_path is 108 bytes), traversable by all,
    so that only the socket's own mode guards it."""
    d = Path(tempfile.mkdtemp(prefix="adm-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def metrics_state() -> Metrics:
    m = Metrics(process_metrics=False)
    m.server_started("9.9.9", "llama3.2")
    m.watch_backends(lambda: [BackendView("default", BackendState.READY, "llama3.2")])
    m.connection_opened("s1", Protocol.V2)
    m.login_succeeded("s1", "alice")
    m.message_received("s1")
    m.message_received("s1")
    m.message_outcome(Outcome.REFUSED, Reason.BANNED_WORD, session="s1")
    m.connection_opened("s2", Protocol.V1)  # not logged in yet
    return m


@pytest.fixture
def running(short_dir: Path, metrics_state: Metrics) -> Iterator[Running]:
    r = Running(short_dir / "admin.sock", metrics_state)
    assert r.start() is not None
    yield r
    r.stop()


def test_socket_is_private_to_the_servers_user(running: Running):
    st = running.path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    # Nothing else was left in the directory (the temporary bind name is gone).
    assert [p.name for p in running.path.parent.iterdir()] == ["admin.sock"]


def test_snapshot_over_the_socket(running: Running):
    snap = request(running.path)
    assert snap["version"] == 1
    assert snap["server"]["version"] == "9.9.9" and snap["server"]["pid"] == os.getpid()
    assert snap["connections"]["open"] == 2
    assert snap["connections"]["by_protocol"] == {"v1": 1, "v2": 1}
    (alice,) = snap["users"]
    assert alice["user"] == "alice" and alice["protocol"] == "v2"
    assert alice["messages"] == 2 and alice["refused"] == 1 and alice["since"].endswith("Z")
    assert snap["queue"] == {"waiting": 0, "in_flight": 0, "max_parallel": 2}
    assert snap["backends"][0]["state"] == "ready"
    assert snap["totals"]["messages"]["refused"] == 1


def test_unknown_command_gets_an_error(running: Running):
    with pytest.raises(AdminError, match="unknown command"):
        request(running.path, "shutdown")


#: An interpreter another user may run (the test's own may live under /root).
SYSTEM_PYTHON = "/usr/bin/python3"


def run_as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, "-c", code], user=65534, group=65534,
                          capture_output=True, text=True, timeout=30, cwd="/")


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root (to act as another user) and /usr/bin/python3")


@needs_root
def test_another_user_cannot_connect(running: Running):
    code = (f"import socket; s = socket.socket(socket.AF_UNIX); "
            f"s.connect({str(running.path)!r})")
    result = run_as_nobody(code)
    assert result.returncode != 0 and "PermissionError" in result.stderr


@needs_root
def test_another_user_is_refused_even_if_the_mode_is_loosened(running: Running):
    # Defence in depth: the peer's uid is checked, not only the file mode.
    running.path.chmod(0o666)
    code = "\n".join([
        "import socket",
        "s = socket.socket(socket.AF_UNIX)",
        "s.settimeout(5)",
        f"s.connect({str(running.path)!r})",
        "try:",
        "    s.sendall(b'status\\n')",
        "    print(repr(s.recv(100)))",
        "except (BrokenPipeError, ConnectionResetError):",
        "    print('closed')",
    ])
    result = run_as_nobody(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("b''", "closed")  # connected, but no answer


def test_a_stale_socket_is_replaced(short_dir: Path, metrics_state: Metrics):
    path = short_dir / "admin.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a killed server leaves
    r = Running(path, metrics_state)
    try:
        assert r.start() is not None
        assert request(path)["version"] == 1
    finally:
        r.stop()
    assert not path.exists()  # removed at close


def test_a_live_endpoint_is_not_taken_over(running: Running, metrics_state: Metrics):
    second = Running(running.path, metrics_state)
    try:
        assert second.start() is None  # logged, the server goes on without it
    finally:
        second.stop()
    assert request(running.path)["version"] == 1


def test_a_regular_file_at_the_path_is_left_alone(short_dir: Path, metrics_state: Metrics):
    path = short_dir / "admin.sock"
    path.write_text("important")
    r = Running(path, metrics_state)
    try:
        assert r.start() is None
    finally:
        r.stop()
    assert path.read_text() == "important"


def test_a_path_too_long_for_a_socket_is_a_clear_error(short_dir: Path, metrics_state: Metrics):
    endpoint = AdminEndpoint(short_dir / ("x" * 120) / "admin.sock", lambda: {})
    with pytest.raises(AdminError, match="longer than 107 bytes"):
        asyncio.run(endpoint.start())


def test_a_missing_directory_is_created_private(short_dir: Path, metrics_state: Metrics):
    path = short_dir / "run" / "admin.sock"
    r = Running(path, metrics_state)
    try:
        assert r.start() is not None
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        r.stop()


def test_request_without_a_server_says_so(short_dir: Path):
    with pytest.raises(AdminError, match="no chat-server is running"):
        request(short_dir / "admin.sock")


def test_snapshot_has_no_field_for_secrets(metrics_state: Metrics):
    snap = snapshot(metrics_state, LIMITS)
    text = json.dumps(snap)
    for word in ("password", "text", "address", "peer", "content"):
        assert word not in text
