"""
Several replicas behind a real HAProxy (tests/ha/cluster.py): the repository's
HAProxy configuration, real server processes, real sockets.

Proves: HAProxy passes the client's real address on (PROXY protocol v2) and
per-address login throttling works behind it; a replica that drains after
SIGTERM finishes and stores its answers while new connections go to the other.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatcore.protocol import AnswerDelta, AnswerEnd, AuthResult, Error, ErrorCode

from tests.ha.cluster import Cluster, connect_from, start_cluster
from tests.server.clients import V2Client, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.engines, pytest.mark.timeout(300)]

USERS = {f"user{i}": f"password {i}" for i in range(6)}


@pytest.fixture
def cluster(tmp_path: Path, standin) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path, standin.url, users=USERS, CHAT_SHUTDOWN_GRACE="30",
                             CHAT_MAX_PARALLEL="8", CHAT_RATE_LIMIT="1000")


def client_from(cluster: Cluster, source: str) -> V2Client:
    return V2Client(cluster.port, sock=connect_from(cluster.port, source))


def login(cluster: Cluster, user: str, source: str = "127.0.0.1") -> V2Client:
    client = client_from(cluster, source)
    result = client.login(user, USERS[user])
    assert isinstance(result, AuthResult) and result.ok, result
    return client


def peers_of(cluster: Cluster, user: str) -> set[str]:
    found: set[str] = set()
    for replica in cluster.replicas:
        for line in replica.log_text().splitlines():
            if "authenticated" in line and re.search(rf"\buser={re.escape(user)}\b", line):
                m = re.search(r"\bpeer=(\S+)", line)
                if m:
                    found.add(m.group(1))
    return found


def test_haproxy_passes_the_clients_real_address(cluster: Cluster) -> None:
    for source in ("127.0.0.2", "127.0.0.3"):
        client = login(cluster, "user0", source)
        assert client.chat("where am I").end is not None
        client.close()
    wait_until(lambda: len(peers_of(cluster, "user0")) == 2)
    # The replicas saw the clients, never HAProxy's own address.
    assert peers_of(cluster, "user0") == {"127.0.0.2", "127.0.0.3"}


def test_a_client_cannot_claim_an_address_by_going_around_haproxy(cluster: Cluster) -> None:
    from chat_server.proxy_protocol import encode_v1

    from tests.hostile._support import read_until_closed

    replica = cluster.replicas[0]
    sock = connect_from(replica.port, "127.0.0.5")
    sock.sendall(encode_v1(("192.0.2.66", 1)))
    assert read_until_closed(sock) == b""
    sock.close()
    wait_until(lambda: "not in CHAT_TRUSTED_PROXIES" in replica.log_text())


def test_per_address_login_throttling_behind_haproxy(cluster: Cluster) -> None:
    throttled_at = None
    for attempt in range(40):
        client = client_from(cluster, "127.0.0.7")
        result = client.login(f"guess{attempt}", "wrong")
        client.close()
        if isinstance(result, Error):
            assert result.code is ErrorCode.AUTH_THROTTLED, result
            throttled_at = attempt
            break
        assert isinstance(result, AuthResult) and not result.ok
    assert throttled_at is not None, "the guessing address was never throttled"
    # The guesser is throttled even with the right password ...
    client = client_from(cluster, "127.0.0.7")
    result = client.login("user1", USERS["user1"])
    assert isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED
    client.close()
    # ... while everybody else behind the same balancer logs in.
    login(cluster, "user1", "127.0.0.8").close()


def test_drain_finishes_answers_while_new_connections_go_to_the_other(cluster: Cluster) -> None:
    # Sessions spread over both replicas (leastconn); answers take a few seconds.
    clients = {user: login(cluster, user) for user in list(USERS)[:4]}
    assert any(cluster.sessions_on(0, user) for user in clients), "none on the first replica"
    mids = {user: c.start_chat("drain me [standin:tokens=60] [standin:delay-ms=50]")
            for user, c in clients.items()}
    firsts = {user: c.next_event() for user, c in clients.items()}
    assert all(isinstance(e, AnswerDelta) for e in firsts.values()), firsts

    draining = cluster.replicas[0]
    codes: list[int | None] = []
    stopper = threading.Thread(target=lambda: codes.append(draining.stop(signal.SIGTERM, 60)))
    stopper.start()
    wait_until(lambda: not cluster.ready(0))

    # While it drains, every new connection through HAProxy is served (by the other).
    before = cluster.sessions_on(1, "user5")
    for _ in range(6):
        fresh = login(cluster, "user5")
        assert fresh.chat("still there?").end is not None
        fresh.close()
    assert cluster.sessions_on(1, "user5") == before + 6
    assert cluster.sessions_on(0, "user5") == 0

    # Every answer in flight finished, on both replicas, and is stored.
    for user, c in clients.items():
        reply = c.collect(mids[user])
        assert isinstance(reply.end, AnswerEnd) and reply.end.reason == "stop", reply.events
        text = firsts[user].text + reply.text  # type: ignore[attr-defined]
        turns = [t for t in cluster.history(user) if t["answer"] == text]
        assert [t["status"] for t in turns] == ["complete"], cluster.history(user)
    stopper.join(60)
    assert codes == [0]
    for c in clients.values():
        c.close()
