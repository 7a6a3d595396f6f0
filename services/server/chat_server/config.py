"""
chat_server.config
~~~~~~~~~~~~~~~~~~

Every setting the server reads comes from one environment variable, parsed
here once at start-up into a frozen :class:`Settings`. A bad value stops the
server with a :exc:`ConfigError` whose text is a single line naming the
variable, the value and what was expected, e.g.::

    CHAT_PORT: expected an integer 0-65535, got 'abc'

The model side (``CHAT_BACKENDS`` and the per-backend variables, ``CHAT_MODEL``,
``CHAT_MODELS``) is checked as a whole: every mistake there gets its own line
in the one :exc:`ConfigError`.

:data:`VARIABLES` is the documentation: the README's table is generated from it
(:func:`variables_markdown`) and a test checks that each entry is parsed.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from argon2 import PasswordHasher, Type
from chatcore.privacy import DEFAULT_REGIONS, parse_regions
from chatcore.protocol import DEFAULT_MAX_UNAUTH_FRAME_SIZE, MAX_NAME_LENGTH, name_problem

from .proxy_protocol import TrustedProxies
from .store import is_database_url, validate_username

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "LEGACY_BACKEND",
    "MAX_PASSWORD_LENGTH",
    "VARIABLES",
    "BackendKind",
    "BackendSpec",
    "ConfigError",
    "Settings",
    "Variable",
    "field_of",
    "model_key",
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
    """A setting is invalid. ``str(exc)`` is one line per mistake, safe to print as is."""


class BackendKind(enum.StrEnum):
    """How the server talks to a model backend."""

    OLLAMA = "ollama"  # Ollama's REST API through the official ``ollama`` client
    OPENAI = "openai"  # any OpenAI-compatible server through the official ``openai`` client


#: The name of the one backend configured by OLLAMA_HOST when CHAT_BACKENDS is unset.
LEGACY_BACKEND = "ollama"


@dataclass(frozen=True)
class BackendSpec:
    """One configured model backend (an entry of ``CHAT_BACKENDS``)."""

    name: str
    kind: BackendKind
    url: str | None  # None: the ollama client's default address
    max_parallel: int = 2
    api_key: str | None = field(default=None, repr=False)

    def summary(self) -> str:
        """For the configuration log line: never the key itself."""
        key = " api_key=[set]" if self.api_key else ""
        return f"{self.name}={self.kind.value}:{self.url or 'default'} parallel={self.max_parallel}{key}"


#: The v2 HELLO names the default model and lists the offered ones, and it is sent
#: before login, when a client refuses frames over DEFAULT_MAX_UNAUTH_FRAME_SIZE
#: (docs/PROTOCOL.md §10). This much of it is kept for the rest: the version, the
#: agent and the limits (seven today, ~330 bytes with every value at 2**53-1).
HELLO_RESERVE = 768
HELLO_MODELS_BUDGET = DEFAULT_MAX_UNAUTH_FRAME_SIZE - HELLO_RESERVE


def hello_models_size(model: str, models: tuple[str, ...]) -> int:
    """Bytes that ``model`` and ``models`` take in the HELLO body (its
    ``"model":…,"models":[…]`` part, as the v2 writer encodes them)."""
    part = json.dumps({"model": model, "models": list(models)}, separators=(",", ":"),
                      ensure_ascii=False)
    return len(part.encode("utf-8"))


def model_key(name: str) -> str:
    """The form in which two model names are compared.

    ``llama3.2`` and ``llama3.2:latest`` name the same model (Ollama's rule: a
    name without a tag means ``:latest``), and model names are not case
    sensitive.
    """
    key = name.strip().lower()
    if ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


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
    Variable("CHAT_MODEL", "llama3.2", "Default model: v1 clients and conversations that name none use it; pulled at start on Ollama backends."),
    Variable("OLLAMA_MODEL", None, "Older name of CHAT_MODEL, still accepted (CHAT_MODEL wins when both are set)."),
    Variable("CHAT_MODELS", None, "Comma-separated models users may choose from (v2 clients); must include CHAT_MODEL and fit the v2 HELLO (3328 bytes of names in all); unset: only CHAT_MODEL."),
    Variable("CHAT_BACKENDS", None, "Model backends, comma-separated NAME=KIND:URL with KIND ollama or openai (an OpenAI-compatible server; its URL includes /v1), e.g. gpu=ollama:http://gpu:11434,cpu=openai:http://llamacpp:8080/v1; unset: one Ollama at OLLAMA_HOST, named ollama."),
    Variable("CHAT_BACKEND_<NAME>_PARALLEL", None, "Generations in flight at once on backend NAME (upper case); unset: CHAT_MAX_PARALLEL."),
    Variable("CHAT_BACKEND_<NAME>_API_KEY", None, "API key sent to backend NAME as a bearer token; never logged."),
    Variable("CHAT_BACKEND_<NAME>_API_KEY_FILE", None, "File holding backend NAME's API key (e.g. a Docker secret), instead of CHAT_BACKEND_<NAME>_API_KEY."),
    Variable("OLLAMA_HOST", None, "Ollama base URL when CHAT_BACKENDS is unset; unset uses the ollama client's default http://127.0.0.1:11434."),
    Variable("CHAT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, "System prompt sent before each conversation; empty means none."),
    Variable("CHAT_DB", "./data/chat.db", "Database: a SQLite file (its directory is created, private to the server) or a PostgreSQL URL `postgresql://USER@HOST:PORT/DBNAME`."),
    Variable("CHAT_DB_PASSWORD", None, "PostgreSQL password, if not in the CHAT_DB URL; never logged."),
    Variable("CHAT_DB_PASSWORD_FILE", None, "File holding the PostgreSQL password (a Docker secret, for instance); the alternative to CHAT_DB_PASSWORD."),
    Variable("CHAT_CUSS_WORDS_FILE", "cuss_words.txt", "Banned-words list, one word per line; reloaded when it changes."),
    Variable("CHAT_PHONE_REGIONS", ",".join(DEFAULT_REGIONS), "Countries (ISO codes, comma-separated) whose national phone formats count as phone numbers; international (+…) numbers always do."),
    Variable("CHAT_BOOTSTRAP_USER", "admin", "The first user. With CHAT_BOOTSTRAP_PASSWORD: created at start if absent. Without it: created only when the database has no users at all, with a generated password that `chat-server initial-password` prints (kept in CHAT_DATA_DIR until the password is changed)."),
    Variable("CHAT_BOOTSTRAP_PASSWORD", None, "Password of CHAT_BOOTSTRAP_USER (no password file then); never logged; an existing user's password is not changed. Unset: generated at the first start."),
    Variable("CHAT_MAX_CONNECTIONS", "10000", "Concurrent connections; further clients are refused with a busy error."),
    Variable("CHAT_MAX_CONNECTIONS_PER_ADDRESS", "256", "Concurrent connections from one client address (an IPv6 client by its /64); further ones are refused."),
    Variable("CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS", "32", "Connections from one client address that have not logged in yet; further ones are refused until some log in or time out."),
    Variable("CHAT_CONNECT_RATE_PER_ADDRESS", "20", "New connections per second from one client address (sustained; the PROXY-named client behind a trusted balancer); faster ones are refused, most without a reply. 0 turns the limit off."),
    Variable("CHAT_CONNECT_BURST_PER_ADDRESS", "100", "New connections one client address may open at once before CHAT_CONNECT_RATE_PER_ADDRESS applies (a NAT's users reconnecting after a restart)."),
    Variable("CHAT_MAX_FRAME_BYTES", "65536", "Largest frame body accepted after login (1024 to 16 MiB)."),
    Variable("CHAT_AUTH_TIMEOUT", "10", "Seconds a new connection has to log in."),
    Variable("CHAT_SESSION_TOKEN_TTL", "86400", "Seconds a session token (issued to v2 clients at each login, to reconnect without the password; each logs in once) stays valid; 0 issues none."),
    Variable("CHAT_ACCOUNT_CHECK_INTERVAL", "2", "Seconds between checks of the logged-in users' accounts: sessions of users disabled or removed since (users disable/remove, on any replica), or logged in with a password changed since (users passwd), are ended, and the first start's password file is deleted once that password was changed."),
    Variable("CHAT_IDLE_TIMEOUT", "900", "Seconds without a message (PING/PONG don't count) after which a logged-in connection is closed."),
    Variable("CHAT_PING_INTERVAL", "30", "Seconds of silence either way after which the server PINGs a logged-in v2 client; 0 turns keepalive off."),
    Variable("CHAT_PING_TIMEOUT", "20", "Seconds a pinged v2 client has to send any frame before the connection is closed."),
    Variable("CHAT_FRAME_TIMEOUT", "30", "Seconds a frame may take from its first byte to its last (stops slow-drip senders)."),
    Variable("CHAT_RATE_LIMIT", "20", "Messages per user per minute; 0 turns the limit off."),
    Variable("CHAT_MAX_PARALLEL", "2", "Generations in flight at once per backend (unless CHAT_BACKEND_<NAME>_PARALLEL says otherwise); the rest queue fairly per user."),
    Variable("CHAT_CONTEXT_TOKENS", "3000", "History budget per request, in estimated tokens; older turns are dropped."),
    Variable("CHAT_HISTORY_CACHE_MB", "64", "Memory for the conversations of live sessions (MiB); beyond it they are re-read from the database."),
    Variable("CHAT_MODEL_CONNECT_TIMEOUT", "5", "Seconds to connect to a model backend."),
    Variable("CHAT_MODEL_READ_TIMEOUT", "60", "Seconds the model may stall: no reply, or no complete line of its answer (bytes that form no line, such as keep-alive comments, don't count). Before its first token another backend is tried; mid-answer the answer ends with an error."),
    Variable("CHAT_PROBE_INTERVAL", "10", "Seconds between health probes (and model-list refreshes) of each backend; a failed backend is probed sooner, with backoff."),
    Variable("CHAT_SHUTDOWN_GRACE", "20", "Seconds answers in flight get to finish after SIGTERM."),
    Variable("CHAT_DRAIN_DELAY", "0", "Behind a load balancer: seconds between SIGTERM and the drain during which the readiness check already answers 503 draining but the server still serves as usual, so the balancer stops sending it new connections first (more than the balancer's time to mark a server down)."),
    Variable("CHAT_PULL_MODEL", "true", "Pull missing models (CHAT_MODELS) on Ollama backends at start (true/false)."),
    Variable("CHAT_LOG_FORMAT", "text", "Log format: text (readable) or json (one object per line)."),
    Variable("CHAT_LOG_LEVEL", "info", "Log level: debug, info, warning, error or critical; message text is logged only at debug."),
    Variable("CHAT_ARGON2_TIME_COST", "2", "Argon2id iterations (OWASP minimum 2; lower only for benchmarks and tests)."),
    Variable("CHAT_ARGON2_MEMORY_KIB", "19456", "Argon2id memory per hash in KiB (OWASP minimum 19456; lower only for benchmarks and tests)."),
    Variable("CHAT_ARGON2_PARALLELISM", "1", "Argon2id lanes (OWASP: 1)."),
    Variable("CHAT_METRICS_PORT", None, "Port of the Prometheus metrics endpoint (/metrics); unset turns it off, 0 picks a free port."),
    Variable("CHAT_METRICS_HOST", "127.0.0.1", "Address the metrics endpoint listens on (the compose stack: 0.0.0.0 inside its network, not published)."),
    Variable("CHAT_HEALTH_PORT", None, "Port of the HTTP readiness endpoint for load balancers (GET /ready: 200, or 503 while draining or the model is not ready; GET /live); unset turns it off."),
    Variable("CHAT_HEALTH_HOST", "127.0.0.1", "Address the readiness endpoint listens on (docker-compose.ha.yml: 0.0.0.0 inside its network, not published)."),
    Variable("CHAT_DATA_DIR", None, "The server's own directory, private to it (0700): the generated TLS certificate, the initial password, the admin socket; unset: the directory of a SQLite CHAT_DB (./data with PostgreSQL)."),
    Variable("CHAT_ADMIN_SOCKET", None, "Unix socket (mode 0600) of the local admin endpoint `chat-server status` reads; unset: admin.sock in CHAT_DATA_DIR."),
    Variable("CHAT_TLS_CERT", None, "PEM certificate (chain) for TLS; unset (with CHAT_TLS_KEY) uses a self-signed one generated in the tls/ folder of CHAT_DATA_DIR."),
    Variable("CHAT_TLS_KEY", None, "PEM private key of CHAT_TLS_CERT (unencrypted); set both or neither."),
    Variable("CHAT_REQUIRE_TLS", "false", "Refuse plaintext v2 connections (they get an ERROR telling them to use TLS); v1 is governed by CHAT_ALLOW_V1."),
    Variable("CHAT_TRUSTED_PROXIES", "", "Comma-separated CIDR blocks (or addresses) of load balancers that must open each connection with a PROXY protocol v1/v2 header naming the real client; empty: none (a PROXY header from anyone is a protocol error)."),
    Variable("CHAT_ALLOW_V1", "true", "Serve the original v1 protocol (plaintext only); false answers v1 clients with the login refusal and closes."),
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
    model: str = "llama3.2"  # the default model
    models: tuple[str, ...] = ()  # allowed models; empty: just the default model
    backends: tuple[BackendSpec, ...] = ()  # empty: one Ollama at ollama_host
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT  # None: send no system message
    #: A SQLite file path or a postgresql:// URL, without its password (safe to log).
    db: str = "./data/chat.db"
    db_password: str | None = field(default=None, repr=False)
    cuss_words_file: Path = Path("cuss_words.txt")
    phone_regions: tuple[str, ...] = DEFAULT_REGIONS
    bootstrap_user: str = "admin"
    bootstrap_password: str | None = field(default=None, repr=False)
    max_connections: int = 10000
    max_connections_per_address: int = 256
    max_unauthenticated_per_address: int = 32
    connect_rate_per_address: int = 20  # new connections per second; 0 = off
    connect_burst_per_address: int = 100
    max_frame_bytes: int = 65536
    auth_timeout: float = 10.0
    session_token_ttl: float = 86400.0  # 0: no session tokens
    account_check_interval: float = 2.0
    idle_timeout: float = 900.0
    ping_interval: float = 30.0  # 0 = no keepalive PINGs
    ping_timeout: float = 20.0
    frame_timeout: float = 30.0
    rate_limit: int = 20  # messages per user per minute; 0 = off
    max_parallel: int = 2
    context_tokens: int = 3000
    history_cache_bytes: int = 64 * 1024 * 1024
    model_connect_timeout: float = 5.0
    model_read_timeout: float = 60.0
    probe_interval: float = 10.0
    shutdown_grace: float = 20.0
    drain_delay: float = 0.0
    pull_model: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    metrics_port: int | None = None  # None: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    health_port: int | None = None  # None: no readiness endpoint
    health_host: str = "127.0.0.1"
    data_dir_setting: Path | None = None  # None: see data_dir
    admin_socket: Path | None = None  # None: admin.sock in data_dir
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    allow_v1: bool = True
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the environment (``os.environ`` by default). Raises
        :exc:`ConfigError` on the first bad variable."""
        env = os.environ if environ is None else environ
        r = _Reader(env)
        bootstrap_user = r.nonempty("CHAT_BOOTSTRAP_USER")
        # An empty value (the line of an older .env.example) means unset: generated.
        bootstrap_password = r.optional_str("CHAT_BOOTSTRAP_PASSWORD", strip=False)
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

        db, db_password = _database(r, env)
        tls_cert = r.optional_str("CHAT_TLS_CERT")
        tls_key = r.optional_str("CHAT_TLS_KEY")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError(
                "CHAT_TLS_CERT and CHAT_TLS_KEY: expected both or neither, "
                f"got only {'CHAT_TLS_CERT' if tls_cert else 'CHAT_TLS_KEY'}"
            )
        parallelism = r.integer("CHAT_ARGON2_PARALLELISM", 1, 255)
        max_parallel = r.integer("CHAT_MAX_PARALLEL", 1, 1024)
        model, models, backends = _model_side(env, r, max_parallel)
        settings = cls(
            host=r.nonempty("CHAT_HOST"),
            port=r.integer("CHAT_PORT", 0, 65535),
            ollama_host=r.optional_str("OLLAMA_HOST"),
            model=model,
            models=models,
            backends=backends,
            system_prompt=r.optional_str("CHAT_SYSTEM_PROMPT", strip=False, empty_is_none=True),
            db=db,
            db_password=db_password,
            cuss_words_file=Path(r.nonempty("CHAT_CUSS_WORDS_FILE")),
            phone_regions=r.regions("CHAT_PHONE_REGIONS"),
            bootstrap_user=bootstrap_user,
            bootstrap_password=bootstrap_password,
            max_connections=r.integer("CHAT_MAX_CONNECTIONS", 1, 1_000_000),
            max_connections_per_address=r.integer("CHAT_MAX_CONNECTIONS_PER_ADDRESS", 1, 1_000_000),
            max_unauthenticated_per_address=r.integer("CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS", 1, 1_000_000),
            connect_rate_per_address=r.integer("CHAT_CONNECT_RATE_PER_ADDRESS", 0, 1_000_000),
            connect_burst_per_address=r.integer("CHAT_CONNECT_BURST_PER_ADDRESS", 1, 1_000_000),
            max_frame_bytes=r.integer("CHAT_MAX_FRAME_BYTES", 1024, 16 * 1024 * 1024),
            auth_timeout=r.seconds("CHAT_AUTH_TIMEOUT"),
            session_token_ttl=r.seconds("CHAT_SESSION_TOKEN_TTL", allow_zero=True),
            account_check_interval=r.seconds("CHAT_ACCOUNT_CHECK_INTERVAL"),
            idle_timeout=r.seconds("CHAT_IDLE_TIMEOUT"),
            ping_interval=r.seconds("CHAT_PING_INTERVAL", allow_zero=True),
            ping_timeout=r.seconds("CHAT_PING_TIMEOUT"),
            frame_timeout=r.seconds("CHAT_FRAME_TIMEOUT"),
            rate_limit=r.integer("CHAT_RATE_LIMIT", 0, 1_000_000),
            max_parallel=max_parallel,
            context_tokens=r.integer("CHAT_CONTEXT_TOKENS", 1, 10_000_000),
            history_cache_bytes=r.integer("CHAT_HISTORY_CACHE_MB", 0, 1024 * 1024) * 1024 * 1024,
            model_connect_timeout=r.seconds("CHAT_MODEL_CONNECT_TIMEOUT"),
            model_read_timeout=r.seconds("CHAT_MODEL_READ_TIMEOUT"),
            probe_interval=r.seconds("CHAT_PROBE_INTERVAL"),
            shutdown_grace=r.seconds("CHAT_SHUTDOWN_GRACE", allow_zero=True),
            drain_delay=r.seconds("CHAT_DRAIN_DELAY", allow_zero=True),
            pull_model=r.boolean("CHAT_PULL_MODEL"),
            log_format=r.choice("CHAT_LOG_FORMAT", ("text", "json")),  # type: ignore[arg-type]
            log_level=r.choice("CHAT_LOG_LEVEL", LOG_LEVELS),
            argon2_time_cost=r.integer("CHAT_ARGON2_TIME_COST", 1, 1000),
            # Argon2 itself requires at least 8 KiB per lane.
            argon2_memory_kib=r.integer("CHAT_ARGON2_MEMORY_KIB", 8 * parallelism, 4 * 1024 * 1024),
            argon2_parallelism=parallelism,
            metrics_port=r.optional_integer("CHAT_METRICS_PORT", 0, 65535),
            metrics_host=r.nonempty("CHAT_METRICS_HOST"),
            health_port=r.optional_integer("CHAT_HEALTH_PORT", 0, 65535),
            health_host=r.nonempty("CHAT_HEALTH_HOST"),
            data_dir_setting=_optional_path(r.optional_str("CHAT_DATA_DIR")),
            admin_socket=_optional_path(r.optional_str("CHAT_ADMIN_SOCKET")),
            tls_cert=None if tls_cert is None else Path(tls_cert),
            tls_key=None if tls_key is None else Path(tls_key),
            require_tls=r.boolean("CHAT_REQUIRE_TLS"),
            allow_v1=r.boolean("CHAT_ALLOW_V1"),
            trusted_proxies=r.trusted_proxies("CHAT_TRUSTED_PROXIES"),
        )
        return settings

    @property
    def data_dir(self) -> Path:
        """The server's own directory (``CHAT_DATA_DIR``); unset: the SQLite
        database's, or with PostgreSQL (no database directory of ours) the
        default one, ``./data``."""
        if self.data_dir_setting is not None:
            return self.data_dir_setting
        if is_database_url(self.db):
            return Path(_DEFAULTS["CHAT_DB"] or "./data/chat.db").parent
        return Path(self.db).parent

    @property
    def admin_socket_path(self) -> Path:
        """Where the admin endpoint listens (``chat-server status`` reads the same)."""
        if self.admin_socket is not None:
            return self.admin_socket
        return self.data_dir / "admin.sock"

    def allowed_models(self) -> tuple[str, ...]:
        """The models users may choose from, the default first."""
        return self.models or (self.model,)

    def backend_specs(self) -> tuple[BackendSpec, ...]:
        """The configured backends; without CHAT_BACKENDS, one Ollama at OLLAMA_HOST."""
        return self.backends or (
            BackendSpec(LEGACY_BACKEND, BackendKind.OLLAMA, self.ollama_host, self.max_parallel),)

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
            if f.name in ("bootstrap_password", "db_password"):
                value = None if value is None else "[set]"
            elif f.name == "data_dir_setting":
                out["data_dir"] = str(self.data_dir)  # the effective one
                continue
            elif f.name == "system_prompt" and value is not None:
                value = f"[{len(value)} chars]"
            elif isinstance(value, Path | TrustedProxies):
                value = str(value)
            elif f.name == "backends":
                value = ",".join(spec.summary() for spec in self.backend_specs())
            elif f.name == "models":
                value = ",".join(self.allowed_models())
            out[f.name] = value
        return out


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _database(r: _Reader, env: Mapping[str, str]) -> tuple[str, str | None]:
    """CHAT_DB and its password: (the path or the URL without its password, password)."""
    target = r.nonempty("CHAT_DB")
    password = r.optional_str("CHAT_DB_PASSWORD", strip=False)
    password_file = r.optional_str("CHAT_DB_PASSWORD_FILE")
    if password is not None and password_file is not None:
        raise ConfigError("CHAT_DB_PASSWORD and CHAT_DB_PASSWORD_FILE: expected one of them, got both")
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as f:
                # Only the line ending goes: a password may end in spaces.
                password = f.readline().removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
            raise ConfigError(f"CHAT_DB_PASSWORD_FILE: cannot read {password_file!r}: {reason}") from None
        if not password:
            raise ConfigError(f"CHAT_DB_PASSWORD_FILE: {password_file!r} holds no password")
    if not is_database_url(target):
        if password is not None:
            name = "CHAT_DB_PASSWORD_FILE" if password_file is not None else "CHAT_DB_PASSWORD"
            raise ConfigError(f"{name}: only used with a postgresql:// CHAT_DB, which is not set")
        return target, None
    url, in_url = _split_password(target)
    if in_url is not None and password is not None:
        raise ConfigError("CHAT_DB: expected the password in the URL or in CHAT_DB_PASSWORD(_FILE), "
                          "got both")
    return url, in_url if in_url is not None else password


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None). Raises
    :exc:`ConfigError` without echoing the URL (it may hold the password)."""

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError("CHAT_DB: expected postgresql://USER@HOST:PORT/DBNAME, got an invalid URL") from None
    if parts.password is None:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]  # as written (percent-encoded)
    netloc = f"{user}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


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
        # Markdown would take <NAME> in running text for an HTML tag.
        description = v.description.replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{v.name}` | {default} | {description} |")
    return "\n".join(lines) + "\n"


_BACKEND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_BACKEND_PREFIX = "CHAT_BACKEND_"
#: ``_API_KEY_FILE`` before ``_API_KEY``: the first suffix that matches wins.
_BACKEND_SUFFIXES = ("_API_KEY_FILE", "_API_KEY", "_PARALLEL")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _model_side(env: Mapping[str, str], r: _Reader,
                max_parallel: int) -> tuple[str, tuple[str, ...], tuple[BackendSpec, ...]]:
    """CHAT_MODEL/OLLAMA_MODEL, CHAT_MODELS, CHAT_BACKENDS and CHAT_BACKEND_<NAME>_*.

    Collects every mistake and raises one ConfigError with a line for each.
    """
    problems: list[str] = []

    def model_name(name: str, raw: str) -> str | None:
        value = raw.strip()
        if not value or any(c.isspace() or not c.isprintable() or c == "," for c in value):
            problems.append(f"{name}: expected a non-empty model name without spaces or commas,"
                            f" got {_shown(raw)}")
            return None
        if name_problem(value) is not None:  # the protocol's bound on names
            problems.append(f"{name}: expected a model name of at most {MAX_NAME_LENGTH}"
                            f" characters, got {_shown(raw)} ({len(value)} characters)")
            return None
        return value

    # -- models
    source = "CHAT_MODEL" if "CHAT_MODEL" in env else "OLLAMA_MODEL" if "OLLAMA_MODEL" in env else None
    model = model_name(source, env[source]) if source else _DEFAULTS["CHAT_MODEL"]
    models: tuple[str, ...] = ()
    raw_models = env.get("CHAT_MODELS", "")
    if raw_models.strip():
        names = [model_name("CHAT_MODELS", part) for part in raw_models.split(",")]
        seen: dict[str, str] = {}
        for name in names:
            if name is None:
                continue
            if model_key(name) in seen:
                problems.append(f"CHAT_MODELS: {name!r} is listed twice"
                                f" (as {seen[model_key(name)]!r})")
            seen.setdefault(model_key(name), name)
        models = tuple(seen.values())
        if model is not None and model_key(model) not in seen:
            problems.append(f"CHAT_MODELS: expected a list that includes the default model"
                            f" {model!r} ({source or 'CHAT_MODEL'}), got {_shown(raw_models)}")
        elif model is not None:  # the default first, spelled as in CHAT_MODELS
            model = seen[model_key(model)]
            models = (model, *(m for m in models if m != model))

        if model is not None and (size := hello_models_size(model, models)) > HELLO_MODELS_BUDGET:
            problems.append(
                f"CHAT_MODELS: the server's HELLO lists every model and travels before login,"
                f" when clients accept frames of at most {DEFAULT_MAX_UNAUTH_FRAME_SIZE} bytes"
                f" (docs/PROTOCOL.md §10): expected names of at most {HELLO_MODELS_BUDGET} bytes"
                f" in all, got {size}")

    # -- backends
    specs: dict[str, BackendSpec] = {}
    raw_backends = env.get("CHAT_BACKENDS", "")
    if raw_backends.strip():
        for entry in (e.strip() for e in raw_backends.split(",")):
            if not entry:
                continue
            name, sep, rest = entry.partition("=")
            kind_text, sep2, url = rest.partition(":")
            name, kind_text, url = name.strip(), kind_text.strip().lower(), url.strip()
            if not sep or not sep2:
                problems.append(f"CHAT_BACKENDS: expected NAME=KIND:URL, got {_shown(entry)}")
                continue
            if not _BACKEND_NAME.fullmatch(name):
                problems.append(f"CHAT_BACKENDS: expected a backend name of letters, digits and"
                                f" _ (starting with a letter, at most 32), got {_shown(name)}")
                continue
            if name.upper() in {n.upper() for n in specs}:
                problems.append(f"CHAT_BACKENDS: backend name {name!r} is used twice")
                continue
            if kind_text not in {k.value for k in BackendKind}:
                problems.append(f"CHAT_BACKENDS: backend {name}: expected kind ollama or openai,"
                                f" got {_shown(kind_text)}")
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"CHAT_BACKENDS: backend {name}: expected an http:// or https://"
                                f" URL, got {_shown(url)}")
                continue
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                problems.append(f"CHAT_BACKENDS: backend {name}: bad port in {_shown(url)}")
                continue
            specs[name] = BackendSpec(name, BackendKind(kind_text), url.rstrip("/"), max_parallel)
        if not specs and not problems:
            problems.append(f"CHAT_BACKENDS: expected at least one NAME=KIND:URL, got"
                            f" {_shown(raw_backends)}")
    legacy = not raw_backends.strip()
    if legacy:
        specs[LEGACY_BACKEND] = BackendSpec(LEGACY_BACKEND, BackendKind.OLLAMA,
                                            r.optional_str("OLLAMA_HOST"), max_parallel)

    # -- CHAT_BACKEND_<NAME>_*
    by_upper = {n.upper(): n for n in specs}
    settings: dict[str, dict[str, str]] = {}
    for var in sorted(env):
        if not var.startswith(_BACKEND_PREFIX):
            continue
        suffix = next((x for x in _BACKEND_SUFFIXES if var.endswith(x)), None)
        if suffix is None:
            problems.append(f"{var}: unknown backend setting (expected CHAT_BACKEND_<NAME>_PARALLEL,"
                            " _API_KEY or _API_KEY_FILE)")
            continue
        upper = var[len(_BACKEND_PREFIX):-len(suffix)]
        if upper not in by_upper:
            known = ", ".join(sorted(by_upper)) or "none"
            problems.append(f"{var}: no backend named {upper} in CHAT_BACKENDS (backends: {known})")
            continue
        settings.setdefault(by_upper[upper], {})[suffix] = env[var]
    for name, values in settings.items():
        spec = specs[name]
        prefix = f"{_BACKEND_PREFIX}{name.upper()}"
        if "_PARALLEL" in values:
            raw = values["_PARALLEL"]
            text = raw.strip()
            if text.isascii() and text.isdigit() and 1 <= int(text) <= 1024:
                spec = BackendSpec(spec.name, spec.kind, spec.url, int(text))
            else:
                problems.append(f"{prefix}_PARALLEL: expected an integer 1-1024, got {_shown(raw)}")
        key: str | None = None
        if "_API_KEY" in values and "_API_KEY_FILE" in values:
            problems.append(f"{prefix}_API_KEY and {prefix}_API_KEY_FILE: expected one of them,"
                            " got both")
        elif "_API_KEY" in values:
            key = values["_API_KEY"].strip()
        elif "_API_KEY_FILE" in values:
            path = values["_API_KEY_FILE"].strip()
            try:
                key = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                problems.append(f"{prefix}_API_KEY_FILE: cannot read {_shown(path)}: {reason}")
        # Never echo a key, not even a bad one.
        if key is not None and (not key or any(c.isspace() or not c.isprintable() for c in key)):
            problems.append(f"{prefix}_API_KEY: expected a key without spaces or control"
                            f" characters ({len(key)} characters given)")
            key = None
        specs[name] = BackendSpec(spec.name, spec.kind, spec.url, spec.max_parallel, key)

    if problems:
        raise ConfigError("\n".join(problems))
    assert model is not None
    if legacy and specs[LEGACY_BACKEND] == BackendSpec(
            LEGACY_BACKEND, BackendKind.OLLAMA, r.optional_str("OLLAMA_HOST"), max_parallel):
        return model, models, ()  # the stock single backend: derived, see backend_specs()
    return model, models, tuple(specs.values())


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

    def regions(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name)
        try:
            return parse_regions(raw)
        except ValueError as exc:
            raise self._fail(name, f"ISO region codes separated by commas ({exc})", raw) from None

    def boolean(self, name: str) -> bool:
        raw = self._raw(name)
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._fail(name, "one of 1/0/true/false/yes/no", raw)

    def trusted_proxies(self, name: str) -> TrustedProxies:
        raw = self._raw(name)
        try:
            return TrustedProxies.parse(raw)
        except ValueError as exc:
            shown = raw if len(raw) <= 80 else raw[:77] + "..."
            raise ConfigError(f"{name}: expected comma-separated CIDR blocks, {exc}; got {shown!r}") from None

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
    "CHAT_MODEL": "model",
    "OLLAMA_MODEL": "model",
    "CHAT_MODELS": "models",
    "CHAT_BACKENDS": "backends",
    "CHAT_BACKEND_<NAME>_PARALLEL": "backends",
    "CHAT_BACKEND_<NAME>_API_KEY": "backends",
    "CHAT_BACKEND_<NAME>_API_KEY_FILE": "backends",
    "CHAT_PROBE_INTERVAL": "probe_interval",
    "CHAT_SYSTEM_PROMPT": "system_prompt",
    "CHAT_DB": "db",
    "CHAT_DB_PASSWORD": "db_password",
    "CHAT_DB_PASSWORD_FILE": "db_password",
    "CHAT_CUSS_WORDS_FILE": "cuss_words_file",
    "CHAT_PHONE_REGIONS": "phone_regions",
    "CHAT_BOOTSTRAP_USER": "bootstrap_user",
    "CHAT_BOOTSTRAP_PASSWORD": "bootstrap_password",
    "CHAT_MAX_CONNECTIONS": "max_connections",
    "CHAT_MAX_CONNECTIONS_PER_ADDRESS": "max_connections_per_address",
    "CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS": "max_unauthenticated_per_address",
    "CHAT_CONNECT_RATE_PER_ADDRESS": "connect_rate_per_address",
    "CHAT_CONNECT_BURST_PER_ADDRESS": "connect_burst_per_address",
    "CHAT_MAX_FRAME_BYTES": "max_frame_bytes",
    "CHAT_AUTH_TIMEOUT": "auth_timeout",
    "CHAT_SESSION_TOKEN_TTL": "session_token_ttl",
    "CHAT_ACCOUNT_CHECK_INTERVAL": "account_check_interval",
    "CHAT_IDLE_TIMEOUT": "idle_timeout",
    "CHAT_PING_INTERVAL": "ping_interval",
    "CHAT_PING_TIMEOUT": "ping_timeout",
    "CHAT_FRAME_TIMEOUT": "frame_timeout",
    "CHAT_RATE_LIMIT": "rate_limit",
    "CHAT_MAX_PARALLEL": "max_parallel",
    "CHAT_CONTEXT_TOKENS": "context_tokens",
    "CHAT_HISTORY_CACHE_MB": "history_cache_bytes",
    "CHAT_MODEL_CONNECT_TIMEOUT": "model_connect_timeout",
    "CHAT_MODEL_READ_TIMEOUT": "model_read_timeout",
    "CHAT_SHUTDOWN_GRACE": "shutdown_grace",
    "CHAT_DRAIN_DELAY": "drain_delay",
    "CHAT_PULL_MODEL": "pull_model",
    "CHAT_LOG_FORMAT": "log_format",
    "CHAT_LOG_LEVEL": "log_level",
    "CHAT_ARGON2_TIME_COST": "argon2_time_cost",
    "CHAT_ARGON2_MEMORY_KIB": "argon2_memory_kib",
    "CHAT_ARGON2_PARALLELISM": "argon2_parallelism",
    "CHAT_METRICS_PORT": "metrics_port",
    "CHAT_METRICS_HOST": "metrics_host",
    "CHAT_HEALTH_PORT": "health_port",
    "CHAT_HEALTH_HOST": "health_host",
    "CHAT_DATA_DIR": "data_dir_setting",
    "CHAT_ADMIN_SOCKET": "admin_socket",
    "CHAT_TLS_CERT": "tls_cert",
    "CHAT_TLS_KEY": "tls_key",
    "CHAT_REQUIRE_TLS": "require_tls",
    "CHAT_ALLOW_V1": "allow_v1",
    "CHAT_TRUSTED_PROXIES": "trusted_proxies",
}


def field_of(variable: str) -> str:
    """The :class:`Settings` field an environment variable sets."""
    return _FIELD_OF_VARIABLE[variable]

