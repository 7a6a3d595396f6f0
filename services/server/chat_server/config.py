"""
chat_server.config
~~~~~~~~~~~~~~~~~~

Every setting the server reads comes from one environment variable, parsed
here once at start-up into a frozen :class:`Settings`. A bad value stops the
server with a :exc:`ConfigError` whose text is a single line naming the
variable, the value and what was expected, e.g.::

    CHAT_PORT: expected an integer 0-65535, got 'abc'

:data:`VARIABLES` is the documentation: the README's table is generated from it
(:func:`variables_markdown`) and a test checks that each entry is parsed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher, Type

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "MAX_PASSWORD_LENGTH",
    "VARIABLES",
    "ConfigError",
    "Settings",
    "Variable",
    "field_of",
    "variables_markdown",
]

# Passwords longer than this are refused everywhere (CLI and login). Argon2 would
# hash anything, but an unbounded input is free work for an attacker.
MAX_PASSWORD_LENGTH = 1024

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, friendly assistant. Answer clearly and concisely, "
    "and say so when you do not know something."
)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A setting is invalid. ``str(exc)`` is one line, safe to print as is."""


@dataclass(frozen=True)
class Variable:
    """One documented environment variable. ``default`` is what the server uses
    when the variable is unset (``None``: unset means "not configured")."""

    name: str
    default: str | None
    description: str


