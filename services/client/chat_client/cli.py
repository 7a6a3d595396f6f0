"""
chat_client.cli
~~~~~~~~~~~~~~~

``chat-client``: argument parsing, credentials, and the choice between the
interactive session and the one-shot mode.

Every option that a deployment sets has an environment fallback
(``CHAT_SERVER_HOST``, ``CHAT_SERVER_PORT``, ``CHAT_USER``, ``CHAT_PASSWORD``,
``CHAT_TLS`` …), so ``docker compose run client`` needs no flags. The password never appears on
the command line: it comes from a hidden prompt, ``--password-stdin`` (first
line of stdin) or ``CHAT_PASSWORD``, and it is never echoed, printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chatcore.protocol import name_problem, without_controls

from . import __version__
from .connection import DEFAULT_HANDSHAKE_TIMEOUT, ChatConnection
from .errors import EXIT_CODES_HELP, ClientError, ExitCode, UsageError
from .interactive import InteractiveSession, new_conversation
from .oneshot import check_privacy, run_oneshot
from .reconnect import DEFAULT_ATTEMPTS, Backoff, Reconnector
from .render import PlainUI, RichUI
from .tls import TLSOptions, UntrustedCertificate
from .trust import KnownHosts, default_known_hosts_path, host_key, parse_fingerprint

__all__ = ["Options", "build_parser", "main", "warn_plaintext"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5050

_EPILOG = f"""\
environment:
  CHAT_SERVER_HOST, CHAT_SERVER_PORT, CHAT_USER   defaults for --host, --port, --user
  CHAT_PASSWORD   the password, for scripts (else --password-stdin or a hidden prompt)
  CHAT_TIMEOUT    default for --timeout
  CHAT_RECONNECT_ATTEMPTS   default for --reconnect-attempts
  CHAT_TLS=1      default for --tls (CHAT_TLS=0: --no-tls)
  CHAT_TLS_CAFILE, CHAT_TLS_FINGERPRINT, CHAT_KNOWN_HOSTS   defaults for --cafile,
                  --fingerprint, --known-hosts
  CHAT_TLS_ACCEPT_NEW=1   default for --tls-accept-new
  XDG_STATE_HOME  the input history is kept in $XDG_STATE_HOME/chat-client/history
                  (default ~/.local/state/chat-client/history)

reconnecting (interactive, v2):
  When the connection drops (a server restart, a replica going away behind a
  balancer, the network), the client reconnects by itself: up to
  --reconnect-attempts tries (default 10: 76 to 152 s in all), waiting
  longer each time (exponential backoff with jitter), with a notice per try. It
  logs in again with the session token the server issued at login, never with a
  kept password; if the server no longer accepts the token (expired, password
  changed, user disabled), it asks for the password on a terminal (exit 3
  without one). The conversation goes on: the server keeps its history. An
  answer that was cut off is marked so and is not sent again by itself; /retry
  sends your last message again. A message the server did not take because it
  was shutting down (a restart, a replica draining) is sent again by itself,
  once, after reconnecting. One-shot mode never reconnects (exit 6), so a
  message is never sent twice.

interactive keys:
  Enter sends; Alt-Enter (or Esc then Enter) inserts a new line; Ctrl-C stops the
  answer being written (v2 cancels it; v1 cannot, so it keeps reading and a second
  Ctrl-C disconnects); Ctrl-D or /quit leaves; /help lists the commands.
  Without a TTY the client reads one message per line from stdin and prints plain text.

TLS:
  --tls encrypts the connection and checks the server's certificate: against
  --fingerprint if given, else --cafile if given, else the fingerprint remembered
  for HOST:PORT in the known-hosts file, else the system's certificate authorities.
  A server none of these vouches for (e.g. its own self-signed certificate) is shown
  with its fingerprint: interactively you are asked whether to trust it (compare it
  with `chat-server fingerprint` on the server), and it is then remembered; one-shot
  mode never asks and exits 7. A remembered certificate that changes is refused.
  v1 (--protocol v1) is plaintext only.

one-shot mode:
  chat-client --message "TEXT"      print the answer to stdout as it streams, exit 0
  chat-client --message -           read the message from stdin (after the password
                                    line when --password-stdin is given too)

