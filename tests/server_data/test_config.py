"""Settings.from_env: every variable, its default, and one-line errors for bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from chat_server.config import (
    DEFAULT_SYSTEM_PROMPT,
    VARIABLES,
    BackendKind,
    BackendSpec,
    ConfigError,
    Settings,
    field_of,
    variables_markdown,
)
from chat_server.proxy_protocol import TrustedProxies
from hypothesis import given, settings
from hypothesis import strategies as st


def test_empty_environment_gives_documented_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.host == "0.0.0.0"
    assert s.port == 5050
    assert s.ollama_host is None
    assert s.model == "llama3.2"
    assert s.models == () and s.allowed_models() == ("llama3.2",)
    assert s.backends == ()
    assert s.probe_interval == 10.0
    assert s.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert s.db == "./data/chat.db" and s.db_password is None
    assert s.cuss_words_file == Path("cuss_words.txt")
    assert s.bootstrap_user == "admin" and s.bootstrap_password is None
    assert s.data_dir_setting is None and s.data_dir == Path("./data")
    assert s.max_connections == 10000
    assert s.max_frame_bytes == 65536
    assert s.auth_timeout == 10.0
    assert s.idle_timeout == 900.0
    assert s.rate_limit == 20
    assert s.max_parallel == 2
    assert s.context_tokens == 3000
    assert s.model_connect_timeout == 5.0
    assert s.model_read_timeout == 60.0
    assert s.shutdown_grace == 20.0
    assert s.pull_model is True
    assert s.log_format == "text"
    assert s.log_level == "info"
    assert (s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism) == (2, 19456, 1)


def test_variables_table_matches_settings_fields() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    documented = {field_of(name) for name in names}
    assert documented == {f.name for f in dataclasses.fields(Settings)}
    for v in VARIABLES:
        assert v.description and "\n" not in v.description


@pytest.mark.parametrize("variable", [v for v in VARIABLES if v.default is not None],
                         ids=lambda v: v.name)
def test_documented_default_is_the_parsed_default(variable) -> None:
    # Setting a variable to its documented default changes nothing.
    assert Settings.from_env({variable.name: variable.default}) == Settings()


def test_markdown_table_lists_every_variable() -> None:
    table = variables_markdown()
    for v in VARIABLES:
        assert f"`{v.name}`" in table
    assert table.count("\n") == len(VARIABLES) + 2


# (variable, value, field, expected)
VALID = [
    ("CHAT_HOST", "127.0.0.1", "host", "127.0.0.1"),
    ("CHAT_HOST", " ::1 ", "host", "::1"),
    ("CHAT_PORT", "0", "port", 0),
    ("CHAT_PORT", "65535", "port", 65535),
    ("CHAT_PORT", " 6000 ", "port", 6000),
    ("OLLAMA_HOST", "http://ollama:11434", "ollama_host", "http://ollama:11434"),
    ("OLLAMA_HOST", "", "ollama_host", None),
    ("CHAT_MODEL", "qwen2.5:0.5b", "model", "qwen2.5:0.5b"),
    ("OLLAMA_MODEL", "qwen2.5:0.5b", "model", "qwen2.5:0.5b"),
    ("CHAT_MODELS", "llama3.2, qwen2.5:0.5b", "models", ("llama3.2", "qwen2.5:0.5b")),
    ("CHAT_BACKENDS", "gpu=ollama:http://gpu:11434", "backends",
     (BackendSpec("gpu", BackendKind.OLLAMA, "http://gpu:11434", 2),)),
    ("CHAT_PROBE_INTERVAL", "2.5", "probe_interval", 2.5),
    ("CHAT_SYSTEM_PROMPT", "Be terse.", "system_prompt", "Be terse."),
    ("CHAT_SYSTEM_PROMPT", "", "system_prompt", None),
    ("CHAT_DB", "/var/lib/chat/chat.db", "db", "/var/lib/chat/chat.db"),
    ("CHAT_DB", "postgresql://chat@db:5432/chat", "db", "postgresql://chat@db:5432/chat"),
    ("CHAT_CUSS_WORDS_FILE", "/etc/words.txt", "cuss_words_file", Path("/etc/words.txt")),
    ("CHAT_MAX_CONNECTIONS", "5", "max_connections", 5),
    ("CHAT_MAX_CONNECTIONS_PER_ADDRESS", "1", "max_connections_per_address", 1),
    ("CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS", "100", "max_unauthenticated_per_address", 100),
    ("CHAT_CONNECT_RATE_PER_ADDRESS", "0", "connect_rate_per_address", 0),
    ("CHAT_CONNECT_RATE_PER_ADDRESS", "500", "connect_rate_per_address", 500),
    ("CHAT_CONNECT_BURST_PER_ADDRESS", "1", "connect_burst_per_address", 1),
    ("CHAT_MAX_FRAME_BYTES", "1024", "max_frame_bytes", 1024),
    ("CHAT_MAX_FRAME_BYTES", str(16 * 1024 * 1024), "max_frame_bytes", 16 * 1024 * 1024),
    ("CHAT_AUTH_TIMEOUT", "2.5", "auth_timeout", 2.5),
    ("CHAT_SESSION_TOKEN_TTL", "3600", "session_token_ttl", 3600.0),
    ("CHAT_SESSION_TOKEN_TTL", "0", "session_token_ttl", 0.0),
    ("CHAT_ACCOUNT_CHECK_INTERVAL", "0.5", "account_check_interval", 0.5),
    ("CHAT_IDLE_TIMEOUT", "60", "idle_timeout", 60.0),
    ("CHAT_PING_INTERVAL", "0", "ping_interval", 0.0),
    ("CHAT_PING_TIMEOUT", "7.5", "ping_timeout", 7.5),
    ("CHAT_PHONE_REGIONS", "in, us", "phone_regions", ("IN", "US")),
    ("CHAT_FRAME_TIMEOUT", "5", "frame_timeout", 5.0),
    ("CHAT_RATE_LIMIT", "0", "rate_limit", 0),
    ("CHAT_MAX_PARALLEL", "8", "max_parallel", 8),
    ("CHAT_CONTEXT_TOKENS", "500", "context_tokens", 500),
    ("CHAT_HISTORY_CACHE_MB", "1", "history_cache_bytes", 1024 * 1024),
    ("CHAT_HISTORY_CACHE_MB", "0", "history_cache_bytes", 0),
    ("CHAT_MODEL_CONNECT_TIMEOUT", "0.5", "model_connect_timeout", 0.5),
    ("CHAT_MODEL_READ_TIMEOUT", "120", "model_read_timeout", 120.0),
    ("CHAT_SHUTDOWN_GRACE", "0", "shutdown_grace", 0.0),
    ("CHAT_DRAIN_DELAY", "3", "drain_delay", 3.0),
    ("CHAT_PULL_MODEL", "false", "pull_model", False),
    ("CHAT_LOG_FORMAT", "JSON", "log_format", "json"),
    ("CHAT_LOG_LEVEL", "Debug", "log_level", "debug"),
    ("CHAT_ARGON2_TIME_COST", "1", "argon2_time_cost", 1),
    ("CHAT_ARGON2_MEMORY_KIB", "1024", "argon2_memory_kib", 1024),
    ("CHAT_ARGON2_PARALLELISM", "2", "argon2_parallelism", 2),
    ("CHAT_METRICS_PORT", "9464", "metrics_port", 9464),
    ("CHAT_METRICS_PORT", "", "metrics_port", None),
    ("CHAT_METRICS_HOST", "0.0.0.0", "metrics_host", "0.0.0.0"),
    ("CHAT_HEALTH_PORT", "8081", "health_port", 8081),
    ("CHAT_HEALTH_PORT", "", "health_port", None),
    ("CHAT_HEALTH_HOST", "0.0.0.0", "health_host", "0.0.0.0"),
    ("CHAT_DATA_DIR", "/data", "data_dir_setting", Path("/data")),
    ("CHAT_DATA_DIR", "", "data_dir_setting", None),
    ("CHAT_ADMIN_SOCKET", "/run/chat/admin.sock", "admin_socket", Path("/run/chat/admin.sock")),
    ("CHAT_ADMIN_SOCKET", "", "admin_socket", None),
    ("CHAT_REQUIRE_TLS", "true", "require_tls", True),
    ("CHAT_ALLOW_V1", "false", "allow_v1", False),
    ("CHAT_TRUSTED_PROXIES", " 10.0.0.0/8, 192.0.2.7,fd00::/8 ", "trusted_proxies",
     TrustedProxies.parse("10.0.0.0/8,192.0.2.7/32,fd00::/8")),
    ("CHAT_TRUSTED_PROXIES", "", "trusted_proxies", TrustedProxies()),
]


@pytest.mark.parametrize(("name", "value", "field", "expected"), VALID,
                         ids=[f"{v[0]}={v[1]!r}" for v in VALID])
def test_valid_values(name: str, value: str, field: str, expected: object) -> None:
    s = Settings.from_env({name: value})
    assert getattr(s, field) == expected
    assert field_of(name) == field


def test_every_variable_has_a_valid_value_test() -> None:
    # CHAT_BACKEND_<NAME>_* are tested in test_config_backends.py.
    tested = {v[0] for v in VALID} | {"CHAT_BOOTSTRAP_USER", "CHAT_BOOTSTRAP_PASSWORD",
                                      "CHAT_TLS_CERT", "CHAT_TLS_KEY",
                                      "CHAT_DB_PASSWORD", "CHAT_DB_PASSWORD_FILE"}
    tested |= {v.name for v in VARIABLES if "<NAME>" in v.name}
    assert tested == {v.name for v in VARIABLES}


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("1", "true", "TRUE", "yes", "Yes", " on ")]
    + [(f, False) for f in ("0", "false", "False", "no", "NO", "off")],
)
def test_booleans(text: str, expected: bool) -> None:
    assert Settings.from_env({"CHAT_PULL_MODEL": text}).pull_model is expected


# (variable, bad value, words the message must contain)
INVALID = [
    ("CHAT_PORT", "abc", "integer 0-65535"),
    ("CHAT_PORT", "65536", "integer 0-65535"),
    ("CHAT_PORT", "-1", "integer"),
    ("CHAT_PORT", "+80", "integer"),
    ("CHAT_PORT", "1_000", "integer"),
    ("CHAT_PORT", "٥٠٥٠", "integer"),  # Arabic-Indic digits: int() would accept them
    ("CHAT_PORT", "", "integer"),
    ("CHAT_HOST", "  ", "non-empty"),
    ("OLLAMA_MODEL", "llama 3", "without spaces"),
    ("OLLAMA_MODEL", "", "non-empty"),
    ("CHAT_MODEL", "a,b", "without spaces or commas"),
    # The protocol's bound on names (HELLO would carry it): docs/PROTOCOL.md §4.
    ("CHAT_MODEL", "m" * 257, "model name of at most 256 characters"),
    ("CHAT_PROBE_INTERVAL", "0", "seconds > 0"),
    ("CHAT_DB", "", "non-empty"),
    ("CHAT_CUSS_WORDS_FILE", " ", "non-empty"),
    ("CHAT_MAX_CONNECTIONS", "0", "integer 1-"),
    ("CHAT_MAX_CONNECTIONS_PER_ADDRESS", "0", "integer 1-"),
    ("CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS", "-1", "integer 1-"),
    ("CHAT_CONNECT_RATE_PER_ADDRESS", "-1", "integer 0-"),
    ("CHAT_CONNECT_RATE_PER_ADDRESS", "2.5", "integer 0-"),
    ("CHAT_CONNECT_BURST_PER_ADDRESS", "0", "integer 1-"),
    ("CHAT_MAX_FRAME_BYTES", "1023", "integer 1024-16777216"),
    ("CHAT_MAX_FRAME_BYTES", str(16 * 1024 * 1024 + 1), "integer 1024-16777216"),
    ("CHAT_AUTH_TIMEOUT", "0", "seconds > 0"),
    ("CHAT_AUTH_TIMEOUT", "ten", "seconds > 0"),
    ("CHAT_SESSION_TOKEN_TTL", "-1", "seconds >= 0"),
    ("CHAT_SESSION_TOKEN_TTL", "a day", "seconds >= 0"),
    ("CHAT_ACCOUNT_CHECK_INTERVAL", "0", "seconds > 0"),
    ("CHAT_IDLE_TIMEOUT", "-5", "seconds > 0"),
    ("CHAT_IDLE_TIMEOUT", "inf", "seconds > 0"),
    ("CHAT_IDLE_TIMEOUT", "nan", "seconds > 0"),
    ("CHAT_RATE_LIMIT", "-1", "integer 0-"),
    ("CHAT_RATE_LIMIT", "2.5", "integer 0-"),
    ("CHAT_MAX_PARALLEL", "0", "integer 1-"),
    ("CHAT_CONTEXT_TOKENS", "0", "integer 1-"),
    ("CHAT_HISTORY_CACHE_MB", "-1", "integer 0-"),
    ("CHAT_MODEL_CONNECT_TIMEOUT", "0", "seconds > 0"),
    ("CHAT_MODEL_READ_TIMEOUT", "x", "seconds > 0"),
    ("CHAT_SHUTDOWN_GRACE", "-1", "seconds >= 0"),
    ("CHAT_DRAIN_DELAY", "soon", "seconds >= 0"),
    ("CHAT_PULL_MODEL", "maybe", "1/0/true/false/yes/no"),
    ("CHAT_LOG_FORMAT", "xml", "text/json"),
    ("CHAT_LOG_LEVEL", "verbose", "debug/info/warning/error/critical"),
    ("CHAT_ARGON2_TIME_COST", "0", "integer 1-"),
    ("CHAT_ARGON2_MEMORY_KIB", "7", "integer 8-"),
    ("CHAT_ARGON2_PARALLELISM", "0", "integer 1-255"),
    ("CHAT_BOOTSTRAP_USER", "has space", "spaces"),
    ("CHAT_BOOTSTRAP_USER", " ", "non-empty"),
    ("CHAT_METRICS_PORT", "65536", "integer 0-65535"),
    ("CHAT_METRICS_PORT", "metrics", "integer 0-65535"),
    ("CHAT_METRICS_HOST", " ", "non-empty"),
    ("CHAT_REQUIRE_TLS", "sometimes", "1/0/true/false/yes/no"),
    ("CHAT_ALLOW_V1", "2", "1/0/true/false/yes/no"),
    ("CHAT_TRUSTED_PROXIES", "10.0.0.1/8", "CIDR"),
    ("CHAT_HEALTH_PORT", "65536", "integer 0-65535"),
    ("CHAT_TRUSTED_PROXIES", "proxy.example", "CIDR"),
]


@pytest.mark.parametrize(("name", "value", "expected"), INVALID,
                         ids=[f"{v[0]}={v[1]!r}" for v in INVALID])
def test_invalid_values_give_one_clear_line(name: str, value: str, expected: str) -> None:
    env = {name: value}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: ")
    assert expected in message
    # CHAT_BOOTSTRAP_USER's message is the user-name rule's own (an empty one is
    # the generic "got ''"); a long value is shown shortened.
    shown = name != "CHAT_BOOTSTRAP_USER" or not value.strip()
    if shown and len(value) <= 80:
        assert f"got {value!r}" in message
    elif shown:
        assert f"got {value[:70]!r}"[:-1] in message


def test_memory_minimum_scales_with_parallelism() -> None:
    with pytest.raises(ConfigError, match="CHAT_ARGON2_MEMORY_KIB: expected an integer 32-"):
        Settings.from_env({"CHAT_ARGON2_PARALLELISM": "4", "CHAT_ARGON2_MEMORY_KIB": "31"})
    assert Settings.from_env(
        {"CHAT_ARGON2_PARALLELISM": "4", "CHAT_ARGON2_MEMORY_KIB": "32"}
    ).argon2_memory_kib == 32


def test_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CHAT_PORT": "9" * 500})
    assert len(str(info.value)) < 200


def test_control_characters_in_a_bad_value_stay_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CHAT_LOG_LEVEL": "info\nCHAT_PORT: fake"})
    assert "\n" not in str(info.value)


def test_bootstrap_user_and_password_together() -> None:
    s = Settings.from_env({"CHAT_BOOTSTRAP_USER": "admin", "CHAT_BOOTSTRAP_PASSWORD": " pw with spaces "})
    assert s.bootstrap_user == "admin"
    assert s.bootstrap_password == " pw with spaces "  # passwords are not stripped


def test_bootstrap_user_defaults_to_admin_and_the_password_is_optional() -> None:
    # Unset (or empty, as in an older .env.example): generated at the first start.
    for env in ({}, {"CHAT_BOOTSTRAP_PASSWORD": ""}, {"CHAT_BOOTSTRAP_USER": "root"}):
        s = Settings.from_env(env)
        assert s.bootstrap_password is None
        assert s.bootstrap_user == env.get("CHAT_BOOTSTRAP_USER", "admin")
    s = Settings.from_env({"CHAT_BOOTSTRAP_PASSWORD": "hunter2-secret"})
    assert (s.bootstrap_user, s.bootstrap_password) == ("admin", "hunter2-secret")


def test_data_dir_is_configurable_and_defaults_beside_the_database() -> None:
    assert Settings.from_env({"CHAT_DB": "/var/lib/chat/chat.db"}).data_dir == Path("/var/lib/chat")
    assert Settings.from_env({"CHAT_DB": "postgresql://chat@db/chat"}).data_dir == Path("data")
    s = Settings.from_env({"CHAT_DB": "postgresql://chat@db/chat", "CHAT_DATA_DIR": "/data"})
    assert s.data_dir == Path("/data") and s.admin_socket_path == Path("/data/admin.sock")
    assert s.log_summary()["data_dir"] == "/data"


def test_password_never_in_repr_error_or_summary() -> None:
    secret = "correct horse battery staple"
    s = Settings.from_env({"CHAT_BOOTSTRAP_USER": "admin", "CHAT_BOOTSTRAP_PASSWORD": secret})
    assert secret not in repr(s)
    assert secret not in str(s.log_summary())
    assert s.log_summary()["bootstrap_password"] == "[set]"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CHAT_BOOTSTRAP_USER": "admin", "CHAT_BOOTSTRAP_PASSWORD": "x" * 1025})
    assert "x" * 20 not in str(info.value)
    assert str(info.value).startswith("CHAT_BOOTSTRAP_PASSWORD: expected at most 1024")


def test_argon2_hasher_uses_configured_parameters() -> None:
    s = Settings.from_env({
        "CHAT_ARGON2_TIME_COST": "1",
        "CHAT_ARGON2_MEMORY_KIB": "1024",
        "CHAT_ARGON2_PARALLELISM": "2",
    })
    hasher = s.argon2_hasher()
    assert isinstance(hasher, PasswordHasher)
    h = hasher.hash("pw")
    assert h.startswith("$argon2id$v=19$m=1024,t=1,p=2$")
    assert hasher.verify(h, "pw")


def test_default_hasher_is_owasp_minimum() -> None:
    hasher = Settings().argon2_hasher()
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 19456, 1)


def test_os_environ_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_PORT", "6001")
    assert Settings.from_env().port == 6001


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_port_is_a_valid_port_or_a_one_line_error(text: str) -> None:
    try:
        port = Settings.from_env({"CHAT_PORT": text}).port
    except ConfigError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        assert str(exc).startswith("CHAT_PORT: expected an integer 0-65535, got ")
    else:
        assert 0 <= port <= 65535
        assert text.strip().isascii() and text.strip().isdigit()


def test_admin_socket_defaults_to_the_database_directory() -> None:
    assert Settings.from_env({"CHAT_DB": "/var/lib/chat/chat.db"}).admin_socket_path == Path(
        "/var/lib/chat/admin.sock")
    assert Settings.from_env({"CHAT_ADMIN_SOCKET": "/run/c.sock"}).admin_socket_path == Path(
        "/run/c.sock")


def test_tls_certificate_and_key_come_as_a_pair() -> None:
    s = Settings.from_env({"CHAT_TLS_CERT": "/certs/full.pem", "CHAT_TLS_KEY": " /certs/key.pem "})
    assert (s.tls_cert, s.tls_key) == (Path("/certs/full.pem"), Path("/certs/key.pem"))
    for only in ("CHAT_TLS_CERT", "CHAT_TLS_KEY"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({only: "/certs/x.pem"})
        assert str(info.value) == ("CHAT_TLS_CERT and CHAT_TLS_KEY: expected both or neither, "
                                   f"got only {only}")
    assert Settings.from_env({"CHAT_TLS_CERT": "", "CHAT_TLS_KEY": ""}).tls_cert is None

# -- the database and its password ---------------------------------------------------

PG = "postgresql://chat@db.internal:5432/chat?sslmode=require"


def test_database_password_from_the_variable() -> None:
    s = Settings.from_env({"CHAT_DB": PG, "CHAT_DB_PASSWORD": " pw with spaces "})
    assert (s.db, s.db_password) == (PG, " pw with spaces ")


def test_database_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("from-a-file \n")  # Docker secrets end with a newline
    s = Settings.from_env({"CHAT_DB": PG, "CHAT_DB_PASSWORD_FILE": str(secret)})
    assert s.db_password == "from-a-file "


def test_database_password_in_the_url_is_split_off() -> None:
    s = Settings.from_env({"CHAT_DB": "postgres://chat:p%40ss:w0rd@db/chat"})
    assert s.db == "postgres://chat@db/chat"
    assert s.db_password == "p@ss:w0rd"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CHAT_DB": PG, "CHAT_DB_PASSWORD": "s3cret-a", "CHAT_DB_PASSWORD_FILE": "/x"},
         "CHAT_DB_PASSWORD and CHAT_DB_PASSWORD_FILE: expected one of them"),
        ({"CHAT_DB": "postgresql://u:s3cret-a@db/chat", "CHAT_DB_PASSWORD": "s3cret-b"},
         "CHAT_DB: expected the password in the URL or in CHAT_DB_PASSWORD"),
        ({"CHAT_DB_PASSWORD": "s3cret-a"}, "CHAT_DB_PASSWORD: only used with a postgresql://"),
        ({"CHAT_DB": PG, "CHAT_DB_PASSWORD_FILE": "/nonexistent/s3cret-a"},
         "CHAT_DB_PASSWORD_FILE: cannot read '/nonexistent/s3cret-a': No such file"),
        ({"CHAT_DB": "postgresql://u:s3cret-a@db:port/chat"}, "CHAT_DB: expected postgresql://"),
    ],
)
def test_database_password_mistakes_are_one_line_without_the_password(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "\n" not in message and message.startswith(expected), message
    assert "s3cret-b" not in message
    if "FILE" not in expected:
        assert "s3cret-a" not in message


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no password"):
        Settings.from_env({"CHAT_DB": PG, "CHAT_DB_PASSWORD_FILE": str(empty)})


def test_database_password_never_in_repr_or_summary() -> None:
    secret = "db-secret-value-9"
    s = Settings.from_env({"CHAT_DB": f"postgresql://chat:{secret}@db/chat"})
    assert secret not in repr(s) and secret not in str(s.log_summary())
    assert s.log_summary()["db"] == "postgresql://chat@db/chat"
    assert s.log_summary()["db_password"] == "[set]"


def test_admin_socket_default_with_postgresql() -> None:
    s = Settings.from_env({"CHAT_DB": "postgresql://chat@db/chat"})
    assert s.admin_socket_path == Path("./data/admin.sock")
