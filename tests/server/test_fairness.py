"""Fairness: bounded parallelism, round-robin across users, one answer
in flight per user, queue position notices."""

from __future__ import annotations

import threading

from chatcore.protocol import AnswerEnd, ErrorCode, Notice, NoticeKind

from tests.fixtures.server import PASSWORD, USER

from .clients import logged_in, wait_until


def test_one_answer_in_flight_per_user(live_server):
    client = logged_in(live_server.port, USER, PASSWORD)
    first = client.start_chat("slow [standin:tokens=40] [standin:delay-ms=50]")
    second = client.start_chat("impatient")
    reply = client.collect(second, until=lambda e: getattr(e, "message_id", None) == second
                           and not isinstance(e, Notice))
    err = reply.events[-1]
    assert err.code is ErrorCode.BUSY and err.message_id == second
    rest = client.collect(first)
    assert rest.end is not None
    client.close()


def test_same_user_in_two_sessions_is_still_one_answer_at_a_time(live_server):
    a = logged_in(live_server.port, USER, PASSWORD)
    b = logged_in(live_server.port, USER, PASSWORD)
    mid = a.start_chat("slow [standin:tokens=40] [standin:delay-ms=50]")
    wait_until(lambda: live_server.standin.requests())
    reply = b.chat("me too")  # waits for the first answer, then gets its own
    assert reply.end is not None and reply.text.startswith("Echo: me too")
    assert any(n.kind is NoticeKind.QUEUE for n in reply.notices)
    assert a.collect(mid).end is not None
    first, second = live_server.standin.requests()
    assert second["started"] >= first["finished"]  # never both in flight
    a.close()
    b.close()


def test_waiting_users_get_their_queue_position(server_factory):
    users = {f"user{i}": f"password-{i}" for i in range(3)}
    server = server_factory(users=users, CHAT_MAX_PARALLEL="1")
    clients = {name: logged_in(server.port, name, pw) for name, pw in users.items()}
    holder = clients["user0"].start_chat("hold [standin:tokens=60] [standin:delay-ms=50]")
    wait_until(lambda: server.standin.requests())
    mids = {name: clients[name].start_chat("waiting") for name in ("user1", "user2")}
    replies = {}
    for name in ("user1", "user2"):
        replies[name] = clients[name].collect(mids[name])
    clients["user0"].collect(holder)
    positions = {
        name: [n.position for n in r.notices if n.kind is NoticeKind.QUEUE] for name, r in replies.items()
    }
    # user1 queued first: position 1; user2 queued behind it: 2, then 1.
    assert positions["user1"][0] == 1
    assert positions["user2"][0] == 2 and positions["user2"][-1] == 1
    assert all(r.end is not None for r in replies.values())
    for c in clients.values():
        c.close()


def test_a_burst_from_one_user_does_not_starve_others(server_factory):
    # Many sessions of the bursting user (one answer each in flight is the
    # per-user rule), ten other users with one message each, parallelism 2:
    # every other user is answered before the burster's 5th answer.
    others = {f"other{i}": f"pw-other-{i}" for i in range(10)}
    server = server_factory(users={"burst": "pw-burst", **others}, CHAT_MAX_PARALLEL="2",
                            CHAT_RATE_LIMIT="0")
    order: list[str] = []
    lock = threading.Lock()

    def one(name: str, pw: str, n: int) -> None:
        client = logged_in(server.port, name, pw)
        for _ in range(n):
            reply = client.chat("go [standin:tokens=5] [standin:delay-ms=20]")
            assert reply.end is not None or (reply.error and reply.error.code is ErrorCode.BUSY)
            if reply.end is not None:
                with lock:
                    order.append(name)
        client.close()

    burster = threading.Thread(target=one, args=("burst", "pw-burst", 12))
    burster.start()
    wait_until(lambda: len(server.standin.requests()) >= 1)
    threads = [threading.Thread(target=one, args=(n, pw, 1)) for n, pw in others.items()]
    for t in threads:
        t.start()
    for t in [*threads, burster]:
        t.join(timeout=120)
    burst_done = [i for i, name in enumerate(order) if name == "burst"]
    others_done = [i for i, name in enumerate(order) if name != "burst"]
    assert len(others_done) == 10
    assert len(burst_done) >= 5
    assert max(others_done) < burst_done[4], order


def test_parallel_generations_never_exceed_the_limit(server_factory):
    users = {f"u{i}": f"pw-u-{i}" for i in range(6)}
    server = server_factory(users=users, CHAT_MAX_PARALLEL="2")
    results: list[AnswerEnd | None] = []

    def one(name: str, pw: str) -> None:
        c = logged_in(server.port, name, pw)
        results.append(c.chat("hi [standin:tokens=10] [standin:delay-ms=30]").end)
        c.close()

    threads = [threading.Thread(target=one, args=item) for item in users.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 6 and all(r is not None for r in results)
    spans = [(r["started"], r["finished"]) for r in server.standin.requests()]
    for start, _ in spans:
        overlapping = sum(1 for s, f in spans if s <= start < f)
        assert overlapping <= 2