VARIABLES: list[Variable] = [
    Variable("CHAT_HOST", "0.0.0.0", "Address the chat server listens on."),
    Variable("CHAT_PORT", "5050", "TCP port the chat server listens on (0 picks a free port)."),
    Variable("OLLAMA_HOST", None, "Ollama base URL; unset uses the ollama client's default http://127.0.0.1:11434."),
    Variable("OLLAMA_MODEL", "llama3.2", "Model every conversation uses."),
    Variable("CHAT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, "System prompt sent before each conversation; empty means none."),
    Variable("CHAT_DB", "./data/chat.db", "SQLite database file (users and turns); its directory is created."),
    Variable("CHAT_CUSS_WORDS_FILE", "cuss_words.txt", "Banned-words list, one word per line; reloaded when it changes."),
    Variable("CHAT_BOOTSTRAP_USER", None, "User created at start if absent (set together with CHAT_BOOTSTRAP_PASSWORD)."),
    Variable("CHAT_BOOTSTRAP_PASSWORD", None, "Password of CHAT_BOOTSTRAP_USER; never logged; an existing user's password is not changed."),
    Variable("CHAT_MAX_CONNECTIONS", "10000", "Concurrent connections; further clients are refused with a busy error."),
    Variable("CHAT_MAX_FRAME_BYTES", "65536", "Largest frame body accepted after login (1024 to 16 MiB)."),
    Variable("CHAT_AUTH_TIMEOUT", "10", "Seconds a new connection has to log in."),
    Variable("CHAT_IDLE_TIMEOUT", "900", "Seconds of silence after which a logged-in connection is closed."),
    Variable("CHAT_FRAME_TIMEOUT", "30", "Seconds a frame may take from its first byte to its last (stops slow-drip senders)."),
    Variable("CHAT_RATE_LIMIT", "20", "Messages per user per minute; 0 turns the limit off."),
    Variable("CHAT_MAX_PARALLEL", "2", "Generations in flight to Ollama at once; the rest queue fairly per user."),
    Variable("CHAT_CONTEXT_TOKENS", "3000", "History budget per request, in estimated tokens; older turns are dropped."),
    Variable("CHAT_MODEL_CONNECT_TIMEOUT", "5", "Seconds to connect to Ollama."),
    Variable("CHAT_MODEL_READ_TIMEOUT", "60", "Seconds the model may stall mid-answer before the answer ends with an error."),
    Variable("CHAT_SHUTDOWN_GRACE", "20", "Seconds answers in flight get to finish after SIGTERM."),
    Variable("CHAT_PULL_MODEL", "true", "Pull the model at start if Ollama does not have it (true/false)."),
    Variable("CHAT_LOG_FORMAT", "text", "Log format: text (readable) or json (one object per line)."),
    Variable("CHAT_LOG_LEVEL", "info", "Log level: debug, info, warning, error or critical; message text is logged only at debug."),
    Variable("CHAT_ARGON2_TIME_COST", "2", "Argon2id iterations (OWASP minimum 2; lower only for benchmarks and tests)."),
    Variable("CHAT_ARGON2_MEMORY_KIB", "19456", "Argon2id memory per hash in KiB (OWASP minimum 19456; lower only for benchmarks and tests)."),
    Variable("CHAT_ARGON2_PARALLELISM", "1", "Argon2id lanes (OWASP: 1)."),
    Variable("CHAT_METRICS_PORT", None, "Port of the Prometheus metrics endpoint (/metrics); unset turns it off, 0 picks a free port."),
    Variable("CHAT_METRICS_HOST", "127.0.0.1", "Address the metrics endpoint listens on (the compose stack: 0.0.0.0 inside its network, not published)."),
    Variable("CHAT_ADMIN_SOCKET", None, "Unix socket (mode 0600) of the local admin endpoint `chat-server status` reads; unset: admin.sock beside CHAT_DB."),
]

_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    """The server's configuration. Build it with :meth:`from_env`; the field
    defaults equal the documented defaults, so ``Settings()`` is the stock
    configuration and tests can use :func:`dataclasses.replace`."""

    host: str = "0.0.0.0"
    port: int = 5050
    ollama_host: str | None = None
    ollama_model: str = "llama3.2"
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT  # None: send no system message
    db_path: Path = Path("./data/chat.db")
    cuss_words_file: Path = Path("cuss_words.txt")
    bootstrap_user: str | None = None
    bootstrap_password: str | None = field(default=None, repr=False)
    max_connections: int = 10000
    max_frame_bytes: int = 65536
    auth_timeout: float = 10.0
    idle_timeout: float = 900.0
    frame_timeout: float = 30.0
    rate_limit: int = 20  # messages per user per minute; 0 = off
    max_parallel: int = 2
    context_tokens: int = 3000
    model_connect_timeout: float = 5.0
    model_read_timeout: float = 60.0
    shutdown_grace: float = 20.0
    pull_model: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    metrics_port: int | None = None  # None: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    admin_socket: Path | None = None  # None: admin.sock beside the database

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the environment (``os.environ`` by default). Raises
        :exc:`ConfigError` on the first bad variable."""
        env = os.environ if environ is None else environ
        r = _Reader(env)
        bootstrap_user = r.optional_str("CHAT_BOOTSTRAP_USER")
        bootstrap_password = r.optional_str("CHAT_BOOTSTRAP_PASSWORD", strip=False)
        if (bootstrap_user is None) != (bootstrap_password is None):
            raise ConfigError(
                "CHAT_BOOTSTRAP_USER and CHAT_BOOTSTRAP_PASSWORD: expected both or neither, "
                f"got only {'CHAT_BOOTSTRAP_USER' if bootstrap_user else 'CHAT_BOOTSTRAP_PASSWORD'}"
            )
        if bootstrap_user is not None:
            from .store import validate_username  # local: store is heavier to import

            try:
                validate_username(bootstrap_user)
            except ValueError as exc:
                raise ConfigError(f"CHAT_BOOTSTRAP_USER: {exc}") from None
        if bootstrap_password is not None and len(bootstrap_password) > MAX_PASSWORD_LENGTH:
            # Never echo the value of a password variable, not even in an error.
            raise ConfigError(
                f"CHAT_BOOTSTRAP_PASSWORD: expected at most {MAX_PASSWORD_LENGTH} characters, "
                f"got {len(bootstrap_password)}"
            )

        parallelism = r.integer("CHAT_ARGON2_PARALLELISM", 1, 255)
        settings = cls(
            host=r.nonempty("CHAT_HOST"),
            port=r.integer("CHAT_PORT", 0, 65535),
            ollama_host=r.optional_str("OLLAMA_HOST"),
            ollama_model=r.token("OLLAMA_MODEL"),
            system_prompt=r.optional_str("CHAT_SYSTEM_PROMPT", strip=False, empty_is_none=True),
            db_path=Path(r.nonempty("CHAT_DB")),
            cuss_words_file=Path(r.nonempty("CHAT_CUSS_WORDS_FILE")),
            bootstrap_user=bootstrap_user,
            bootstrap_password=bootstrap_password,
            max_connections=r.integer("CHAT_MAX_CONNECTIONS", 1, 1_000_000),
            max_frame_bytes=r.integer("CHAT_MAX_FRAME_BYTES", 1024, 16 * 1024 * 1024),
            auth_timeout=r.seconds("CHAT_AUTH_TIMEOUT"),
            idle_timeout=r.seconds("CHAT_IDLE_TIMEOUT"),
            frame_timeout=r.seconds("CHAT_FRAME_TIMEOUT"),
            rate_limit=r.integer("CHAT_RATE_LIMIT", 0, 1_000_000),
            max_parallel=r.integer("CHAT_MAX_PARALLEL", 1, 1024),
            context_tokens=r.integer("CHAT_CONTEXT_TOKENS", 1, 10_000_000),
            model_connect_timeout=r.seconds("CHAT_MODEL_CONNECT_TIMEOUT"),
            model_read_timeout=r.seconds("CHAT_MODEL_READ_TIMEOUT"),
            shutdown_grace=r.seconds("CHAT_SHUTDOWN_GRACE", allow_zero=True),
            pull_model=r.boolean("CHAT_PULL_MODEL"),
            log_format=r.choice("CHAT_LOG_FORMAT", ("text", "json")),  # type: ignore[arg-type]
            log_level=r.choice("CHAT_LOG_LEVEL", LOG_LEVELS),
            argon2_time_cost=r.integer("CHAT_ARGON2_TIME_COST", 1, 1000),
            # Argon2 itself requires at least 8 KiB per lane.
            argon2_memory_kib=r.integer("CHAT_ARGON2_MEMORY_KIB", 8 * parallelism, 4 * 1024 * 1024),
            argon2_parallelism=parallelism,
            metrics_port=r.optional_integer("CHAT_METRICS_PORT", 0, 65535),
            metrics_host=r.nonempty("CHAT_METRICS_HOST"),
            admin_socket=_optional_path(r.optional_str("CHAT_ADMIN_SOCKET")),
        )
        return settings

    @property
    def admin_socket_path(self) -> Path:
        """Where the admin endpoint listens (``chat-server status`` reads the same)."""
        if self.admin_socket is not None:
            return self.admin_socket
        return self.db_path.parent / "admin.sock"

    def argon2_hasher(self) -> PasswordHasher:
        """An Argon2id hasher with the configured cost. Hashes made with other
        parameters still verify; :class:`~chat_server.auth.Authenticator`
        re-hashes them on the next successful login."""
        return PasswordHasher(
            time_cost=self.argon2_time_cost,
            memory_cost=self.argon2_memory_kib,
            parallelism=self.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )

    def log_summary(self) -> dict[str, Any]:
        """The settings as a dict that is safe to log (no password)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bootstrap_password":
                value = None if value is None else "[set]"
            elif f.name == "system_prompt" and value is not None:
                value = f"[{len(value)} chars]"
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def variables_markdown() -> str:
    """The README table of environment variables."""
    lines = ["| variable | default | description |", "| --- | --- | --- |"]
    for v in VARIABLES:
        if v.default is None:
            default = "unset"
        elif v.name == "CHAT_SYSTEM_PROMPT":
            default = "a short helpful-assistant prompt"
        else:
            default = f"`{v.default}`"
        lines.append(f"| `{v.name}` | {default} | {v.description} |")
    return "\n".join(lines) + "\n"


class _Reader:
    """Reads one variable at a time, falling back to the documented default and
    raising :exc:`ConfigError` in the one-line format."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str:
        value = self._env.get(name)
        if value is None:
            default = _DEFAULTS[name]
            assert default is not None, name
            return default
        return value

    @staticmethod
    def _fail(name: str, expected: str, got: str) -> ConfigError:
        # repr() keeps the message on one line whatever the value contains.
        shown = got if len(got) <= 80 else got[:77] + "..."
        return ConfigError(f"{name}: expected {expected}, got {shown!r}")

    def nonempty(self, name: str) -> str:
        raw = self._raw(name)
        value = raw.strip()
        if not value:
            raise self._fail(name, "a non-empty value", raw)
        return value

    def token(self, name: str) -> str:
        raw = self._raw(name)
        value = raw.strip()
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise self._fail(name, "a non-empty name without spaces", raw)
        return value

    def optional_str(
        self, name: str, *, strip: bool = True, empty_is_none: bool = True
    ) -> str | None:
        value = self._env.get(name)
        if value is None:
            value = _DEFAULTS[name]
        if value is None:
            return None
        if strip:
            value = value.strip()
        if empty_is_none and not value.strip():
            return None
        return value

    def optional_integer(self, name: str, low: int, high: int) -> int | None:
        """Unset or empty: None; otherwise as :meth:`integer`."""
        value = self._env.get(name)
        if value is None:
            value = _DEFAULTS[name]
        if value is None or not value.strip():
            return None
        return self.integer(name, low, high)

    def integer(self, name: str, low: int, high: int) -> int:
        raw = self._raw(name)
        text = raw.strip()
        # int() also accepts '+5', '1_000' and non-ASCII digits; be strict.
        if not (text.isascii() and text.isdigit()):
            raise self._fail(name, f"an integer {low}-{high}", raw)
        value = int(text)
        if not low <= value <= high:
            raise self._fail(name, f"an integer {low}-{high}", raw)
        return value

    def seconds(self, name: str, *, allow_zero: bool = False) -> float:
        raw = self._raw(name)
        expected = "a number of seconds " + (">= 0" if allow_zero else "> 0")
        try:
            value = float(raw.strip())
        except ValueError:
            raise self._fail(name, expected, raw) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise self._fail(name, expected, raw)
        return value

    def boolean(self, name: str) -> bool:
        raw = self._raw(name)
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._fail(name, "one of 1/0/true/false/yes/no", raw)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        raw = self._raw(name)
        text = raw.strip().lower()
        if text not in options:
            raise self._fail(name, "one of " + "/".join(options), raw)
        return text


# Keep the parsing code and the documentation table from drifting apart: every
# documented variable must have a Settings field reading it (checked by tests).
_FIELD_OF_VARIABLE: dict[str, str] = {
    "CHAT_HOST": "host",
    "CHAT_PORT": "port",
    "OLLAMA_HOST": "ollama_host",
    "OLLAMA_MODEL": "ollama_model",
    "CHAT_SYSTEM_PROMPT": "system_prompt",
    "CHAT_DB": "db_path",
    "CHAT_CUSS_WORDS_FILE": "cuss_words_file",
    "CHAT_BOOTSTRAP_USER": "bootstrap_user",
    "CHAT_BOOTSTRAP_PASSWORD": "bootstrap_password",
    "CHAT_MAX_CONNECTIONS": "max_connections",
    "CHAT_MAX_FRAME_BYTES": "max_frame_bytes",
    "CHAT_AUTH_TIMEOUT": "auth_timeout",
    "CHAT_IDLE_TIMEOUT": "idle_timeout",
    "CHAT_FRAME_TIMEOUT": "frame_timeout",
    "CHAT_RATE_LIMIT": "rate_limit",
    "CHAT_MAX_PARALLEL": "max_parallel",
    "CHAT_CONTEXT_TOKENS": "context_tokens",
    "CHAT_MODEL_CONNECT_TIMEOUT": "model_connect_timeout",
    "CHAT_MODEL_READ_TIMEOUT": "model_read_timeout",
    "CHAT_SHUTDOWN_GRACE": "shutdown_grace",
    "CHAT_PULL_MODEL": "pull_model",
    "CHAT_LOG_FORMAT": "log_format",
    "CHAT_LOG_LEVEL": "log_level",
    "CHAT_ARGON2_TIME_COST": "argon2_time_cost",
    "CHAT_ARGON2_MEMORY_KIB": "argon2_memory_kib",
    "CHAT_ARGON2_PARALLELISM": "argon2_parallelism",
    "CHAT_METRICS_PORT": "metrics_port",
    "CHAT_METRICS_HOST": "metrics_host",
    "CHAT_ADMIN_SOCKET": "admin_socket",
}


def field_of(variable: str) -> str:
    """The :class:`Settings` field an environment variable sets."""
    return _FIELD_OF_VARIABLE[variable]