{EXIT_CODES_HELP}
"""


@dataclass
class Options:
    host: str
    port: int
    user: str | None
    protocol: int
    message: str | None
    password_stdin: bool
    conversation: str
    model: str
    timeout: float
    connect_timeout: float
    reconnect_attempts: int
    plain: bool
    verbose: bool
    env: Mapping[str, str] = field(default_factory=dict)
    #: None: plaintext.
    tls: TLSOptions | None = None
    forget_host: bool = False


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like other config errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"chat-client: usage error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="chat-client",
        description="Terminal client for the chat service: an interactive chat, "
                    "or one message from a script with --message.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help=f"server host (env CHAT_SERVER_HOST, default {DEFAULT_HOST})")
    p.add_argument("--port", help=f"server port (env CHAT_SERVER_PORT, default {DEFAULT_PORT})")
    p.add_argument("--user", "-u", help="user name (env CHAT_USER; prompted on a TTY)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    p.add_argument("--protocol", choices=["v1", "v2"], default="v2",
                   help="wire protocol: v2 (default) or v1 for servers that only know "
                        "the original format (no cancel, no notices but the cuss-word warning)")
    p.add_argument("--message", "-m", metavar="TEXT",
                   help="one-shot mode: send TEXT ('-' reads stdin), print the answer, exit")
    p.add_argument("--conversation", metavar="ID",
                   help="one-shot mode: continue conversation ID (default: a new one)")
    p.add_argument("--model", metavar="NAME",
                   help="one-shot mode: answer with model NAME (one the server offers; "
                        "default: the conversation's, or the server's default)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up when the server is silent this long while answering "
                        "(env CHAT_TIMEOUT, default 300)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="TCP connect timeout (default 10)")
    p.add_argument("--reconnect-attempts", metavar="N",
                   help="interactive: reconnect this many times when the connection is "
                        f"lost, 0 never (env CHAT_RECONNECT_ATTEMPTS, default {DEFAULT_ATTEMPTS})")
    p.add_argument("--plain", action="store_true",
                   help="plain text output even on a terminal (no colours, no Markdown)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="one-shot mode: also print the server's notices to stderr")
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                     help="encrypt the connection (env CHAT_TLS; default off; implied by "
                          "--fingerprint and --cafile)")
    tls.add_argument("--cafile", metavar="FILE",
                     help="trust certificates signed by the CA(s) in this PEM file instead of "
                          "the system's (env CHAT_TLS_CAFILE)")
    tls.add_argument("--fingerprint", metavar="SHA256",
                     help="trust only the certificate with this SHA-256 fingerprint, as "
                          "`chat-server fingerprint` prints it (env CHAT_TLS_FINGERPRINT)")
    tls.add_argument("--known-hosts", metavar="FILE",
                     help="where remembered certificates are kept (env CHAT_KNOWN_HOSTS, "
                          "default $XDG_CONFIG_HOME/chat-client/known_hosts)")
    tls.add_argument("--tls-accept-new", action="store_true", default=None,
                     help="remember an unknown server's certificate without asking (like "
                          "ssh's accept-new; a changed one is still refused; env "
                          "CHAT_TLS_ACCEPT_NEW)")
    tls.add_argument("--forget-host", action="store_true",
                     help="forget the remembered certificate of --host/--port, then exit")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _port(value: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise UsageError(f"{source} must be a port number, not {value!r}") from None
    if not 0 < port < 65536:
        raise UsageError(f"{source} must be between 1 and 65535, not {port}")
    return port


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"{name} must be 1 or 0 (true/false), not {env[name]!r}")


def _known_hosts(args: argparse.Namespace, env: Mapping[str, str]) -> KnownHosts:
    known = args.known_hosts or env.get("CHAT_KNOWN_HOSTS") or None
    return KnownHosts(Path(known) if known else default_known_hosts_path(env))


def _tls_options(args: argparse.Namespace, env: Mapping[str, str],
                 protocol: int) -> TLSOptions | None:
    fingerprint = args.fingerprint or env.get("CHAT_TLS_FINGERPRINT") or None
    cafile = args.cafile or env.get("CHAT_TLS_CAFILE") or None
    if args.tls is not None:
        wanted, source = args.tls, "--tls"
    elif args.fingerprint or args.cafile:
        wanted, source = True, "--fingerprint" if args.fingerprint else "--cafile"
    else:
        wanted, source = _flag(env, "CHAT_TLS") or bool(fingerprint or cafile), "CHAT_TLS"
    if not wanted:
        return None
    if protocol == 1:
        raise UsageError(f"v1 cannot use TLS: the original protocol is plaintext only "
                         f"({source} is set); use v2, or --no-tls")
    if fingerprint and cafile:
        raise UsageError("--fingerprint and --cafile exclude each other: give one")
    pinned = None
    if fingerprint:
        try:
            pinned = parse_fingerprint(fingerprint)
        except ValueError as exc:
            raise UsageError(f"--fingerprint: {exc}") from None
    if cafile and not Path(cafile).is_file():
        raise UsageError(f"--cafile: no such file: {cafile}")
    accept_new = (args.tls_accept_new if args.tls_accept_new is not None
                  else _flag(env, "CHAT_TLS_ACCEPT_NEW"))
    return TLSOptions(
        known_hosts=_known_hosts(args, env),
        cafile=Path(cafile) if cafile else None,
        fingerprint=pinned,
        accept_new=accept_new,
        on_remembered=lambda line: print(f"chat-client: {line}", file=sys.stderr),
    )


def _reconnect_attempts(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.reconnect_attempts is not None:
        if args.message is not None:
            raise UsageError("--reconnect-attempts only applies interactively "
                             "(one-shot mode never reconnects)")
        raw, source = args.reconnect_attempts, "--reconnect-attempts"
    else:
        raw, source = env.get("CHAT_RECONNECT_ATTEMPTS") or str(DEFAULT_ATTEMPTS), \
            "CHAT_RECONNECT_ATTEMPTS"
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{source} must be a whole number, not {raw!r}") from None
    if not 0 <= value <= 1000:
        raise UsageError(f"{source} must be between 0 and 1000, not {value}")
    return value


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> Options:
    """Options from the command line, then the environment, then defaults."""
    if args.port is not None:
        port = _port(args.port, "--port")
    elif env.get("CHAT_SERVER_PORT"):
        port = _port(env["CHAT_SERVER_PORT"], "CHAT_SERVER_PORT")
    else:
        port = DEFAULT_PORT
    if args.timeout is not None:
        timeout = args.timeout
    else:
        try:
            timeout = float(env.get("CHAT_TIMEOUT") or 300)
        except ValueError:
            raise UsageError("CHAT_TIMEOUT must be a number of seconds") from None
    if timeout <= 0 or args.connect_timeout <= 0:
        raise UsageError("timeouts must be positive")
    reconnect_attempts = _reconnect_attempts(args, env)
    if args.conversation is not None and args.message is None:
        raise UsageError("--conversation only applies with --message")
    if args.model is not None and args.message is None:
        raise UsageError("--model only applies with --message (interactively: /model NAME)")
    if args.model is not None and args.protocol == "v1":
        raise UsageError("--model needs protocol v2 (v1 cannot name a model)")
    if args.model is not None and not args.model.strip():
        raise UsageError("--model needs a model name")
    # The protocol's rule for names (docs/PROTOCOL.md §4); the server would
    # close the connection over a CHAT that breaks it.
    for option, value in (("--conversation", args.conversation),
                          ("--model", None if args.model is None else args.model.strip())):
        if value is not None and (problem := name_problem(value)) is not None:
            raise UsageError(f"{option} {problem}")
    protocol = 1 if args.protocol == "v1" else 2
    tls = _tls_options(args, env, protocol)
    if args.forget_host and tls is None:
        tls = TLSOptions(_known_hosts(args, env))
    return Options(
        host=args.host or env.get("CHAT_SERVER_HOST") or DEFAULT_HOST,
        port=port,
        user=args.user or env.get("CHAT_USER") or None,
        protocol=protocol,
        message=args.message,
        password_stdin=args.password_stdin,
        conversation=args.conversation or new_conversation(),
        model=(args.model or "").strip(),
        timeout=timeout,
        connect_timeout=args.connect_timeout,
        reconnect_attempts=reconnect_attempts,
        plain=args.plain,
        verbose=args.verbose,
        env=env,
        tls=tls,
        forget_host=args.forget_host,
    )


def _read_password(opts: Options, stdin: IO[str], *, can_prompt: bool) -> str:
    if opts.password_stdin:
        line = stdin.readline()
        if not line:
            raise UsageError("--password-stdin: stdin is empty")
        return line.rstrip("\r\n")
    if opts.env.get("CHAT_PASSWORD"):
        return opts.env["CHAT_PASSWORD"]
    if can_prompt:
        # getpass turns echo off on the terminal: the password is never shown.
        return getpass.getpass("Password: ")
    raise UsageError("no password: use --password-stdin or CHAT_PASSWORD (no TTY to prompt on)")


def _read_user(opts: Options, *, can_prompt: bool) -> str:
    if opts.user:
        return opts.user
    if can_prompt:
        user = input("User: ").strip()
        if user:
            return user
    raise UsageError("no user name: use --user or CHAT_USER")


def _read_message(opts: Options, stdin: IO[str]) -> str:
    assert opts.message is not None
    text = stdin.read() if opts.message == "-" else opts.message
    text = text.rstrip("\r\n") if opts.message == "-" else text
    if not text.strip():
        raise UsageError("the message is empty")
    return text


def _confirm_certificate(exc: UntrustedCertificate, known_hosts: KnownHosts,
                         stdin: IO[str]) -> bool:
    """Show an unknown server's fingerprint and ask whether to trust it."""
    err = sys.stderr
    err.write(
        f"The TLS certificate of {host_key(exc.host, exc.port)} is not vouched for by a "
        f"certificate authority ({exc.reason}).\n"
        f"  SHA-256 fingerprint: {exc.fingerprint}\n"
        "Compare it with what the server's operator sees (chat-server fingerprint). If it "
        "differs, someone may be intercepting the connection.\n"
        f"Trust it and remember it in {known_hosts.path}? [y/N] ")
    err.flush()
    answer = stdin.readline()
    if not answer:
        raise EOFError
    return answer.strip().lower() in ("y", "yes")


