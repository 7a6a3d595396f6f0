"""The server over several backends (real chat-server processes, stand-ins of both
kinds): model choice on the wire, routing, END's model and backend, the history,
a backend stopped mid-run and its return."""

from __future__ import annotations

import threading

from chatcore.protocol import AnswerDelta, ErrorCode

from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.v1client import OriginalV1Client, answer_text

from .clients import logged_in, wait_until

OTHER, OTHER_PASSWORD = "bob", "another password 42"
CAROL, CAROL_PASSWORD = "carol", "yet another password 7"


def two_backend_server(server_factory, a, b, **env):
    return server_factory(
        users={USER: PASSWORD, OTHER: OTHER_PASSWORD},
        CHAT_BACKENDS=f"gpu=ollama:{a.url},cpu=openai:{b.openai_url}",
        CHAT_PROBE_INTERVAL="0.5", **env)


def test_hello_lists_the_models_and_a_chat_picks_one(server_factory, standin_factory):
    gpu = standin_factory(models="llama3.2,qwen2.5:0.5b")
    cpu = standin_factory(models="smollm2:135m")
    server = two_backend_server(server_factory, gpu, cpu,
                                CHAT_MODELS="llama3.2,qwen2.5:0.5b,smollm2:135m",
                                CHAT_PULL_MODEL="false")
    client = logged_in(server.port, USER, PASSWORD)
    assert client.hello.model == "llama3.2"
    assert client.hello.models == ("llama3.2", "qwen2.5:0.5b", "smollm2:135m")
    default = client.chat("hello")
    assert default.end is not None and (default.end.model, default.end.backend) == (
        "llama3.2", "gpu")
    small = client.chat("hi small one", conversation="s", model="SmolLM2:135m")
    assert small.text.startswith("Echo: hi small one")
    assert (small.end.model, small.end.backend) == ("smollm2:135m", "cpu")
    # The conversation keeps its model; another conversation has the default.
    again = client.chat("and again", conversation="s")
    assert (again.end.model, again.end.backend) == ("smollm2:135m", "cpu")
    assert client.chat("elsewhere", conversation="t").end.model == "llama3.2"
    client.close()
    # ... also after a reconnect (the store remembers).
    client = logged_in(server.port, USER, PASSWORD)
    assert client.chat("still small?", conversation="s").end.model == "smollm2:135m"
    client.close()
    assert [r["body"]["model"] for r in cpu.requests()] == ["smollm2:135m"] * 3
    history = server.history(USER)
    by_text = {t["user"]: (t["model"], t["backend"]) for t in history}
    assert by_text["hello"] == ("llama3.2", "gpu")
    assert by_text["hi small one"] == ("smollm2:135m", "cpu")
    assert by_text["still small?"] == ("smollm2:135m", "cpu")


def test_a_conversation_goes_on_with_its_newest_turns_model_and_history_on_any_replica(
        server_factory, standin_factory, tmp_path):
    """A message reads its conversation once, in the user's line: the history
    and the model come from the same read of the store, so a turn another
    replica saved (with another model) is not missed, although this replica
    holds the conversation in its cache."""
    models = standin_factory(models="llama3.2,smollm2:135m")
    env = {"CHAT_DB": str(tmp_path / "shared.db"), "CHAT_MODELS": "llama3.2,smollm2:135m",
           "CHAT_PULL_MODEL": "false", "OLLAMA_HOST": models.url}
    a = server_factory(**env)
    b = server_factory(users={}, **env)  # the same database: the same users
    on_a, on_b = logged_in(a.port, USER, PASSWORD), logged_in(b.port, USER, PASSWORD)
    assert on_a.chat("one", conversation="c", model="smollm2:135m").end.model == "smollm2:135m"
    assert on_a.chat("two", conversation="c").end.model == "smollm2:135m"  # a caches c
    assert on_b.chat("three", conversation="c").end.model == "smollm2:135m"
    assert on_b.chat("four", conversation="c", model="llama3.2").end.model == "llama3.2"
    # Back on a: its cached copy of c ends at "two", with the small model.
    five = on_a.chat("five", conversation="c")
    assert five.end is not None and five.end.model == "llama3.2"
    last = models.requests()[-1]["body"]
    assert last["model"] == "llama3.2:latest"  # as the backend lists it
    assert [m["content"] for m in last["messages"] if m["role"] == "user"] == [
        "one", "two", "three", "four", "five"]
    on_a.close()
    on_b.close()


