"""The Store interface, on every engine (SQLite and PostgreSQL): users, turns,
schema migrations, errors as one-line StoreErrors."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from chat_server.store import (
    MAX_CONVERSATION_LENGTH,
    MAX_ENDED_SESSION_TOKENS_PER_USER,
    MAX_SESSION_TOKENS_PER_USER,
    SCHEMA_VERSION,
    Store,
    StoreError,
    TurnRecord,
    TurnStatus,
    UserExists,
    open_store,
    validate_username,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def make_turn(user: str = "alice", conversation: str = "c1", n: int = 0, **kw: object) -> TurnRecord:
    fields: dict[str, object] = {
        "user": user,
        "conversation": conversation,
        "created_at": T0 + timedelta(seconds=n),
        "completed_at": T0 + timedelta(seconds=n, milliseconds=500),
        "model": "llama3.2",
        "user_text": f"question {n}",
        "answer_text": f"answer {n} ✓",
        "prompt_tokens": 10 + n,
        "answer_tokens": 20 + n,
        "status": TurnStatus.COMPLETE,
    }
    fields.update(kw)
    return TurnRecord(**fields)  # type: ignore[arg-type]


async def test_opens_at_the_latest_schema_version(store: Store, engine: str) -> None:
    assert store.engine == engine
    assert store.schema_version == SCHEMA_VERSION >= 1


async def test_reopen_keeps_data_and_does_not_migrate_again(store_target: str) -> None:
    async with await open_store(store_target) as s:
        await s.add_user("alice", "h1")
        await s.save_turn(make_turn())
    async with await open_store(store_target) as s:
        user = await s.get_user("alice")
        assert user is not None and user.password_hash == "h1"
        assert len(await s.turns("alice")) == 1
        assert s.schema_version == SCHEMA_VERSION


async def test_concurrent_starts_migrate_once(store_target: str) -> None:
    # Several replicas (or the CLI next to the server) starting on one empty
    # database at the same moment: all come up, each step is applied once.
    stores = await asyncio.gather(*(open_store(store_target) for _ in range(6)))
    try:
        assert {s.schema_version for s in stores} == {SCHEMA_VERSION}
        await stores[0].add_user("alice", "h")
        for s in stores:
            assert await s.get_user("alice") is not None
    finally:
        for s in stores:
            await s.close()


async def test_users_lifecycle(store: Store) -> None:
    assert await store.get_user("bob") is None
    await store.add_user("bob", "hash-b")
    await store.add_user("alice", "hash-a")
    bob = await store.get_user("bob")
    assert bob is not None and bob.password_hash == "hash-b" and bob.name == "bob"
    assert "hash-b" not in repr(bob)
    with pytest.raises(UserExists, match="'bob' already exists"):
        await store.add_user("bob", "other")
    assert (await store.get_user("bob")).password_hash == "hash-b"  # type: ignore[union-attr]

    users = await store.list_users()
    assert [u.name for u in users] == ["alice", "bob"]
    for u in users:
        assert u.created_at.tzinfo is not None
        assert abs((datetime.now(UTC) - u.created_at).total_seconds()) < 3600

    assert await store.change_password("bob", "hash-b2") is True
    assert (await store.get_user("bob")).password_hash == "hash-b2"  # type: ignore[union-attr]
    assert await store.change_password("nobody", "x") is False

    assert await store.remove_user("bob") is True
    assert await store.remove_user("bob") is False
    assert await store.get_user("bob") is None
    assert [u.name for u in await store.list_users()] == ["alice"]


async def test_empty_password_hash_is_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.add_user("alice", "")
    await store.add_user("alice", "h")
    with pytest.raises(ValueError):
        await store.change_password("alice", "")
    with pytest.raises(ValueError):
        await store.upgrade_password_hash("alice", "h", "")


async def test_user_names_are_case_sensitive(store: Store) -> None:
    await store.add_user("Alice", "h")
    assert await store.get_user("alice") is None
    await store.add_user("alice", "h2")
    assert [u.name for u in await store.list_users()] == sorted(["Alice", "alice"])


@pytest.mark.parametrize("name", ["a", "alice", "x" * 64, "ünïcødé", "a.b-c_d@e", "名前"])
async def test_valid_user_names_round_trip(store: Store, name: str) -> None:
    assert validate_username(name) == name
    await store.add_user(name, "h")
    assert (await store.get_user(name)) is not None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "at most 64"),
        ("has space", "spaces"),
        ("tab\there", "spaces"),
        ("new\nline", "spaces"),
        ("nul\x00", "control"),
        ("esc\x1b[31m", "control"),
        ("zero\u200bwidth", "control"),
        ("nbsp\u00a0", "spaces"),
    ],
)
async def test_invalid_user_names(store: Store, name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        validate_username(name)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        await store.add_user(name, "h")
    assert await store.list_users() == []


async def test_turns_round_trip_in_order(store: Store) -> None:
    await store.add_user("alice", "h")
    saved = [
        make_turn(n=0),
        make_turn(n=1, conversation="c2", status=TurnStatus.CANCELLED, prompt_tokens=None,
                  answer_tokens=None),
        make_turn(n=2, status=TurnStatus.ERROR, completed_at=None, answer_text=""),
        make_turn(n=3, conversation="c2", status=TurnStatus.INTERRUPTED),
    ]
    ids = [await store.save_turn(t) for t in saved]
    assert ids == sorted(ids) and len(set(ids)) == 4

    loaded = await store.turns("alice")
    assert [t.id for t in loaded] == ids
    for original, back, turn_id in zip(saved, loaded, ids, strict=True):
        assert back == dataclasses.replace(original, id=turn_id)
        assert back.created_at.tzinfo is not None
        assert isinstance(back.status, TurnStatus)

    assert [t.id for t in await store.turns("alice", "c2")] == [ids[1], ids[3]]
    assert await store.turns("alice", "nope") == []
    assert await store.turns("bob") == []


async def test_turns_after_id_returns_only_newer_turns(store: Store) -> None:
    await store.add_user("alice", "h")
    ids = [await store.save_turn(make_turn(n=i, conversation=f"c{i % 2}")) for i in range(6)]
    assert [t.id for t in await store.turns("alice", after_id=ids[2])] == ids[3:]
    assert [t.id for t in await store.turns("alice", "c0", after_id=ids[2])] == [ids[4]]
    assert await store.turns("alice", after_id=ids[-1]) == []


async def test_turns_are_read_in_pages_newest_first_and_by_status(store: Store) -> None:
    # What a reader of a long history needs (chat_server.history_cache, the
    # export): pages of a bounded size, from either end, of one status.
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    ids = [await store.save_turn(make_turn(n=i, conversation=f"c{i % 2}", status=(
        TurnStatus.CANCELLED if i % 3 == 0 else TurnStatus.COMPLETE))) for i in range(12)]
    await store.save_turn(make_turn(user="bob", conversation="c0"))
    c0 = ids[0::2]
    assert [t.id for t in await store.turns("alice", "c0", newest_first=True)] == c0[::-1]
    assert [t.id for t in await store.turns("alice", "c0", newest_first=True, limit=2)] == [c0[-1], c0[-2]]
    assert [t.id for t in await store.turns("alice", "c0", before_id=c0[3], limit=2)] == c0[:2]
    assert [t.id for t in await store.turns("alice", "c0", after_id=c0[1], before_id=c0[4])] == c0[2:4]
    complete = [t.id for t in await store.turns("alice", "c0", status=TurnStatus.COMPLETE,
                                                newest_first=True)]
    assert complete == [i for n, i in enumerate(ids) if n % 2 == 0 and n % 3 != 0][::-1]
    assert [t.id for t in await store.turns("alice", limit=5)] == ids[:5]
    with pytest.raises(ValueError):
        await store.turns("alice", limit=0)


async def test_a_question_asked_again_replaces_its_unanswered_attempt(store: Store) -> None:
    await store.add_user("alice", "h")
    first = await store.save_turn(make_turn(n=0))
    cut = await store.save_turn(make_turn(n=1, status=TurnStatus.INTERRUPTED, answer_text=""))
    again = make_turn(n=2, user_text="question 1")
    new = await store.save_turn(again, supersedes=cut)
    assert [(t.id, t.user_text, t.status) for t in await store.turns("alice")] == [
        (first, "question 0", TurnStatus.COMPLETE), (new, "question 1", TurnStatus.COMPLETE)]


@pytest.mark.parametrize("attempt, why", [
    ({"status": TurnStatus.INTERRUPTED, "answer_text": "half an answer"}, "the model said something"),
    ({"status": TurnStatus.COMPLETE}, "answered"),
    ({"status": TurnStatus.CANCELLED, "answer_text": ""}, "cancelled by the user"),
    ({"status": TurnStatus.ERROR, "answer_text": ""}, "a model failure, kept as a record"),
    ({"status": TurnStatus.INTERRUPTED, "answer_text": "", "user_text": "something else"},
     "another question"),
    ({"status": TurnStatus.INTERRUPTED, "answer_text": "", "conversation": "c2"},
     "another conversation"),
    ({"status": TurnStatus.INTERRUPTED, "answer_text": "", "user": "bob"}, "another user"),
])
async def test_supersedes_never_removes_a_turn_that_is_not_the_same_unanswered_question(
        store: Store, attempt: dict[str, object], why: str) -> None:
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    fields: dict[str, object] = {"n": 1, "user_text": "question 1", **attempt}
    old = await store.save_turn(make_turn(**fields))  # type: ignore[arg-type]
    new = await store.save_turn(make_turn(n=2, user_text="question 1"), supersedes=old)
    kept = await store.turns(str(fields.get("user", "alice")))
    assert old in [t.id for t in kept], why
    assert new in [t.id for t in await store.turns("alice")]


async def test_supersedes_only_looks_back(store: Store) -> None:
    # A turn saved after the one that names it is not replaced (ids grow with time).
    # Here: a turn naming the id it is itself given.
    await store.add_user("alice", "h")
    cut = await store.save_turn(make_turn(n=1, status=TurnStatus.INTERRUPTED, answer_text=""))
    again = make_turn(n=2, user_text="question 1", status=TurnStatus.INTERRUPTED, answer_text="")
    new = await store.save_turn(again, supersedes=cut + 1)
    assert new == cut + 1  # (ids are consecutive in a fresh table, on both engines)
    assert [t.id for t in await store.turns("alice")] == [cut, new]


async def test_text_survives_exactly(store: Store) -> None:
    await store.add_user("alice", "h")
    texts = ["", "plain", "emoji 👋🏽 and ZWJ 👩‍💻", "RTL שלום", "\\ ' \" ? % %s $1 ;",
             "lines\r\nand\ttabs", "x" * 70_000]
    for i, text in enumerate(texts):
        await store.save_turn(make_turn(n=i, user_text=text, answer_text=text[::-1]))
    back = await store.turns("alice")
    assert [t.user_text for t in back] == texts
    assert [t.answer_text for t in back] == [t[::-1] for t in texts]


async def test_nul_characters_are_stored_as_replacement_characters(store: Store) -> None:
    # PostgreSQL text cannot hold U+0000: both engines keep U+FFFD instead,
    # and the turn is saved rather than failing.
    await store.add_user("alice", "h")
    await store.save_turn(make_turn(user_text="a\x00b", answer_text="\x00", conversation="c\x00"))
    (turn,) = await store.turns("alice")
    assert (turn.user_text, turn.answer_text, turn.conversation) == ("a\ufffdb", "\ufffd", "c\ufffd")
    assert len(await store.turns("alice", "c\x00")) == 1


async def test_overlong_conversation_id_is_a_clear_store_error(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.save_turn(make_turn(conversation="c" * MAX_CONVERSATION_LENGTH))
    with pytest.raises(StoreError, match="conversation id longer than") as info:
        await store.save_turn(make_turn(conversation="c" * (MAX_CONVERSATION_LENGTH + 1)))
    assert "\n" not in str(info.value)


def test_every_conversation_id_the_protocol_lets_through_can_be_stored() -> None:
    # The codec refuses longer ids as they arrive (docs/PROTOCOL.md §4), so the
    # store's own refusal, after the answer, is never reached from the wire.
    from chatcore.protocol import MAX_NAME_LENGTH

    assert MAX_NAME_LENGTH <= MAX_CONVERSATION_LENGTH


def test_naive_and_epoch_timestamps_are_normalised_to_utc() -> None:
    naive = make_turn(created_at=datetime(2025, 1, 1, 8, 0), completed_at=1735718400.0)
    assert naive.created_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert naive.completed_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def test_turn_status_is_the_enum() -> None:
    assert make_turn(status="cancelled").status is TurnStatus.CANCELLED
    with pytest.raises(ValueError, match="status"):
        make_turn(status="done")


async def test_remove_user_deletes_their_turns(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    await store.save_turn(make_turn("alice"))
    await store.save_turn(make_turn("bob"))
    assert await store.remove_user("alice")
    assert await store.turns("alice") == []
    assert len(await store.turns("bob")) == 1
    # Re-creating the name does not bring the old history back.
    await store.add_user("alice", "h")
    assert await store.turns("alice") == []


async def test_save_turn_for_removed_user_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no user 'ghost'") as info:
        await store.save_turn(make_turn("ghost"))
    assert "\n" not in str(info.value)


async def test_concurrent_writers_through_one_store(store: Store) -> None:
    await store.add_user("alice", "h")

    async def writer(k: int) -> None:
        for i in range(30):
            await store.save_turn(make_turn(conversation=f"c{k}", n=i))
            await store.turns("alice", f"c{k}")

    await asyncio.gather(*(writer(k) for k in range(4)))
    turns = await store.turns("alice")
    assert len(turns) == 120 and len({t.id for t in turns}) == 120
    for k in range(4):
        assert [t.user_text for t in await store.turns("alice", f"c{k}")] == [
            f"question {i}" for i in range(30)
        ]


async def test_second_store_on_same_database_sees_commits(store_target: str) -> None:
    # The CLI (or another replica) opens its own connection while the server runs.
    async with await open_store(store_target) as server, await open_store(store_target) as cli:
        await cli.add_user("alice", "h")
        assert await server.get_user("alice") is not None
        await server.save_turn(make_turn())
        assert len(await cli.turns("alice")) == 1
        assert await cli.remove_user("alice")
        assert await server.turns("alice") == []


async def test_closed_store_raises_store_error(store_target: str) -> None:
    s = await open_store(store_target)
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await s.list_users()


# -- what the next features build on: backend, account state, session tokens -----


async def test_backend_is_stored_per_turn(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.save_turn(make_turn(n=0, backend="gpu1"))
    await store.save_turn(make_turn(n=1))
    assert [t.backend for t in await store.turns("alice")] == ["gpu1", None]


async def test_new_user_is_enabled_never_logged_in(store: Store) -> None:
    await store.add_user("alice", "h")
    alice = await store.get_user("alice")
    assert alice is not None
    assert (alice.disabled, alice.last_login_at) == (False, None)


async def test_record_login_sets_last_login(store: Store) -> None:
    clock = FakeClock()
    store.clock = clock  # type: ignore[attr-defined]
    await store.add_user("alice", "h")
    await store.record_login("alice")
    assert (await store.get_user("alice")).last_login_at == clock.now  # type: ignore[union-attr]
    clock.advance(seconds=90)
    await store.record_login("alice")
    await store.record_login("ghost")  # an unknown user is nothing to record
    assert (await store.get_user("alice")).last_login_at == clock.now  # type: ignore[union-attr]


async def test_list_users_counts_messages_and_shows_state(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    await store.add_user("carol", "h")
    for i in range(3):
        await store.save_turn(make_turn("alice", n=i, conversation=f"c{i % 2}"))
    await store.save_turn(make_turn("bob", status=TurnStatus.CANCELLED))
    await store.set_disabled("carol", True)
    await store.record_login("bob")
    users = {u.name: u for u in await store.list_users()}
    assert {n: u.message_count for n, u in users.items()} == {"alice": 3, "bob": 1, "carol": 0}
    assert {n: u.disabled for n, u in users.items()} == {"alice": False, "bob": False, "carol": True}
    assert users["bob"].last_login_at is not None and users["alice"].last_login_at is None


async def test_disable_and_enable(store: Store) -> None:
    await store.add_user("alice", "h")
    assert await store.set_disabled("alice", True) is True
    assert (await store.get_user("alice")).disabled is True  # type: ignore[union-attr]
    assert await store.set_disabled("alice", True) is True  # idempotent
    assert await store.set_disabled("alice", False) is True
    assert (await store.get_user("alice")).disabled is False  # type: ignore[union-attr]
    assert await store.set_disabled("ghost", True) is False


async def test_upgrade_password_hash_only_replaces_the_hash_it_was_computed_from(
    store: Store,
) -> None:
    await store.add_user("alice", "old")
    token = await store.create_session_token("alice", timedelta(hours=1))
    assert await store.upgrade_password_hash("alice", "old", "stronger") is True
    assert (await store.get_user("alice")).password_hash == "stronger"  # type: ignore[union-attr]
    # A re-hash is the same password: the user's sessions stay.
    assert await store.verify_session_token(token.token) == "alice"
    # The password changed while a login was re-hashing the old one: keep the new one.
    await store.change_password("alice", "new-password")
    assert await store.upgrade_password_hash("alice", "stronger", "rehash-of-old") is False
    assert (await store.get_user("alice")).password_hash == "new-password"  # type: ignore[union-attr]


async def test_only_a_password_change_counts_up_the_password_generation(store: Store) -> None:
    await store.add_user("alice", "old")
    await store.add_user("bob", "b")

    async def generation(name: str) -> int:
        user = await store.get_user(name)
        assert user is not None
        return user.password_generation

    assert await generation("alice") == 0
    assert await store.upgrade_password_hash("alice", "old", "stronger")  # same password
    await store.set_disabled("alice", True)
    await store.set_disabled("alice", False)
    await store.record_login("alice")
    assert await generation("alice") == 0
    for expected in (1, 2):
        assert await store.change_password("alice", f"pw{expected}")
        assert await generation("alice") == expected
    assert await generation("bob") == 0  # nobody else's
    listed = {u.name: u.password_generation for u in await store.list_users()}
    assert listed == {"alice": 2, "bob": 0}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def test_session_token_round_trip(store: Store) -> None:
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    issued = await store.create_session_token("alice", timedelta(days=7))
    assert issued.user == "alice" and len(issued.token) >= 43
    assert issued.token not in repr(issued)
    assert await store.verify_session_token(issued.token) == "alice"
    other = await store.create_session_token("bob", timedelta(days=7))
    assert other.token != issued.token
    assert await store.verify_session_token(other.token) == "bob"
    for bad in ("", "x", issued.token[:-1], issued.token + "x", "é" * 300, "\x00"):
        assert await store.verify_session_token(bad) is None


async def test_session_tokens_are_stored_hashed(store: Store, database_rows) -> None:
    await store.add_user("alice", "h")
    issued = await store.create_session_token("alice", timedelta(days=1))
    rows = database_rows("SELECT token_hash FROM session_tokens")
    assert len(rows) == 1
    (stored,) = rows[0]
    assert issued.token not in stored
    import hashlib

    assert stored == hashlib.sha256(issued.token.encode()).hexdigest()


async def test_session_token_expires(store_target: str) -> None:
    clock = FakeClock()
    async with await open_store(store_target, clock=clock) as store:
        await store.add_user("alice", "h")
        issued = await store.create_session_token("alice", timedelta(hours=1))
        assert issued.expires_at == clock.now + timedelta(hours=1)
        clock.advance(minutes=59, seconds=59)
        assert await store.verify_session_token(issued.token) == "alice"
        clock.advance(seconds=1)
        assert await store.verify_session_token(issued.token) is None
        with pytest.raises(ValueError):
            await store.create_session_token("alice", timedelta(0))


async def test_session_token_revocation(store: Store) -> None:
    await store.add_user("alice", "h")
    one = await store.create_session_token("alice", timedelta(days=1))
    two = await store.create_session_token("alice", timedelta(days=1))
    assert await store.revoke_session_token(one.token) is True
    assert await store.revoke_session_token(one.token) is False
    assert await store.verify_session_token(one.token) is None
    assert await store.verify_session_token(two.token) == "alice"
    assert await store.revoke_session_token("not a token") is False


@pytest.mark.parametrize("how", ["password", "disable", "remove"])
async def test_session_tokens_die_with_the_password_a_disabled_or_removed_user(
    store: Store, how: str
) -> None:
    await store.add_user("alice", "h")
    await store.add_user("bob", "h")
    alice = [await store.create_session_token("alice", timedelta(days=1)) for _ in range(3)]
    bob = await store.create_session_token("bob", timedelta(days=1))
    if how == "password":
        await store.change_password("alice", "h2")
    elif how == "disable":
        await store.set_disabled("alice", True)
    else:
        await store.remove_user("alice")
    for t in alice:
        assert await store.verify_session_token(t.token) is None
    assert await store.verify_session_token(bob.token) == "bob"
    if how == "disable":
        # Enabling again does not bring the old tokens back.
        await store.set_disabled("alice", False)
        for t in alice:
            assert await store.verify_session_token(t.token) is None
        fresh = await store.create_session_token("alice", timedelta(days=1))
        assert await store.verify_session_token(fresh.token) == "alice"


async def test_tokens_per_user_are_capped_and_dead_ones_are_dropped(store_target: str,
                                                                     database_rows) -> None:
    clock = FakeClock()
    async with await open_store(store_target, clock=clock) as store:
        await store.add_user("alice", "h")
        short = await store.create_session_token("alice", timedelta(seconds=1))
        tokens = []
        for _ in range(MAX_SESSION_TOKENS_PER_USER + 5):
            clock.advance(seconds=2)
            tokens.append(await store.create_session_token("alice", timedelta(days=1)))
        # The oldest beyond the cap are revoked, the newest still work.
        for t in tokens[:5]:
            assert await store.verify_session_token(t.token) is None
        for t in tokens[5:]:
            assert await store.verify_session_token(t.token) == "alice"
        assert await store.verify_session_token(short.token) is None
        [(live,)] = database_rows("SELECT COUNT(*) FROM session_tokens WHERE revoked_at IS NULL")
        assert live == MAX_SESSION_TOKENS_PER_USER
        # The expired one is gone; the five revoked ones are remembered until
        # they expire (a replay of one must be recognised), no longer.
        [(ended,)] = database_rows(
            "SELECT COUNT(*) FROM session_tokens WHERE revoked_at IS NOT NULL")
        assert ended == 5
        clock.advance(days=2)
        await store.create_session_token("alice", timedelta(days=1))
        assert database_rows("SELECT COUNT(*) FROM session_tokens") == [(1,)]


async def test_ended_tokens_remembered_per_user_are_capped(store_target: str,
                                                          database_rows) -> None:
    async with await open_store(store_target) as store:
        await store.add_user("alice", "h")
        for _ in range(MAX_ENDED_SESSION_TOKENS_PER_USER + 10):
            issued = await store.create_session_token("alice", timedelta(days=1))
            assert await store.use_session_token(issued.token) == "alice"
        await store.create_session_token("alice", timedelta(days=1))
        [(ended,)] = database_rows(
            "SELECT COUNT(*) FROM session_tokens WHERE revoked_at IS NOT NULL")
        assert ended == MAX_ENDED_SESSION_TOKENS_PER_USER


async def test_a_replayed_token_ends_every_live_token_of_its_chain(store_target: str) -> None:
    clock = FakeClock()
    async with await open_store(store_target, clock=clock) as store:
        await store.add_user("alice", "h")
        await store.add_user("bob", "h")
        first = await store.create_session_token("alice", timedelta(days=1))
        chain = [first]
        for _ in range(3):  # each token login is given the next token
            assert await store.use_session_token(chain[-1].token) == "alice"
            chain.append(await store.create_session_token(
                "alice", timedelta(days=1), follows=chain[-1].token))
        other = await store.create_session_token("alice", timedelta(days=1))
        bobs = await store.create_session_token("bob", timedelta(days=1))
        # Any used token of the chain, presented again, ends its newest.
        assert await store.use_session_token(chain[1].token) is None
        assert await store.verify_session_token(chain[-1].token) is None
        assert await store.verify_session_token(other.token) == "alice"
        assert await store.verify_session_token(bobs.token) == "bob"
        # A login with another chain's token continues that one only.
        assert await store.use_session_token(other.token) == "alice"
        after = await store.create_session_token("alice", timedelta(days=1), follows=other.token)
        assert await store.use_session_token(first.token) is None
        assert await store.verify_session_token(after.token) == "alice"
        # An expired token is forgotten: presenting it ends nothing.
        short = await store.create_session_token("alice", timedelta(hours=1))
        assert await store.use_session_token(short.token) == "alice"
        follower = await store.create_session_token("alice", timedelta(days=1), follows=short.token)
        clock.advance(hours=2)
        assert await store.use_session_token(short.token) is None
        assert await store.verify_session_token(follower.token) == "alice"


async def test_token_for_unknown_user_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="no user 'ghost'"):
        await store.create_session_token("ghost", timedelta(days=1))


async def test_a_token_issued_on_one_store_is_accepted_by_another(store_target: str) -> None:
    # Replicas share the database: any of them accepts a token another issued.
    async with await open_store(store_target) as one, await open_store(store_target) as two:
        await one.add_user("alice", "h")
        issued = await one.create_session_token("alice", timedelta(days=1))
        assert await two.verify_session_token(issued.token) == "alice"
        await two.change_password("alice", "h2")
        assert await one.verify_session_token(issued.token) is None


async def test_a_token_logs_in_once(store_target: str) -> None:
    # Logging in with a token ends it (the login gets a fresh one): a copy that
    # leaked after it was used (a log, a dump, a shoulder) no longer logs in.
    clock = FakeClock()
    async with await open_store(store_target, clock=clock) as store:
        await store.add_user("alice", "h")
        await store.add_user("bob", "h")
        issued = await store.create_session_token("alice", timedelta(hours=1))
        other = await store.create_session_token("alice", timedelta(hours=1))
        bobs = await store.create_session_token("bob", timedelta(hours=1))
        assert await store.use_session_token(issued.token) == "alice"
        assert await store.use_session_token(issued.token) is None
        assert await store.verify_session_token(issued.token) is None
        assert await store.revoke_session_token(issued.token) is False
        # Only that token: the user's others and other users' stay good.
        assert await store.verify_session_token(other.token) == "alice"
        assert await store.use_session_token(bobs.token) == "bob"
        for bad in ("", "x", other.token[:-1], "é" * 300, "\x00"):
            assert await store.use_session_token(bad) is None
        # Expired, revoked, or of a disabled user: not used, nothing changes.
        clock.advance(hours=2)
        assert await store.use_session_token(other.token) is None
        live = await store.create_session_token("alice", timedelta(hours=1))
        await store.set_disabled("alice", True)
        assert await store.use_session_token(live.token) is None
        await store.set_disabled("alice", False)
        assert await store.use_session_token(live.token) is None  # disabling ended it


async def test_of_logins_racing_with_one_token_only_one_gets_in(store_target: str) -> None:
    # Two replicas (two stores on one database) take the same token at once:
    # exactly one login wins, whichever it is.
    async with await open_store(store_target) as one, await open_store(store_target) as two:
        await one.add_user("alice", "h")
        for _ in range(10):
            issued = await one.create_session_token("alice", timedelta(days=1))
            results = await asyncio.gather(
                *(store.use_session_token(issued.token) for store in (one, two, one, two)))
            assert results.count("alice") == 1 and results.count(None) == 3, results
