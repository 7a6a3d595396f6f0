"""chat-client over TLS against a real chat-server: pinned fingerprints, a
private CA, the known-hosts file (trust on first use, changed certificates),
and the plaintext-password warning."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pexpect
import pytest
from chat_client import cli
from chat_client.connection import ChatConnection
from chat_client.trust import KnownHosts, host_key, parse_fingerprint

from tests.client.conftest import CHAT_CLIENT, REPO, client_env, run_client, server_args
from tests.fixtures.server import PASSWORD, USER
from tests.fixtures.tls import logged_fingerprints, make_operator_certs

TRUST_EXIT = 7


def fingerprint(server) -> str:
    return logged_fingerprints(server.log_text())[0]


def oneshot(server, *extra: str, home: Path, message: str = "hello", **env: str):
    return run_client([*server_args(server), "--user", USER, "--message", message, *extra],
                      env=client_env(CHAT_PASSWORD=PASSWORD, XDG_CONFIG_HOME=str(home), **env))


def known_hosts_file(home: Path) -> Path:
    return home / "chat-client" / "known_hosts"


def logins(server) -> int:
    """Login attempts the server saw (a password reached it)."""
    return server.log_text().count("chat_server.auth")


# ---------------------------------------------------------------------------- pinned
def test_oneshot_over_tls_with_the_pinned_fingerprint(live_server, tmp_path):
    r = oneshot(live_server, "--tls", "--fingerprint", fingerprint(live_server), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: hello")
    assert r.stderr == ""
    assert "connection opened (protocol v2 over TLS)" in live_server.log_text()
    assert not known_hosts_file(tmp_path).exists(), "a pinned fingerprint is not written anywhere"


@pytest.mark.parametrize("form", ["lower-no-colons", "sha256-prefix"])
def test_fingerprint_implies_tls_and_accepts_common_spellings(live_server, tmp_path, form):
    fp = fingerprint(live_server)
    given = fp.replace(":", "").lower() if form == "lower-no-colons" else f"SHA256:{fp}"
    r = oneshot(live_server, "--fingerprint", given, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "over TLS" in live_server.log_text()


def test_wrong_fingerprint_is_refused_before_anything_is_sent(live_server, tmp_path):
    wrong = "AB:" * 31 + "CD"
    r = oneshot(live_server, "--fingerprint", wrong, home=tmp_path)
    assert r.returncode == TRUST_EXIT
    first = r.stderr.splitlines()[0]
    assert "does not match --fingerprint" in first
    assert wrong in r.stderr and fingerprint(live_server) in r.stderr
    assert r.stdout == ""
    assert logins(live_server) == 0, "no HELLO, let alone a password, was sent"


# ---------------------------------------------------------------------------- operator CA
def test_cafile_verifies_an_operator_certificate(server_factory, tmp_path):
    certs = make_operator_certs(tmp_path / "pki")
    server = server_factory(CHAT_TLS_CERT=str(certs.cert), CHAT_TLS_KEY=str(certs.key))
    r = run_client(["--host", "localhost", "--port", str(server.port), "--user", USER,
                    "--cafile", str(certs.ca), "--message", "via a CA"],
                   env=client_env(CHAT_PASSWORD=PASSWORD, XDG_CONFIG_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: via a CA")
    other = make_operator_certs(tmp_path / "other-pki")
    r = run_client([*server_args(server), "--user", USER, "--cafile", str(other.ca),
                    "--message", "x"], env=client_env(CHAT_PASSWORD=PASSWORD))
    assert r.returncode == TRUST_EXIT
    assert "could not be verified with --cafile" in r.stderr


# ---------------------------------------------------------------------------- known hosts
def test_oneshot_never_asks_about_an_unknown_certificate(live_server, tmp_path):
    r = oneshot(live_server, "--tls", home=tmp_path)
    assert r.returncode == TRUST_EXIT
    assert "is not trusted" in r.stderr.splitlines()[0]
    assert fingerprint(live_server) in r.stderr.splitlines()[0]
    assert f"--fingerprint {fingerprint(live_server)}" in r.stderr
    assert not known_hosts_file(tmp_path).exists()
    assert logins(live_server) == 0


def test_a_known_host_is_trusted_without_asking(live_server, tmp_path):
    KnownHosts(known_hosts_file(tmp_path)).remember("127.0.0.1", live_server.port,
                                                    fingerprint(live_server))
    r = oneshot(live_server, home=tmp_path, CHAT_TLS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Echo: hello")


def test_accept_new_remembers_the_first_certificate_and_refuses_a_changed_one(live_server, tmp_path):
    r = oneshot(live_server, "--tls", home=tmp_path, CHAT_TLS_ACCEPT_NEW="1")
    assert r.returncode == 0, r.stderr
    assert "trusting the new TLS certificate" in r.stderr
    path = known_hosts_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"{host_key('127.0.0.1', live_server.port)} SHA256:{fingerprint(live_server)}\n"
    r = oneshot(live_server, "--tls", home=tmp_path, CHAT_TLS_ACCEPT_NEW="1")
    assert r.returncode == 0 and r.stderr == "", r.stderr

    # The operator replaces the certificate (or someone is in the middle).
    old = fingerprint(live_server)
    live_server.stop()
    tls_dir = Path(live_server.env["CHAT_DB"]).parent / "tls"
    for f in tls_dir.iterdir():
        f.unlink()
    live_server.start()
    new = logged_fingerprints(live_server.log_text(since_start=True))[0]
    assert new != old
    opened = logins(live_server)
    r = oneshot(live_server, "--tls", home=tmp_path, CHAT_TLS_ACCEPT_NEW="1")
    assert r.returncode == TRUST_EXIT
    lines = r.stderr.splitlines()
    assert "has CHANGED" in lines[0]
    assert any(old in line and "remembered" in line for line in lines)
    assert any(new in line and "presented" in line for line in lines)
    assert "--forget-host" in r.stderr
    assert logins(live_server) == opened, "nothing was sent to the changed server"

    # The documented way out, once the new fingerprint is confirmed.
    r = run_client([*server_args(live_server), "--forget-host"],
                   env=client_env(XDG_CONFIG_HOME=str(tmp_path)))
    assert r.returncode == 0 and "forgot" in r.stdout
    r = oneshot(live_server, "--fingerprint", new, home=tmp_path)
    assert r.returncode == 0, r.stderr


def _spawn(server, home: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        CHAT_CLIENT, [*server_args(server), "--tls", "--user", USER], cwd=str(REPO),
        encoding="utf-8", timeout=30, dimensions=(40, 120),
        env=client_env(TERM="xterm", XDG_CONFIG_HOME=str(home), XDG_STATE_HOME=str(home / "state"),
                       PROMPT_TOOLKIT_NO_CPR="1"),
    )
    child.logfile_read = io.StringIO()
    return child


def test_interactive_trust_on_first_use_asks_then_remembers(live_server, tmp_path):
    child = _spawn(live_server, tmp_path)
    try:
        child.expect_exact("Password:")
        child.sendline(PASSWORD)
        child.expect_exact("Trust it and remember it in")
        screen = child.logfile_read.getvalue()
        assert fingerprint(live_server) in screen
        child.sendline("y")
        child.expect_exact("you>")
        child.send("hi over tls\r")
        child.expect_exact("Echo: hi over tls")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert KnownHosts(known_hosts_file(tmp_path)).lookup("127.0.0.1", live_server.port) is not None
    # Next time: no question.
    child = _spawn(live_server, tmp_path)
    try:
        child.expect_exact("Password:")
        child.sendline(PASSWORD)
        child.expect_exact("you>")
        assert "Trust it" not in child.logfile_read.getvalue()
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_interactive_no_to_an_unknown_certificate_exits_7(live_server, tmp_path):
    child = _spawn(live_server, tmp_path)
    try:
        child.expect_exact("Password:")
        child.sendline(PASSWORD)
        child.expect_exact("[y/N]")
        child.sendline("n")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == TRUST_EXIT
    assert not known_hosts_file(tmp_path).exists()
    assert logins(live_server) == 0


# ---------------------------------------------------------------------------- usage, plaintext
def test_v1_cannot_use_tls(tmp_path):
    r = run_client(["--protocol", "v1", "--tls", "--user", USER, "--message", "x"],
                   env=client_env(CHAT_PASSWORD=PASSWORD))
    assert r.returncode == 2
    assert "v1 cannot use TLS" in r.stderr
    r = run_client(["--protocol", "v1", "--user", USER, "--message", "x"],
                   env=client_env(CHAT_PASSWORD=PASSWORD, CHAT_TLS="1"))
    assert r.returncode == 2 and "--no-tls" in r.stderr


def test_plaintext_client_is_told_to_use_tls_by_a_server_that_requires_it(server_factory, tmp_path):
    server = server_factory(CHAT_REQUIRE_TLS="true")
    r = oneshot(server, home=tmp_path)
    assert r.returncode == 5
    assert "tls_required" in r.stderr and "--tls" in r.stderr
    r = oneshot(server, "--fingerprint", fingerprint(server), home=tmp_path)
    assert r.returncode == 0, r.stderr


class _FakePeer:
    """Only what the warning looks at: the address the socket is connected to."""

    def __init__(self, address: str) -> None:
        self.address = address

    def getpeername(self) -> tuple[str, int]:
        return (self.address, 5050)


@pytest.mark.parametrize(("address", "warned"), [
    ("192.0.2.10", True), ("2001:db8::1", True), ("127.0.0.1", False), ("127.8.9.10", False),
    ("::1", False), ("::ffff:127.0.0.1", False),
])
def test_password_over_plaintext_is_warned_about_unless_loopback(capsys, address, warned):
    conn = ChatConnection(_FakePeer(address), version=2, address=f"{address}:5050")  # type: ignore[arg-type]
    opts = cli.resolve(cli.build_parser().parse_args([]), {})
    cli.warn_plaintext(conn, opts)
    err = capsys.readouterr().err
    assert ("unencrypted" in err) is warned
    assert err.count("\n") == (1 if warned else 0)


def test_plaintext_to_loopback_prints_no_warning(live_server, tmp_path):
    r = oneshot(live_server, home=tmp_path)
    assert r.returncode == 0 and r.stderr == ""


# ---------------------------------------------------------------------------- the file
def test_known_hosts_file_round_trip(tmp_path):
    fp = parse_fingerprint("ab" * 32)
    kh = KnownHosts(tmp_path / "cfg" / "known_hosts")
    assert kh.lookup("Server", 5050) is None
    kh.remember("Server", 5050, fp)
    kh.remember("::1", 5050, fp)
    assert kh.lookup("server", 5050) is not None and kh.lookup("server", 5051) is None
    assert kh.path.read_text().splitlines()[1] == f"[::1]:5050 SHA256:{fp}"
    assert stat.S_IMODE(kh.path.parent.stat().st_mode) == 0o700
    assert kh.forget("server", 5050) and not kh.forget("server", 5050)
    assert kh.lookup("::1", 5050) is not None


@pytest.mark.parametrize("bad", ["", "AB:CD", "ZZ" * 32, "ab" * 33, "md5:" + "ab" * 16])
def test_malformed_fingerprints_are_usage_errors(bad):
    with pytest.raises(ValueError):
        parse_fingerprint(bad)