def _connect(opts: Options, stdin: IO[str], *, can_confirm: bool) -> ChatConnection:
    try:
        return ChatConnection.connect(opts.host, opts.port, version=opts.protocol,
                                      timeout=opts.connect_timeout, tls=opts.tls)
    except UntrustedCertificate as exc:
        if not can_confirm or opts.tls is None:
            raise
        if not _confirm_certificate(exc, opts.tls.known_hosts, stdin):
            raise
        opts.tls.known_hosts.remember(exc.host, exc.port, exc.fingerprint)
    # Connect again (the first connection is gone), now checked against the file.
    return ChatConnection.connect(opts.host, opts.port, version=opts.protocol,
                                  timeout=opts.connect_timeout, tls=opts.tls)


def warn_plaintext(conn: ChatConnection, opts: Options) -> None:
    """Once per run: a password is about to cross a network unencrypted."""
    if conn.encrypted or conn.loopback:
        return
    hint = "use --tls" if opts.protocol == 2 else "v1 cannot be encrypted; prefer v2 with --tls"
    sys.stderr.write(f"chat-client: warning: your password goes to {conn.address} unencrypted "
                     f"(no TLS); {hint}\n")
    sys.stderr.flush()


def _forget(opts: Options) -> int:
    assert opts.tls is not None
    known = opts.tls.known_hosts
    name = host_key(opts.host, opts.port)
    if known.forget(opts.host, opts.port):
        print(f"forgot the TLS certificate of {name} ({known.path})")
    else:
        print(f"no certificate remembered for {name} in {known.path}")
    return ExitCode.OK


