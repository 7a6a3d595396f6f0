"""
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
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatcore.protocol import NoticeKind

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
