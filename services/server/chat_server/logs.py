"""
chat_server.logs
~~~~~~~~~~~~~~~~

Structured logging on top of the standard :mod:`logging` module.

* ``text``: one readable line per record,
  ``2025-01-02T03:04:05.678Z INFO  chat_server.session login ok session=3f2a user=bob``.
* ``json``: one JSON object per line with ``ts``, ``level``, ``logger``, ``msg``
  and every ``extra=`` field (``session``, ``user``, ``event``, ...).

Fields are passed as ``extra={...}``; :class:`SessionLogger` adds ``session``
(and, once known, ``user``) to every record of one connection.

Rules for callers: never pass a password, in the message or in a field (fields
whose name contains "password" are redacted anyway, as a seat belt); log chat
message text only at DEBUG. Peer-controlled strings are escaped in text mode so
a user name with a newline cannot forge a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

__all__ = [
    "JsonFormatter",
    "LogSampler",
    "SessionLogger",
    "TextFormatter",
    "login_name_fields",
    "name_hash",
    "setup_logging",
]

# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_REDACTED = "[redacted]"

# Libraries that log every HTTP request at INFO; quiet them unless debugging.
_CHATTY_LIBRARIES = ("httpx", "httpcore", "asyncio")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        out[key] = _REDACTED if "password" in key.lower() else value
    return out


def _timestamp(record: logging.LogRecord) -> str:
    dt = datetime.fromtimestamp(record.created, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _escape(text: str) -> str:
    # Keep one record on one line: escape control characters (CR, LF, ESC...)
    # the way repr() would, without the quotes.
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd extra value (a Path, an exception) must not make
        # logging itself fail.
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> <msg> key=value ...`` on one line (tracebacks follow)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            f"{record.levelname:<5}",
            record.name,
            _escape(record.getMessage()),
        ]
        for key, value in _fields(record).items():
            shown = value if isinstance(value, int | float | bool) else _escape(str(value))
            if isinstance(shown, str) and (not shown or any(c in shown for c in ' ="')):
                shown = '"' + shown.replace('"', '\\"') + '"'
            parts.append(f"{key}={shown}")
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def setup_logging(
    fmt: Literal["text", "json"] = "text",
    level: str | int = "info",
    *,
    stream: IO[str] | None = None,
) -> None:
    """Configure the root logger (replacing earlier handlers) to write ``fmt``
    records at ``level`` and above to ``stream`` (default: stderr)."""
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Neither format names a thread or process: skip finding them for every
    # record (the logging HOWTO's optimisations).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)


class SessionLogger(logging.LoggerAdapter):
    """A logger for one connection: every record carries ``session=<id>`` plus
    any fields bound with :meth:`bind` (e.g. ``user`` after login).

    Unlike the stock :class:`~logging.LoggerAdapter`, per-call fields are
    merged with the bound ones instead of replacing them, and may be given as
    keywords: ``log.info("turn finished", event="turn_end", message_id=3)``
    (``extra={...}`` works too). A *quiet* logger (a container healthcheck's
    session, every few seconds) demotes everything below WARNING to DEBUG."""

    def __init__(
        self, logger: logging.Logger | str, session: str, *, quiet: bool = False, **fields: Any
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        super().__init__(logger, {"session": session, **fields})
        self.quiet = quiet

    @property
    def session(self) -> str:
        assert self.extra is not None
        return str(self.extra["session"])

    def bind(self, **fields: Any) -> SessionLogger:
        """A new logger with more fields (the original is unchanged)."""
        assert self.extra is not None
        extra = dict(self.extra)
        session = str(extra.pop("session"))
        return SessionLogger(self.logger, session, quiet=self.quiet, **{**extra, **fields})

    def log(
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **fields: object,
    ) -> None:
        if self.quiet and level < logging.WARNING:
            level = logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        merged = {**(self.extra or {}), **(extra or {}), **fields}
        self.logger.log(level, msg, *args, exc_info=exc_info, stack_info=stack_info,
                        stacklevel=stacklevel + 1, extra=merged)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        call_extra: Mapping[str, Any] = kwargs.get("extra") or {}
        kwargs["extra"] = {**(self.extra or {}), **call_extra}
        return msg, kwargs


# A key made once per process: the same name gives the same hash for as long
# as the server runs (so repeated attempts can be told apart and counted), and
# nobody can test guesses against a logged hash without the key.
_NAME_KEY = secrets.token_bytes(32)


class LogSampler:
    """At most one log line per key every ``interval`` seconds.

    A flood of identical events (one client reconnecting thousands of times a
    second and refused each time) must not become a flood of log lines: each
    costs the event loop a formatted write, and together they fill the disk.
    :meth:`admit` says whether to log this one, and how many were left out
    since the last that was logged (to put in that line). At most ``max_keys``
    keys are remembered (then the table starts afresh)."""

    def __init__(self, interval: float = 10.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._keys: dict[Hashable, tuple[float, int]] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: leave this line out. Otherwise log it, with the returned
        number of lines left out before it."""
        now = self._clock()
        last = self._keys.get(key)
        if last is not None and now - last[0] < self.interval:
            self._keys[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._keys) >= self.max_keys:
            self._keys.clear()
        self._keys[key] = (now, 0)
        return 0 if last is None else last[1]


def name_hash(name: str) -> str:
    """A short keyed hash (HMAC-SHA256, 12 hex digits) of a name that must not
    be logged as typed: a failed login's user name may be a password typed
    into the wrong field (docs/SECURITY.md)."""
    digest = hmac.new(_NAME_KEY, name.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return digest.hexdigest()[:12]


def login_name_fields(name: str, *, exists: bool) -> dict[str, str]:
    """Log fields that identify a login's user name: the name itself only for
    an account that exists, else ``user_hash`` (see :func:`name_hash`)."""
    if exists:
        return {"user": name if len(name) <= 64 else name[:61] + "..."}
    return {"user_hash": name_hash(name)}
