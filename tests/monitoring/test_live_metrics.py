"""The metrics endpoint of a real server process, scraped over HTTP and parsed
with prometheus_client's parser: every documented metric is there, and each one
moves when the matching thing happens (a login, a refusal, an answer...)."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from chat_server.metrics import METRICS, OUTCOME_REASONS
from chatcore.protocol import AuthResult, Cancel, Error, ErrorCode
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import PASSWORD, USER, LiveServer
from tests.fixtures.v1client import OriginalV1Client, answer_text
from tests.server.clients import V2Client, logged_in, wait_until

from .promql import MONITORING, metric_names, promtool

_METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")
#: Never send loopback test traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.timeout(180)


def say(text: str) -> str:
    return f"[standin:say-b64={base64.b64encode(text.encode()).decode()}]"


@dataclass
class Scrape:
    text: str

    def __post_init__(self) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in self.families.values() for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


@dataclass
class Monitored:
    server: LiveServer
    port: int

    def scrape(self) -> Scrape:
        with _OPENER.open(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            return Scrape(resp.read().decode())

    def delta(self, action: Callable[[], object], name: str, **labels: str) -> float:
        before = self.scrape().value(name, **labels)
        action()
        return self.scrape().value(name, **labels) - before

    def wait_value(self, name: str, wanted: float, **labels: str) -> None:
        wait_until(lambda: self.scrape().value(name, **labels) == wanted, timeout=20)


@pytest.fixture
def monitored_factory(server_factory) -> Callable[..., Monitored]:
    def make(**env: str) -> Monitored:
        server = server_factory(CHAT_METRICS_PORT="0", **env)
        m = server.wait_for_log(_METRICS_LINE)
        assert m.group(1) == "127.0.0.1"  # the documented default: loopback only
        return Monitored(server, int(m.group(2)))
    return make


@pytest.fixture
def monitored(monitored_factory) -> Monitored:
    return monitored_factory()


# ---- the exposition --------------------------------------------------------------------
def test_every_documented_metric_is_exported(monitored: Monitored):
    scrape = monitored.scrape()
    for doc in METRICS:
        family = doc.name.removesuffix("_total") if doc.kind == "counter" else doc.name
        assert family in scrape.families, doc.name
        assert scrape.families[family].type == doc.kind, doc.name
    assert scrape.value("chat_backend_up", backend="ollama") == 1
    assert scrape.value("chat_backend_state", backend="ollama", state="ready") == 1
    info = next(s for s in scrape.families["chat_build_info"].samples)
    assert info.labels["model"] == "llama3.2" and info.value == 1
    # process metrics of the client library come along (the dashboard shows memory)
    assert scrape.value("process_resident_memory_bytes") > 0


def test_promtool_check_metrics_accepts_the_exposition(monitored: Monitored):
    # After some traffic, so that every kind of sample is there.
    client = logged_in(monitored.server.port, USER, PASSWORD)
    client.chat("hello")
    client.close()
    text = monitored.scrape().text
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_the_dashboard_names_only_metrics_the_server_exports(monitored: Monitored):
    import json

    dashboard = json.loads((MONITORING / "grafana/dashboards/chat-service.json").read_text())
    wanted: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            wanted |= metric_names(target["expr"])
    exported = monitored.scrape().names()
    missing = wanted - exported - {"up"}  # `up` is made by Prometheus for every target
    assert not missing, f"the dashboard reads metrics the server does not export: {missing}"


def test_the_alert_rules_name_only_metrics_the_server_exports(monitored: Monitored):
    import yaml

    doc = yaml.safe_load((MONITORING / "prometheus/alerts.yml").read_text())
    wanted = set().union(*(metric_names(r["expr"]) for g in doc["groups"] for r in g["rules"]))
    assert not wanted - monitored.scrape().names() - {"up"}


# ---- connections and logins --------------------------------------------------------------
def test_a_login_moves_logins_connections_and_users(monitored: Monitored):
    before = monitored.scrape()
    client = logged_in(monitored.server.port, USER, PASSWORD)
    during = monitored.scrape()
    assert during.value("chat_logins_total", result="success") - before.value(
        "chat_logins_total", result="success") == 1
    assert during.value("chat_connections_total", protocol="v2", transport="plain") - before.value(
        "chat_connections_total", protocol="v2", transport="plain") == 1
    assert during.value("chat_connections_open", protocol="v2", transport="plain") == 1
    assert during.value("chat_users_logged_in") == 1
    client.bye()
    client.close()
    monitored.wait_value("chat_connections_open", 0, protocol="v2", transport="plain")
    assert monitored.scrape().value("chat_users_logged_in") == 0


def test_a_v1_connection_counts_as_v1(monitored: Monitored):
    def v1_session() -> None:
        client = OriginalV1Client(monitored.server.port)
        _, reply = client.login(USER, PASSWORD)
        assert reply.strip()
        assert answer_text(client.chat("hello"))
        client.disconnect()
        client.close()

    assert monitored.delta(v1_session, "chat_connections_total", protocol="v1",
                           transport="plain") == 1


def test_failed_and_throttled_logins_are_counted_without_names(monitored: Monitored):
    def fail() -> object:
        client = V2Client(monitored.server.port)
        result = client.login(USER, "wrong password marker-pw-123")
        client.close()
        return result

    before = monitored.scrape()
    results = [fail() for _ in range(5)]
    after = monitored.scrape()
    throttled = sum(1 for r in results if isinstance(r, Error) and r.code is ErrorCode.AUTH_THROTTLED)
    failed = sum(1 for r in results if isinstance(r, AuthResult) and not r.ok)
    assert throttled >= 1 and failed + throttled == 5
    assert after.value("chat_logins_total", result="failure") - before.value(
        "chat_logins_total", result="failure") == failed
    assert after.value("chat_logins_total", result="throttled") - before.value(
        "chat_logins_total", result="throttled") == throttled
    assert "marker-pw-123" not in after.text and USER not in after.text


def test_connections_over_the_limit_are_counted_as_rejected(monitored_factory):
    monitored = monitored_factory(CHAT_MAX_CONNECTIONS="1")
    first = logged_in(monitored.server.port, USER, PASSWORD)

    def over_the_limit() -> None:
        with socket.create_connection(("127.0.0.1", monitored.server.port), timeout=10) as s:
            s.recv(4096)  # the refusal (or EOF)

    assert monitored.delta(over_the_limit, "chat_connections_rejected_total",
                           reason="connection_limit") == 1
    first.close()


# ---- messages ---------------------------------------------------------------------------
def test_an_answer_moves_outcome_tokens_timings_queue_and_store(monitored: Monitored):
    client = logged_in(monitored.server.port, USER, PASSWORD)
    before = monitored.scrape()
    reply = client.chat("hello there")
    after = monitored.scrape()
    client.close()
    assert reply.end is not None and reply.end.answer_tokens > 0

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("chat_messages_total", outcome="answered", reason="none") == 1
    assert moved("chat_prompt_tokens_total") == reply.end.prompt_tokens
    assert moved("chat_answer_tokens_total") == reply.end.answer_tokens
    assert moved("chat_first_token_seconds_count") == 1
    assert moved("chat_answer_duration_seconds_count") == 1
    assert moved("chat_answer_duration_seconds_sum") > 0
    assert moved("chat_queue_wait_seconds_count") == 1
    assert moved("chat_store_writes_total", result="ok") == 1
    assert moved("chat_store_write_seconds_count") == 1
    assert after.value("chat_generations_in_flight") == 0 and after.value("chat_queue_length") == 0


@pytest.mark.parametrize(("text", "reason"), [
    ("you abcxyz", "banned_word"),
    ("write to me at someone@example.com", "personal_data"),
    ("call me on +44 20 7946 0958", "personal_data"),
])
def test_a_refusal_is_counted_with_its_reason(monitored_factory, tmp_path, text, reason):
    words = tmp_path / "words.txt"
    words.write_text("abcxyz\n")
    monitored = monitored_factory(CHAT_CUSS_WORDS_FILE=str(words))
    client = logged_in(monitored.server.port, USER, PASSWORD)

    def refused() -> None:
        reply = client.chat(text)
        assert reply.error is not None and reply.error.code is ErrorCode.REFUSED

    assert monitored.delta(refused, "chat_messages_total", outcome="refused", reason=reason) == 1
    client.close()


def test_refusals_of_one_user_raise_the_top_user_gauge_without_naming_them(monitored_factory, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("abcxyz\n")
    monitored = monitored_factory(
        CHAT_CUSS_WORDS_FILE=str(words),
        users={"alice": PASSWORD, "bob": PASSWORD})
    alice = logged_in(monitored.server.port, "alice", PASSWORD)
    bob = logged_in(monitored.server.port, "bob", PASSWORD)
    for _ in range(4):
        assert alice.chat("abcxyz marker-text-42").error is not None
    assert bob.chat("abcxyz").error is not None
    # alice reconnects: her refusals still add up (counted per user, not per connection)
    alice.close()
    alice = logged_in(monitored.server.port, "alice", PASSWORD)
    assert alice.chat("abcxyz").error is not None
    scrape = monitored.scrape()
    assert scrape.value("chat_moderation_refusals_max_per_user") == 5
    assert scrape.value("chat_messages_total", outcome="refused", reason="banned_word") == 6
    for secret in ("alice", "bob", "marker-text-42", "abcxyz"):
        assert secret not in scrape.text
    alice.close()
    bob.close()


def test_rate_limited_messages_are_counted(monitored_factory):
    monitored = monitored_factory(CHAT_RATE_LIMIT="1")
    client = logged_in(monitored.server.port, USER, PASSWORD)
    assert client.chat("one").error is None

    def limited() -> None:
        reply = client.chat("two")
        assert reply.error is not None and reply.error.code is ErrorCode.RATE_LIMITED

    assert monitored.delta(limited, "chat_messages_total", outcome="rate_limited", reason="none") == 1
    client.close()


def test_a_cancelled_answer_is_counted(monitored: Monitored):
    client = logged_in(monitored.server.port, USER, PASSWORD)

    def cancel() -> None:
        mid = client.start_chat("[standin:tokens=500][standin:delay-ms=20] long")
        client.collect(mid, until=lambda e: getattr(e, "text", None))  # the first delta
        client.send(Cancel(mid))
        reply = client.collect(mid)
        assert reply.end is not None and reply.end.reason == "cancelled"

    assert monitored.delta(cancel, "chat_messages_total", outcome="cancelled", reason="user") == 1
    client.close()


def test_a_disconnect_mid_answer_is_counted_as_interrupted(monitored: Monitored):
    before = monitored.scrape().value("chat_messages_total", outcome="interrupted", reason="disconnect")
    client = logged_in(monitored.server.port, USER, PASSWORD)
    mid = client.start_chat("[standin:tokens=500][standin:delay-ms=20] long")
    client.collect(mid, until=lambda e: getattr(e, "text", None))
    client.close()
    monitored.wait_value("chat_messages_total", before + 1, outcome="interrupted", reason="disconnect")


def test_a_broken_answer_is_counted_as_failed(monitored: Monitored):
    client = logged_in(monitored.server.port, USER, PASSWORD)

    def broken() -> None:
        reply = client.chat("[standin:error-mid-stream] hi")
        assert reply.error is not None and reply.error.code is ErrorCode.MODEL_ERROR

    assert monitored.delta(broken, "chat_messages_total", outcome="failed", reason="model_error") == 1
    client.close()


def test_an_unreachable_model_is_counted_and_shows_in_backend_health(monitored: Monitored):
    client = logged_in(monitored.server.port, USER, PASSWORD)
    monitored.server.standin.stop()
    try:
        def unreachable() -> None:
            reply = client.chat("hello")
            assert reply.error is not None and reply.error.code is ErrorCode.MODEL_UNAVAILABLE

        assert monitored.delta(unreachable, "chat_messages_total", outcome="failed",
                               reason="model_unavailable") == 1
        scrape = monitored.scrape()
        assert scrape.value("chat_backend_up", backend="ollama") == 0
        assert scrape.value("chat_backend_state", backend="ollama", state="unavailable") == 1
    finally:
        monitored.server.standin.start()
    monitored.wait_value("chat_backend_up", 1, backend="ollama")
    client.close()


def test_a_message_while_the_model_downloads_counts_as_model_loading(monitored_factory,
                                                                    standin_factory):
    slow_pull = standin_factory(models="", pull_seconds=30)
    monitored = monitored_factory(standin_url=slow_pull.url, wait_ready=False)
    monitored.server.wait_for_log("pulling")
    client = logged_in(monitored.server.port, USER, PASSWORD)

    def loading() -> None:
        reply = client.chat("hello")
        assert reply.error is not None and reply.error.code is ErrorCode.MODEL_LOADING

    assert monitored.delta(loading, "chat_messages_total", outcome="failed", reason="model_loading") == 1
    assert monitored.scrape().value("chat_backend_state", backend="ollama", state="pulling") == 1
    client.close()


def test_queue_length_and_generations_in_flight_while_users_wait(monitored_factory):
    monitored = monitored_factory(CHAT_MAX_PARALLEL="1", users={"alice": PASSWORD, "bob": PASSWORD})
    alice = logged_in(monitored.server.port, "alice", PASSWORD)
    bob = logged_in(monitored.server.port, "bob", PASSWORD)
    slow = "[standin:tokens=400][standin:delay-ms=25] long"
    a = alice.start_chat(slow)
    alice.collect(a, until=lambda e: getattr(e, "text", None))
    b = bob.start_chat(slow)
    bob.collect(b, until=lambda e: getattr(e, "position", None) == 1)  # bob is told he waits
    scrape = monitored.scrape()
    assert scrape.value("chat_queue_length") == 1
    assert scrape.value("chat_generations_in_flight") == 1
    alice.send(Cancel(a))
    alice.collect(a)
    bob.send(Cancel(b))
    bob.collect(b)
    monitored.wait_value("chat_generations_in_flight", 0)
    assert monitored.scrape().value("chat_queue_length") == 0
    alice.close()
    bob.close()


def test_every_outcome_reason_pair_is_exported_from_the_start(monitored: Monitored):
    scrape = monitored.scrape()
    for outcome, reasons in OUTCOME_REASONS.items():
        for reason in reasons:
            assert ("chat_messages_total", (("outcome", outcome.value), ("reason", reason.value))) \
                in scrape.samples


# ---- the endpoint itself ------------------------------------------------------------------
def test_a_stalled_scrape_does_not_stall_chats_or_other_scrapes(monitored: Monitored):
    # The endpoint runs in its own threads: a client that connects and never
    # sends its request holds one of them, not the event loop.
    stalled = [socket.create_connection(("127.0.0.1", monitored.port), timeout=30) for _ in range(3)]
    stalled[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
    try:
        client = logged_in(monitored.server.port, USER, PASSWORD)
        assert client.chat("hello").end is not None
        client.close()
        assert "chat_messages_total" in monitored.scrape().text
    finally:
        for s in stalled:
            s.close()


def test_scrapes_in_parallel_with_chats(monitored: Monitored):
    errors: list[BaseException] = []
    stop = threading.Event()

    def scraper() -> None:
        try:
            while not stop.is_set():
                monitored.scrape()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scraper) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        client = logged_in(monitored.server.port, USER, PASSWORD)
        for i in range(10):
            assert client.chat(f"message {i}").end is not None
        client.close()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors
    assert monitored.scrape().value("chat_messages_total", outcome="answered", reason="none") == 10


def test_metrics_are_off_unless_a_port_is_configured(server_factory):
    server = server_factory()
    assert not _METRICS_LINE.search(server.log_text())


def test_a_metrics_port_in_use_stops_the_start_with_one_clear_line(server_factory):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = server_factory(start=False, CHAT_METRICS_PORT=str(port))
        with pytest.raises(RuntimeError, match="exited 1"):
            server.start(timeout=20)
        assert re.search(rf"cannot serve metrics on 127\.0\.0\.1:{port}", server.log_text())



# ---- TLS and connection policy ------------------------------------------------------
def test_a_tls_connection_counts_as_v2_over_tls(monitored: Monitored):
    from tests.fixtures.tls import tls_socket

    def tls_session() -> None:
        client = V2Client(monitored.server.port, sock=tls_socket(monitored.server.port))
        assert isinstance(client.login(USER, PASSWORD), AuthResult)
        assert client.chat("over TLS").end is not None
        client.close()

    assert monitored.delta(tls_session, "chat_connections_total", protocol="v2",
                           transport="tls") == 1


@pytest.mark.parametrize(("env", "reason"), [
    ({"CHAT_REQUIRE_TLS": "true"}, "tls_required"),
    ({"CHAT_ALLOW_V1": "false"}, "v1_disabled"),
])
def test_connections_refused_by_policy_are_counted(monitored_factory, env, reason):
    monitored = monitored_factory(**env)

    def refused() -> None:
        first = b"HELLO" if reason == "tls_required" else b"5"
        with socket.create_connection(("127.0.0.1", monitored.server.port), timeout=10) as s:
            s.sendall(first)
            s.recv(4096)

    assert monitored.delta(refused, "chat_connections_rejected_total", reason=reason) == 1


def test_a_junk_tls_handshake_is_counted(monitored: Monitored):
    def junk() -> None:
        with socket.create_connection(("127.0.0.1", monitored.server.port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x00\x05junkjunkjunk")
            s.recv(4096)

    before = monitored.scrape().value("chat_connections_rejected_total", reason="handshake")
    junk()
    monitored.wait_value("chat_connections_rejected_total", before + 1, reason="handshake")


def test_connections_over_the_per_address_cap_are_counted(monitored_factory):
    monitored = monitored_factory(CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS="1")
    waiting = V2Client(monitored.server.port)  # connected, not logged in: fills the cap

    def over_the_cap() -> None:
        with socket.create_connection(("127.0.0.1", monitored.server.port), timeout=10) as s:
            s.sendall(b"HELLO")
            s.recv(4096)

    assert monitored.delta(over_the_cap, "chat_connections_rejected_total",
                           reason="address_limit") == 1
    waiting.close()