def run(opts: Options, *, stdin: IO[str] | None = None) -> int:
    stdin = stdin or sys.stdin
    if opts.forget_host:
        return _forget(opts)
    stdin_tty = stdin.isatty()
    oneshot = opts.message is not None
    # Prompts only on a terminal, and never in the middle of reading a message
    # from stdin (`--message -` with a pipe).
    can_prompt = stdin_tty
    user = _read_user(opts, can_prompt=can_prompt)
    password = _read_password(opts, stdin, can_prompt=can_prompt)
    text = _read_message(opts, stdin) if oneshot else ""
    if oneshot:
        check_privacy(text)  # before connecting: nothing reaches the server

    # One-shot mode never asks whether to trust a certificate: it fails with exit 7.
    conn = _connect(opts, stdin, can_confirm=can_prompt and not oneshot)
    try:
        warn_plaintext(conn, opts)
        conn.handshake(DEFAULT_HANDSHAKE_TIMEOUT)
        conn.login(user, password, DEFAULT_HANDSHAKE_TIMEOUT)
    except BaseException:
        conn.close(bye=False)
        raise
    del password

    if oneshot:
        try:
            run_oneshot(conn, text, conversation=opts.conversation, model=opts.model,
                        timeout=opts.timeout, verbose=opts.verbose)
        except BaseException:
            conn.close(bye=False)
            raise
        conn.close(bye=True)
        return ExitCode.OK

    tty = stdin_tty and sys.stdout.isatty() and not opts.plain
    ui: RichUI | PlainUI = RichUI() if tty else PlainUI()
    reconnector = None
    if opts.protocol == 2:
        # v1 has no tokens and no conversations to resume: a lost v1 connection ends.
        reconnector = Reconnector(
            lambda: _connect(opts, stdin, can_confirm=False), conn.user, conn.session_token,
            backoff=Backoff(attempts=opts.reconnect_attempts),
            notify=lambda text: ui.notice(text, label="connection"),
            ask_password=_ask_password if can_prompt else None,
        )
    session = InteractiveSession(conn, ui, tty=tty, timeout=opts.timeout,
                                 reconnector=reconnector)
    return session.run()


def _ask_password(user: str) -> str:
    """The password again, when a reconnect's session token was refused."""
    return getpass.getpass(f"Password for {user} (to log in again): ")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(run(resolve(args, os.environ)))
    except ClientError as exc:
        # An error's text may quote the server (a refusal's message): shown
        # without control characters, as everything else a server sent.
        text = without_controls(str(exc))
        sys.stderr.write(f"chat-client: {text}\n" if exc.prefixed else f"{text}\n")
        for line in exc.details:
            sys.stderr.write(f"{without_controls(line)}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("\nchat-client: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except EOFError:  # Ctrl-D at the user or password prompt
        sys.stderr.write("\nchat-client: no credentials given\n")
        return int(ExitCode.USAGE)
