"""
Fixtures of the hostile-input suite.

Most attacks run against one server shared by the whole package (starting a
server per parametrized case would cost most of the time budget); each test
still checks its own invariants through a fresh :class:`~tests.hostile._support.Guard`,
whose log and RSS checks only look at what happened after it was created.
Attacks that need other limits (connection cap, auth deadline) start their own
server with ``server_factory``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.fixtures.server import shared_server as shared_server_of

from ._support import Guard

#: The shared server's login deadline: short, so the pre-login slowloris test is quick.
AUTH_TIMEOUT = 3
#: CHAT_FRAME_TIMEOUT of the shared server (the production default is 30 s).
FRAME_TIMEOUT = 6


@pytest.fixture(scope="package")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The message and connection rates are lifted (tests.fixtures.server.shared_server);
    # their own tests (test_connection_rate.py) start servers with them on.
    with shared_server_of(tmp_path_factory, "hostile-server",
                          CHAT_AUTH_TIMEOUT=str(AUTH_TIMEOUT),
                          CHAT_FRAME_TIMEOUT=str(FRAME_TIMEOUT)) as server:
        yield server


@pytest.fixture
def guard(shared_server: LiveServer) -> Guard:
    """Invariants around one attack on the shared server."""
    if shared_server.proc is None or shared_server.proc.poll() is not None:
        pytest.fail("the shared server died in an earlier test")
    return Guard(shared_server, USER, PASSWORD)