def test_an_unknown_model_is_a_clear_error_and_nothing_is_stored(server_factory,
                                                                 standin_factory):
    server = two_backend_server(server_factory, standin_factory(), standin_factory())
    client = logged_in(server.port, USER, PASSWORD)
    reply = client.chat("hi", model="gpt-9")
    assert reply.error is not None and reply.error.code is ErrorCode.UNKNOWN_MODEL
    assert "gpt-9" not in reply.error.message and "HELLO" in reply.error.message
    assert client.chat("fine").end is not None  # the session goes on
    client.close()
    assert [t["user"] for t in server.history(USER)] == ["fine"]


def test_v1_clients_always_get_the_default_model(server_factory, standin_factory):
    gpu = standin_factory(models="llama3.2")
    cpu = standin_factory(models="smollm2:135m")
    server = two_backend_server(server_factory, gpu, cpu, CHAT_PULL_MODEL="false",
                                CHAT_MODELS="llama3.2,smollm2:135m")
    v1 = OriginalV1Client(server.port)
    v1.login(USER, PASSWORD)
    assert answer_text(v1.chat("old client")).startswith("Echo: old client")
    v1.close()
    assert len(gpu.requests()) == 1 and cpu.requests() == []
    assert server.history(USER)[0]["model"] == "llama3.2"


def test_load_spreads_over_both_backends(server_factory, standin_factory):
    a, b = standin_factory(delay_ms=20), standin_factory(delay_ms=20)
    users = {f"u{i}": f"password number {i}" for i in range(6)}
    server = server_factory(users=users, CHAT_BACKENDS=f"a=ollama:{a.url},b=openai:{b.openai_url}",
                            CHAT_BACKEND_A_PARALLEL="2", CHAT_BACKEND_B_PARALLEL="2")
    backends: list[str] = []

    def chat(name: str, password: str) -> None:
        c = logged_in(server.port, name, password)
        for i in range(3):
            reply = c.chat(f"{name} {i}")
            assert reply.end is not None, reply.events
            backends.append(reply.end.backend)
        c.close()

    threads = [threading.Thread(target=chat, args=item) for item in users.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(backends) == 18 and set(backends) == {"a", "b"}
    assert len(a.requests()) + len(b.requests()) == 18


def test_a_backend_stopped_mid_run_the_other_serves_and_it_rejoins(server_factory,
                                                                  standin_factory):
    a, b = standin_factory(), standin_factory()
    server = server_factory(users={USER: PASSWORD, OTHER: OTHER_PASSWORD,
                                   CAROL: CAROL_PASSWORD},
                            CHAT_BACKENDS=f"a=ollama:{a.url},b=ollama:{b.url}",
                            CHAT_BACKEND_A_PARALLEL="1", CHAT_BACKEND_B_PARALLEL="1",
                            CHAT_PROBE_INTERVAL="0.5")
    first = logged_in(server.port, USER, PASSWORD)
    second = logged_in(server.port, OTHER, OTHER_PASSWORD)
    # Both slots busy with long answers, a third user waits in line.
    long = "[standin:tokens=150] [standin:delay-ms=20]"
    mid1 = first.start_chat(f"one {long}")
    assert isinstance(first.next_event(), AnswerDelta)
    mid2 = second.start_chat(f"two {long}")
    assert isinstance(second.next_event(), AnswerDelta)
    third = logged_in(server.port, CAROL, CAROL_PASSWORD)
    mid3 = third.start_chat("patient one")
    # Stop the backend that answers the first user's message.
    victim = a if any(r["body"]["messages"][-1]["content"].startswith("one")
                      for r in a.requests()) else b
    survivor_name = "b" if victim is a else "a"
    victim.stop()
    r1 = first.collect(mid1)
    assert r1.error is not None and r1.error.code is ErrorCode.MODEL_ERROR  # after tokens
    r3 = third.collect(mid3)
    assert r3.error is None and r3.text.startswith("Echo: patient one"), r3.events
    assert r3.end is not None and r3.end.backend == survivor_name
    second.collect(mid2)
    # New requests keep being served, by the survivor.
    for i in range(3):
        reply = second.chat(f"more {i}")
        assert reply.end is not None and reply.end.backend == survivor_name
    server.wait_for_log("leaves the pool")
    # It comes back and rejoins.
    victim.start()
    server.wait_for_log(" is back ")
    seen = set()

    def both_used() -> bool:
        replies = []
        threads = [threading.Thread(target=lambda c=c: replies.append(c.chat("again")))
                   for c in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seen.update(r.end.backend for r in replies if r.end is not None)
        return seen == {"a", "b"}

    wait_until(both_used, timeout=30, interval=0.1)
    for c in (first, second, third):
        c.close()
