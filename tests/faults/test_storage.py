"""
Storage faults against a real server process, on each engine.

A turn is committed before its END goes out: SIGKILL right after END loses
nothing, on SQLite and on PostgreSQL.

The SQLite file becomes unwritable while the server runs.

We run as root, so file modes do not stop writes. Two real mechanisms:

- ``chattr +i`` (the ext4 immutable flag: even root's writes fail with EPERM)
  on ``chat.db`` and ``chat.db-wal``; SQLite then reports "disk I/O error".
  Not on ``chat.db-shm``: SQLite writes that file through mmap, and a write to
  an immutable mapped page is a SIGBUS that kills the process (measured; no
  server can survive that, so it is not tested). Skipped where chattr does not
  work (tmpfs, overlayfs without the flag, no CAP_LINUX_IMMUTABLE).
- another process holding an EXCLUSIVE transaction (an operator's ``sqlite3``
  shell left in ``BEGIN EXCLUSIVE``): the server waits its busy timeout (5 s)
  and gets "database is locked".

Either way: answers still stream, the v2 user is told the turn was not saved,
the server keeps serving, and once the file is writable again turns are stored.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatcore.protocol import AnswerDelta, AnswerEnd, NoticeKind

from tests.fixtures.postgres import database_env
from tests.server.clients import logged_in

from ._helpers import USERS, Chatter, assert_acknowledged_turns_stored, history_by_user

pytestmark = pytest.mark.faults


def _chattr(flag: str, *paths: Path) -> bool:
    r = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    return r.returncode == 0


@contextlib.contextmanager
def immutable(db: Path) -> Iterator[None]:
    files = [db, db.with_name(db.name + "-wal")]
    files = [f for f in files if f.exists()]
    if not _chattr("+i", *files):
        pytest.skip("chattr +i does not work on this filesystem")
    try:
        yield
    finally:
        assert _chattr("-i", *files), "could not clear the immutable flag"


@contextlib.contextmanager
def exclusively_locked(db: Path) -> Iterator[None]:
    other = sqlite3.connect(db, isolation_level=None, timeout=1)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("how", ["immutable", "exclusive_lock"])
def test_database_becomes_unwritable_then_writable_again(server_factory, how: str) -> None:
    server = server_factory(users=USERS, CHAT_MAX_PARALLEL="8")
    db = Path(server.env["CHAT_DB"])
    v2 = Chatter(server, "user1", "v2")
    v1 = Chatter(server, "user0", "v1")
    try:
        before = [v2.chat("before"), v1.chat("before v1")]
        assert all(o.acknowledged for o in before), before
        blocker = immutable(db) if how == "immutable" else exclusively_locked(db)
        with blocker:
            during_v2 = v2.chat("while read-only")
            during_v1 = v1.chat("while read-only v1")
            assert server.proc is not None and server.proc.poll() is None, "server died"
        # The answer itself still arrived; the v2 user was told it is not saved.
        assert during_v2.text.startswith("Echo: while read-only"), during_v2
        assert any(n.kind is NoticeKind.INFO and "could not be saved" in n.message
                   for n in during_v2.notices), during_v2
        # v1 has no notices: the original client gets the answer and nothing else.
        assert during_v1.text.startswith("Echo: while read-only v1"), during_v1
        after = [v2.chat("after"), v1.chat("after v1")]
        assert all(o.acknowledged for o in after), after
    finally:
        v1.close()
        v2.close()
    assert_acknowledged_turns_stored(server, before + after)
    history = history_by_user(server)
    texts = [t["user"] for turns in history.values() for t in turns]
    assert sorted(texts) == sorted(["before", "before v1", "after", "after v1"]), texts
    log = server.log_text()
    assert "could not store a turn" in log
    assert "Traceback" not in log, log[-4000:]


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkill_right_after_end_loses_nothing(
    server_factory, engine: str, request: pytest.FixtureRequest
) -> None:
    server = server_factory(users=USERS, **database_env(engine, request))
    seen: list = []
    for i in range(3):
        for version in ("v2", "v1"):
            client = Chatter(server, "user1" if version == "v2" else "user2", version)
            outcome = client.chat(f"durable {version} {i} [standin:tokens=30]")
            assert outcome.acknowledged, outcome
            seen.append(outcome)
            # END (v2) / the terminator (v1) has arrived: kill at once, no chance to flush.
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            client.close()
            assert_acknowledged_turns_stored(server, seen)
            server.start()
    history = history_by_user(server)
    assert [t["user"] for t in history["user1"]] == [
        f"durable v2 {i} [standin:tokens=30]" for i in range(3)]
    assert all(t["status"] == "complete" and t["answer_tokens"] == 30 for t in history["user1"])
    assert len(history["user2"]) == 3
    if engine == "postgresql":
        assert "postgresql://" in server.log_text()
        assert server.env["CHAT_DB_PASSWORD"] not in server.log_text()


@contextlib.contextmanager
def writes_blocked(engine: str, server) -> Iterator[None]:
    """Another session holds the turns table (or the SQLite file) so the
    server's INSERT waits: a PostgreSQL table lock, an SQLite EXCLUSIVE
    transaction (shorter than the server's 5 s busy timeout)."""
    if engine == "sqlite":
        with exclusively_locked(Path(server.env["CHAT_DB"])):
            yield
        return
    import psycopg

    with psycopg.connect(server.env["CHAT_DB"], password=server.env["CHAT_DB_PASSWORD"]) as conn:
        conn.execute("LOCK TABLE turns IN EXCLUSIVE MODE")  # reads go on, writes wait
        yield
        conn.rollback()


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_end_waits_for_the_commit(server_factory, engine: str, request: pytest.FixtureRequest) -> None:
    server = server_factory(users=USERS, **database_env(engine, request))
    client = logged_in(server.port, "user1", USERS["user1"])
    try:
        with writes_blocked(engine, server):
            mid = client.start_chat("wait for my commit [standin:tokens=5]")
            deltas = []
            with pytest.raises(TimeoutError):
                # The whole answer streams; its END must not come while the
                # turn cannot be written.
                while True:
                    event = client.next_event(timeout=2.0)
                    assert not isinstance(event, AnswerEnd), "END before the turn was stored"
                    if isinstance(event, AnswerDelta):
                        deltas.append(event.text)
            assert "".join(deltas).startswith("Echo: wait for my commit")
        client.sock.settimeout(15)
        reply = client.collect(mid)
        assert reply.end is not None and reply.end.reason == "stop", reply.events
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        client.close()
    [stored] = server.history("user1")
    assert stored["status"] == "complete" and stored["answer"] == "".join(deltas) + "".join(
        e.text for e in reply.events if isinstance(e, AnswerDelta))
