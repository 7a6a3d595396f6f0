"""Structured logging: JSON lines, readable text, session fields, redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from chat_server.logs import LogSampler, SessionLogger, setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_have_the_standard_and_extra_fields() -> None:
    out = io.StringIO()
    setup_logging("json", "info", stream=out)
    log = SessionLogger("chat_server.session", "s-42").bind(user="alice")
    log.info("turn %s done", 3, extra={"event": "turn_done", "answer_tokens": 17})
    log.debug("not shown at info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "info"
    assert entry["logger"] == "chat_server.session"
    assert entry["msg"] == "turn 3 done"
    assert entry["session"] == "s-42"
    assert entry["user"] == "alice"
    assert entry["event"] == "turn_done"
    assert entry["answer_tokens"] == 17
    assert entry["ts"].endswith("Z") and entry["ts"][10] == "T"


def test_json_exception_and_odd_values() -> None:
    out = io.StringIO()
    setup_logging("json", "debug", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"path": object()})
    entry = json.loads(out.getvalue())
    assert "RuntimeError: boom" in entry["exc"]
    assert entry["path"].startswith("<object")


def test_text_format_is_one_readable_line_even_with_hostile_values() -> None:
    out = io.StringIO()
    setup_logging("text", "info", stream=out)
    log = SessionLogger(logging.getLogger("chat_server.session"), "abc")
    log.info("login failed", extra={"user": "evil\nFAKE 2025 INFO forged", "event": "auth_failed"})
    log.info("msg with\r\nnewline")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert " INFO " in lines[0] and "chat_server.session login failed" in lines[0]
    assert "session=abc" in lines[0] and "event=auth_failed" in lines[0]
    assert "evil\\nFAKE" in lines[0]
    assert "with\\r\\nnewline" in lines[1]


def test_password_fields_are_redacted() -> None:
    out = io.StringIO()
    setup_logging("json", "debug", stream=out)
    logging.getLogger("t").info("oops", extra={"password": "hunter2", "new_password": "x1"})
    entry = json.loads(out.getvalue())
    assert entry["password"] == "[redacted]" and entry["new_password"] == "[redacted]"
    assert "hunter2" not in out.getvalue()


def test_session_logger_merges_and_bind_does_not_mutate() -> None:
    out = io.StringIO()
    setup_logging("json", "info", stream=out)
    base = SessionLogger("s", "one")
    bound = base.bind(user="bob")
    base.info("a", extra={"event": "e1"})
    bound.info("b", extra={"event": "e2"})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {**first, "session": "one", "event": "e1"} and "user" not in first
    assert second["session"] == "one" and second["user"] == "bob" and second["event"] == "e2"
    assert bound.session == "one"


def test_levels_and_replacing_handlers() -> None:
    out1, out2 = io.StringIO(), io.StringIO()
    setup_logging("text", "warning", stream=out1)
    setup_logging("text", "WARNING", stream=out2)  # replaces, does not add
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").warning("shown")
    assert out1.getvalue() == ""
    assert "shown" in out2.getvalue() and "hidden" not in out2.getvalue()
    assert logging.getLogger("httpx").level == logging.WARNING
    with pytest.raises(ValueError):
        setup_logging("xml", "info")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        setup_logging("text", "loud")


# ---- a flood of identical lines (docs/SECURITY.md §10) -----------------------------------
def test_log_sampler_logs_one_line_per_key_per_interval_and_counts_the_rest():
    now = [100.0]
    sampler = LogSampler(interval=10.0, clock=lambda: now[0])
    assert sampler.admit(("address", "10.0.0.1")) == 0  # the first is logged
    assert [sampler.admit(("address", "10.0.0.1")) for _ in range(500)] == [None] * 500
    assert sampler.admit(("address", "10.0.0.2")) == 0  # another key is not held back
    now[0] += 10.0
    assert sampler.admit(("address", "10.0.0.1")) == 500  # the next line says how many were left out
    assert sampler.admit(("address", "10.0.0.1")) is None


def test_log_sampler_forgets_keys_beyond_its_bound():
    sampler = LogSampler(interval=10.0, max_keys=3, clock=lambda: 0.0)
    for key in range(3):
        assert sampler.admit(key) == 0
    assert sampler.admit(99) == 0  # a full table starts afresh instead of growing
    assert sampler.admit(0) == 0  # so key 0 was forgotten: logged again at once
    assert sampler.admit(99) is None
