"""
The server holds its memory figures however it is started: run natively (as
here: ``python -m chat_server`` from the virtualenv, no allocator variables in
the environment), a burst of logins at the production Argon2 cost (19 MiB per
hash, in worker threads) must not leave those buffers in the process.
"""

from __future__ import annotations

import platform
import threading

import psutil
import pytest

from tests.fixtures.server import PASSWORD, USER
from tests.server.clients import logged_in, wait_until

#: What a burst may leave behind: a few MiB of allocator and interpreter state;
#: without the allocation policy it leaves tens of MiB (one 19 MiB buffer per
#: worker thread that hashed).
SLACK = 8 * 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")
def test_login_burst_at_production_cost_gives_its_memory_back_when_run_natively(server_factory):
    server = server_factory(CHAT_ARGON2_TIME_COST="2", CHAT_ARGON2_MEMORY_KIB="19456",
                            CHAT_ARGON2_PARALLELISM="1")
    assert "MALLOC_MMAP_THRESHOLD_" not in server.env and "MALLOC_ARENA_MAX" not in server.env
    proc = psutil.Process(server.pid)
    logged_in(server.port, USER, PASSWORD).close()  # warm: imports, first hash
    baseline = proc.memory_info().rss

    def burst() -> None:
        for _ in range(4):
            logged_in(server.port, USER, PASSWORD).close()

    threads = [threading.Thread(target=burst) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        wait_until(lambda: proc.memory_info().rss <= baseline + SLACK, timeout=10)
    except AssertionError:
        grown = (proc.memory_info().rss - baseline) / 2**20
        raise AssertionError(f"24 logins left {grown:.0f} MiB in the server") from None
