"""
Several replicas on one PostgreSQL behind a real HAProxy (tests/ha/cluster.py):
the repository's HAProxy configuration, real server processes, a real
PostgreSQL (tests/fixtures/postgres.py), real sockets.

Proves: HAProxy passes the client's real address on (PROXY protocol v2) and
per-address login throttling works behind it; a replica that drains after
SIGTERM finishes and stores its answers while new connections go to the other;
a user on two replicas at once never has two answers running; the rate limit
and failed logins count on every replica; a replica killed under load loses no
acknowledged turn and duplicates none; while no replica is ready at all, HAProxy
holds new connections until one is (deploy/haproxy/hold.lua) instead of closing
them.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatcore.protocol import (
    AnswerDelta,
    AnswerEnd,
    AuthResult,
    Error,
    ErrorCode,
    Notice,
    NoticeKind,
)

from tests.fixtures.standin import StandIn
from tests.ha.cluster import Cluster, connect_from, start_cluster
from tests.server.clients import V2Client, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.engines, pytest.mark.postgres,
              pytest.mark.timeout(300)]

USERS = {f"user{i}": f"password {i}" for i in range(6)}
#: The kill-under-load test's clients, one user each.
CHATTERS = {f"chatter{i}": f"password c{i}" for i in range(10)}


@pytest.fixture(scope="module")
def shared_standin() -> Iterator[StandIn]:
    standin = StandIn().start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, postgres_server,
           shared_standin: StandIn) -> Iterator[Cluster]:
    """One cluster for the tests that leave both replicas running: each uses
    its own users and client addresses. CHAT_RATE_LIMIT=4 for the rate-limit
    test; the others send at most two messages per user."""
    db = postgres_server.create_database()
    try:
        yield from start_cluster(tmp_path_factory.mktemp("shared"), shared_standin.url,
                                 users=USERS, db=db, CHAT_MAX_PARALLEL="8", CHAT_RATE_LIMIT="4")
    finally:
        postgres_server.drop_database(db.rsplit("/", 1)[1])


@pytest.fixture
def cluster(tmp_path: Path, standin, postgres_db: str) -> Iterator[Cluster]:
    """A cluster of its own, for a test that stops or kills a replica."""
    yield from start_cluster(tmp_path, standin.url, users={**USERS, **CHATTERS}, db=postgres_db,
                             CHAT_SHUTDOWN_GRACE="30", CHAT_MAX_PARALLEL="8",
                             CHAT_RATE_LIMIT="1000", CHAT_DRAIN_DELAY="4")


def direct(cluster: Cluster, index: int, user: str) -> V2Client:
    """A session on one given replica (from an untrusted address: no PROXY header)."""
    port = cluster.replicas[index].port
    client = V2Client(port, sock=connect_from(port, "127.0.0.9"))
    result = client.login(user, USERS[user])
    assert isinstance(result, AuthResult) and result.ok, result
    return client


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


def test_haproxy_passes_the_clients_real_address(shared: Cluster) -> None:
    cluster = shared
    for source in ("127.0.0.2", "127.0.0.3"):
        client = login(cluster, "user0", source)
        assert client.chat("where am I").end is not None
        client.close()
    wait_until(lambda: len(peers_of(cluster, "user0")) == 2)
    # The replicas saw the clients, never HAProxy's own address.
    assert peers_of(cluster, "user0") == {"127.0.0.2", "127.0.0.3"}


def test_a_client_cannot_claim_an_address_by_going_around_haproxy(shared: Cluster) -> None:
    cluster = shared
    from chat_server.proxy_protocol import encode_v1

    from tests.hostile._support import read_until_closed

    replica = cluster.replicas[0]
    sock = connect_from(replica.port, "127.0.0.5")
    sock.sendall(encode_v1(("192.0.2.66", 1)))
    assert read_until_closed(sock) == b""
    sock.close()
    wait_until(lambda: "not in CHAT_TRUSTED_PROXIES" in replica.log_text())


def test_per_address_login_throttling_behind_haproxy(shared: Cluster) -> None:
    cluster = shared
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
    """SIGTERM with CHAT_DRAIN_DELAY, as the overlay runs it: the readiness
    check answers 503 at once while the replica still serves; HAProxy marks it
    down and sends every new connection to the other; then idle sessions are
    told to reconnect and the answers in flight finish and are stored."""
    # Sessions spread over both replicas (leastconn); answers take ~8 s.
    clients = {user: login(cluster, user) for user in list(USERS)[:4]}
    assert any(cluster.sessions_on(0, user) for user in clients), "none on the first replica"
    idle = direct(cluster, 0, "user4")
    long_one = "drain me [standin:tokens=150] [standin:delay-ms=50]"
    mids = {user: c.start_chat(long_one) for user, c in clients.items()}
    firsts = {user: c.next_event() for user, c in clients.items()}
    assert all(isinstance(e, AnswerDelta) for e in firsts.values()), firsts

    draining = cluster.replicas[0]
    codes: list[int | None] = []
    stopper = threading.Thread(target=lambda: codes.append(draining.stop(signal.SIGTERM, 60)))
    stopper.start()
    wait_until(lambda: not cluster.ready(0))
    # Not ready, yet still serving as usual until the balancer has noticed.
    late = direct(cluster, 0, "user5")
    assert late.chat("before the balancer noticed").end is not None
    late.close()
    wait_until(lambda: "replicas/r1 is DOWN" in cluster.haproxy.logs(), timeout=20)

    # While it drains, every new connection through HAProxy is served by the other.
    before = cluster.sessions_on(1, "user5")
    for _ in range(6):
        fresh = login(cluster, "user5")
        assert fresh.chat("still there?").end is not None
        fresh.close()
    assert cluster.sessions_on(1, "user5") == before + 6

    # The idle session is told to reconnect while the answers still run.
    event = idle.next_event(timeout=20)
    assert isinstance(event, Error) and event.code is ErrorCode.SHUTTING_DOWN, event
    assert draining.proc is not None and draining.proc.poll() is None and stopper.is_alive()
    idle.close()

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


def test_with_no_replica_ready_new_connections_wait_for_one_instead_of_being_refused(
        cluster: Cluster) -> None:
    """What plain `docker compose up -d` with a new image does to the stack
    (every replica stopped before any new one starts), with the replicas'
    processes: both stop, clients connect through HAProxy in the gap, and are
    served once a replica is back; nobody is closed or refused."""
    stoppers = [threading.Thread(target=r.stop, args=(signal.SIGTERM, 60))
                for r in cluster.replicas]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join(90)
    assert all(r.proc is None or r.proc.poll() is not None for r in cluster.replicas)
    wait_until(lambda: all(f"replicas/r{i} is DOWN" in cluster.haproxy.logs() for i in (1, 2)),
               timeout=30)

    # In the gap: the connections are accepted and held, not closed.
    results: list[object] = []

    def connect_and_chat(index: int) -> None:
        user = list(USERS)[index]
        try:
            sock = connect_from(cluster.port, f"127.0.0.{20 + index}", timeout=90)
            client = V2Client(cluster.port, sock=sock)  # HELLO: waits for a replica
            result = client.login(user, USERS[user])
            results.append(client.chat("are you back?").end
                           if isinstance(result, AuthResult) and result.ok else result)
            client.close()
        except Exception as exc:  # a closed or reset connection: turned away
            results.append(exc)

    clients = [threading.Thread(target=connect_and_chat, args=(i,)) for i in range(3)]
    for t in clients:
        t.start()
    time.sleep(3)  # without the hold, HAProxy closes them within milliseconds
    assert results == [], results  # nobody answered, nobody turned away

    cluster.replicas[0].start()
    for t in clients:
        t.join(120)
    assert len(results) == 3 and all(isinstance(r, AnswerEnd) for r in results), results
    # One line each in HAProxy's log (the raw log lines; Lua also echoes them
    # to stderr with a prefix).
    held = re.findall(r"^held a new connection \d+ ms until a replica was ready",
                      cluster.haproxy.logs(), re.M)
    assert len(held) == 3, cluster.haproxy.logs()[-3000:]


def test_a_user_on_two_replicas_never_runs_two_answers_at_once(
        shared: Cluster, shared_standin: StandIn) -> None:
    cluster, standin = shared, shared_standin
    on_a, on_b = direct(cluster, 0, "user2"), direct(cluster, 1, "user2")
    first = on_a.start_chat("the long one [standin:tokens=40] [standin:delay-ms=50]")
    assert isinstance(on_a.next_event(), AnswerDelta)  # it runs on replica A
    second = on_b.start_chat("the second one")
    # B is told it waits for the answer in the other session ...
    event = on_b.next_event()
    assert isinstance(event, Notice) and event.kind is NoticeKind.QUEUE, event
    # ... and nothing of its answer comes before A's answer has ended.
    reply_a = on_a.collect(first)
    assert isinstance(reply_a.end, AnswerEnd)
    reply_b = on_b.collect(second)
    assert isinstance(reply_b.end, AnswerEnd) and reply_b.text.startswith("Echo: the second one")
    # The model (both replicas share the stand-in) got B's request only once
    # A's generation had finished.
    requests = {_last_user_text(r): r for r in standin.requests()}
    long_one = requests["the long one [standin:tokens=40] [standin:delay-ms=50]"]
    second_one = requests["the second one"]
    assert second_one["started"] >= long_one["finished"], (long_one, second_one)
    turns = cluster.history("user2")
    assert [t["user"] for t in turns] == [
        "the long one [standin:tokens=40] [standin:delay-ms=50]", "the second one"]
    assert [t["status"] for t in turns] == ["complete", "complete"]
    on_a.close()
    on_b.close()


def _last_user_text(request: dict) -> str:
    messages = request["body"].get("messages", [])
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def test_failed_logins_on_two_replicas_add_up(shared: Cluster) -> None:
    cluster = shared
    """The strict policy (one account from one address: 3 failures, then a
    backoff) counts the failures of both replicas; the same account from
    another address is not affected (docs/SECURITY.md)."""
    for index in (0, 1, 0):
        port = cluster.replicas[index].port
        client = V2Client(port, sock=connect_from(port, "127.0.1.1"))
        result = client.login("user3", "wrong")
        assert isinstance(result, AuthResult) and not result.ok, result
        client.close()
    port = cluster.replicas[1].port
    client = V2Client(port, sock=connect_from(port, "127.0.1.1"))
    result = client.login("user3", USERS["user3"])
    assert isinstance(result, Error) and result.code is ErrorCode.AUTH_THROTTLED, result
    client.close()
    client = V2Client(port, sock=connect_from(port, "127.0.1.2"))
    result = client.login("user3", USERS["user3"])
    assert isinstance(result, AuthResult) and result.ok, result
    client.close()


def test_the_rate_limit_counts_messages_on_both_replicas(shared: Cluster) -> None:
    sessions = [direct(shared, 0, "user4"), direct(shared, 1, "user4")]
    for i in range(4):
        reply = sessions[i % 2].chat(f"message {i}")
        assert reply.end is not None, reply.events
    for client in sessions:  # the fifth message within the minute, on either replica
        reply = client.chat("one too many")
        assert reply.error is not None and reply.error.code is ErrorCode.RATE_LIMITED, reply.events
    for client in sessions:
        client.close()


def test_killing_a_replica_under_load_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    """Ten clients chat through HAProxy in a loop; one replica is SIGKILLed.
    The clients whose replica died reconnect (through HAProxy, to the
    survivor) and go on. Every turn whose END a client received is in history
    export exactly once; no message is stored twice."""
    users = list(CHATTERS)
    acknowledged: dict[str, list[str]] = {u: [] for u in users}
    broken: list[str] = []
    stop = threading.Event()

    def chatter(user: str) -> None:
        client: V2Client | None = None
        n = 0
        while not stop.is_set():
            try:
                if client is None:
                    client = V2Client(cluster.port, sock=connect_from(cluster.port))
                    result = client.login(user, CHATTERS[user])
                    assert isinstance(result, AuthResult) and result.ok, result
                n += 1  # a message is never sent twice: each has its own text
                text = f"{user} message {n} [standin:tokens=10] [standin:delay-ms=20]"
                reply = client.chat(text)
                if reply.end is None:
                    raise ConnectionError(f"no END: {reply.events[-1:]}")
                acknowledged[user].append(text)
            except (OSError, AssertionError, ConnectionError) as exc:
                broken.append(f"{user}: {exc!r}"[:200])
                with contextlib.suppress(OSError):
                    if client is not None:
                        client.close()
                client = None  # reconnect after a moment, as a real client does
                stop.wait(0.2)
        if client is not None:
            client.close()

    def acked() -> int:
        return sum(map(len, acknowledged.values()))

    threads = [threading.Thread(target=chatter, args=(u,)) for u in users]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: acked() >= 30, timeout=90)
        victims = [u for u in users if cluster.sessions_on(0, u)]
        assert victims, "no client was on the replica to kill"
        victim = cluster.replicas[0]
        assert victim.proc is not None
        victim.proc.kill()  # SIGKILL: no drain, no goodbye
        victim.proc.wait()
        victim.proc = None
        at_kill = {u: len(acknowledged[u]) for u in users}
        # Every client goes on, those of the dead replica on the survivor.
        wait_until(lambda: all(len(acknowledged[u]) >= at_kill[u] + 2 for u in users),
                   timeout=90)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert broken, "killing the replica broke no session"
    for user in victims:
        assert cluster.sessions_on(1, user) >= 1, f"{user} did not reconnect to the survivor"
    for user in users:
        turns = cluster.history(user)
        stored = [t["user"] for t in turns]
        assert len(stored) == len(set(stored)), f"{user}: a message was stored twice"
        complete = {t["user"] for t in turns if t["status"] == "complete"}
        missing = [text for text in acknowledged[user] if text not in complete]
        assert not missing, f"{user}: acknowledged but not stored: {missing}"
