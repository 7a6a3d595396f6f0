"""
chat_server.cli
~~~~~~~~~~~~~~~

The ``chat-server`` command::

    chat-server [serve]                          run the server
    chat-server users add NAME [--password-stdin]
    chat-server users passwd NAME [--password-stdin]
    chat-server users list                       name, created, last login, messages, status
    chat-server users disable NAME | enable NAME
    chat-server users remove NAME
    chat-server history export NAME [--conversation ID]   JSON lines on stdout
    chat-server healthcheck                      exit 0 if the server answers
    chat-server status [--once] [--json]         what the running server is doing
    chat-server fingerprint                      the SHA-256 fingerprint of its TLS certificate
    chat-server initial-password                 the first user's generated password (until changed)

Every command reads the same environment variables as the server (CHAT_DB in
particular), so in a container ``docker compose exec chat-server chat-server
users add alice`` acts on the live database; SQLite's WAL mode lets these
commands run while the server does.

Exit status: 0 success, 1 the operation failed (unknown user, name taken, bad
name or password...), 2 bad configuration or usage. Errors are one line on
stderr. Passwords are read without echo and never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .bootstrap import (
    initial_password_path,
    initial_password_works,
    read_initial_password,
    remove_initial_password,
)
from .config import MAX_PASSWORD_LENGTH, ConfigError, Settings
from .store import Store, StoreError, TurnRecord, UserExists, open_store, validate_username

__all__ = ["main", "turn_to_json"]

PROG = "chat-server"
#: Turns per store read of `history export`: what it holds in memory at once.
EXPORT_PAGE = 64


class CommandError(Exception):
    """A command failed; ``str(exc)`` is printed as one line, exit status 1."""


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def turn_to_json(turn: TurnRecord) -> dict[str, Any]:
    """The export record of one turn (``user`` is the user's message text)."""
    return {
        "conversation": turn.conversation,
        "created_at": _iso(turn.created_at),
        "completed_at": _iso(turn.completed_at),
        "model": turn.model,
        "backend": turn.backend,
        "user": turn.user_text,
        "answer": turn.answer_text,
        "prompt_tokens": turn.prompt_tokens,
        "answer_tokens": turn.answer_tokens,
        "status": turn.status.value,
    }


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="TCP chat server in front of an Ollama model. "
        "Configured by environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the server (the default)")

    users = sub.add_parser("users", help="manage user accounts")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    for action, text in (("add", "create a user"), ("passwd", "change a user's password")):
        p = users_sub.add_parser(action, help=text)
        p.add_argument("name")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input "
            "(otherwise prompt twice on the terminal)",
        )
    users_sub.add_parser(
        "list", help="list users: name, created, last login, messages sent, enabled/disabled")
    for action, text in (
        ("disable", "stop a user from logging in (their session tokens are revoked)"),
        ("enable", "let a disabled user log in again"),
        ("remove", "delete a user and all their history"),
    ):
        p = users_sub.add_parser(action, help=text)
        p.add_argument("name")

    history = sub.add_parser("history", help="conversation history")
    history_sub = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    p = history_sub.add_parser(
        "export",
        help="print a user's turns as JSON lines: conversation, created_at, completed_at, "
        "model, backend, user (the message), answer, prompt_tokens, answer_tokens, status",
    )
    p.add_argument("name")
    p.add_argument("--conversation", metavar="ID", help="only this conversation")

    sub.add_parser("healthcheck", help="exit 0 if the server accepts connections")

    p = sub.add_parser(
        "status",
        help="show the running server: uptime, connections, who is logged in, queue, model "
        "(a live view in a terminal)",
    )
    p.add_argument("--once", action="store_true", help="print the view once and exit")
    p.add_argument("--json", action="store_true", help="print the raw snapshot as JSON and exit")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="refresh interval of the live view (default 2)")
    p.add_argument("--socket", type=Path, metavar="PATH",
                   help="the server's admin socket (default: CHAT_ADMIN_SOCKET, or admin.sock "
                   "beside CHAT_DB)")
    sub.add_parser("fingerprint", help="print the SHA-256 fingerprint of the server's TLS "
                   "certificate (to check what chat-client shows, or for --fingerprint)")
    sub.add_parser("initial-password", help="print the password the server generated for the "
                   "first user (CHAT_BOOTSTRAP_USER, admin) at its first start, as long as it "
                   "has not been changed")
    return parser


def _read_password(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        line = stdin.readline()
        # Strip only the line ending: spaces are legal in passwords.
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not stdin.isatty():
            raise CommandError("no terminal to prompt for a password; use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CommandError("passwords do not match")
    if not password:
        raise CommandError("password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise CommandError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _with_store(settings: Settings, action: Any) -> int:
    """Open the configured store, run ``await action(store)``, close it."""

    async def run() -> int:
        store = await open_store(settings.db, password=settings.db_password)
        try:
            return int(await action(store))
        finally:
            await store.close()

    return asyncio.run(run())


def _users(args: argparse.Namespace, settings: Settings, out: TextIO, stdin: TextIO) -> int:
    action = args.users_command
    if action in ("add", "passwd"):
        try:
            validate_username(args.name)
        except ValueError as exc:
            raise CommandError(f"invalid user name {args.name!r}: {exc}") from None

    async def run(store: Store) -> int:
        if action == "add":
            if await store.get_user(args.name) is not None:  # fail before prompting
                raise CommandError(f"user {args.name!r} already exists")
            password = _read_password(args.password_stdin, stdin)
            try:
                await store.add_user(args.name, settings.argon2_hasher().hash(password))
            except UserExists:
                raise CommandError(f"user {args.name!r} already exists") from None
            print(f"user {args.name!r} added", file=out)
        elif action == "passwd":
            if await store.get_user(args.name) is None:
                raise CommandError(f"unknown user {args.name!r}")
            password = _read_password(args.password_stdin, stdin)
            if not await store.change_password(args.name, settings.argon2_hasher().hash(password)):
                raise CommandError(f"unknown user {args.name!r}")
            print(f"password of {args.name!r} changed; their session tokens are revoked",
                  file=out)
            if remove_initial_password(settings, args.name):
                print(f"the initial password file {initial_password_path(settings)} is deleted",
                      file=out)
        elif action == "list":
            print("NAME\tCREATED\tLAST LOGIN\tMESSAGES\tSTATUS", file=out)
            for user in await store.list_users():
                print(f"{user.name}\t{_iso(user.created_at)}\t{_iso(user.last_login_at) or 'never'}"
                      f"\t{user.message_count}\t{'disabled' if user.disabled else 'enabled'}",
                      file=out)
        elif action in ("disable", "enable"):
            if not await store.set_disabled(args.name, action == "disable"):
                raise CommandError(f"unknown user {args.name!r}")
            if action == "disable":
                print(f"user {args.name!r} disabled: they can no longer log in", file=out)
            else:
                print(f"user {args.name!r} enabled", file=out)
        elif action == "remove":
            if not await store.remove_user(args.name):
                raise CommandError(f"unknown user {args.name!r}")
            print(f"user {args.name!r} and their history removed", file=out)
            remove_initial_password(settings, args.name)
        return 0

    return _with_store(settings, run)


def _history(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    async def run(store: Store) -> int:
        if await store.get_user(args.name) is None:
            raise CommandError(f"unknown user {args.name!r}")
        # In pages, written as they come: a history of any size costs one
        # page of memory (the server's store may hold gigabytes of it).
        after: int | None = None
        while page := await store.turns(args.name, conversation=args.conversation,
                                        after_id=after, limit=EXPORT_PAGE):
            for turn in page:
                out.write(json.dumps(turn_to_json(turn), ensure_ascii=False) + "\n")
            out.flush()
            after = page[-1].id
            if len(page) < EXPORT_PAGE:
                break
        out.flush()
        return 0

    return _with_store(settings, run)


def _serve(settings: Settings) -> int:
    from .logs import setup_logging

    setup_logging(settings.log_format, settings.log_level)
    # Before any thread exists: the allocator's arenas are per thread.
    from .memory import apply_allocation_policy

    apply_allocation_policy()
    # Imported lazily: the server pulls in asyncio, ollama, httpx...
    from .app import run

    return int(run(settings))


def _healthcheck(settings: Settings) -> int:
    from .health import main as healthcheck

    return int(healthcheck(settings))


def _status(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from .status import run

    if not args.interval > 0:
        raise CommandError("--interval must be more than 0 seconds")
    return run(args.socket or settings.admin_socket_path, once=args.once, as_json=args.json,
               interval=args.interval, out=out, err=err)


def _fingerprint(settings: Settings, out: TextIO) -> int:
    from .tls import TLSError, read_material

    try:
        material = read_material(settings)
    except TLSError as exc:
        raise CommandError(str(exc)) from None
    print(material.fingerprint, file=out)
    return 0


def _initial_password(settings: Settings, out: TextIO, err: TextIO) -> int:
    path = initial_password_path(settings)
    try:
        initial = read_initial_password(path)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    if initial is None:
        raise CommandError(
            f"no initial password in {settings.data_dir}: it was changed since the first start "
            "(chat-server users passwd), set with CHAT_BOOTSTRAP_PASSWORD, or generated by "
            "another replica with its own data directory (the one whose log says "
            "'first start: created user')")

    async def check(store: Store) -> int:
        if await initial_password_works(store, settings.argon2_hasher(), initial) is None:
            remove_initial_password(settings, initial.user)
            raise CommandError(
                f"the initial password of {initial.user!r} no longer works (it was changed, or "
                f"the user removed); {path} is deleted")
        print(initial.password, file=out)
        if err.isatty():
            print(f"(the password of the user {initial.user!r}; change it with: chat-server "
                  f"users passwd {initial.user})", file=err)
        return 0

    return _with_store(settings, check)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``chat-server`` console script; returns the exit status."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
    except ConfigError as exc:
        for line in str(exc).splitlines():  # one line per mistake
            print(f"{PROG}: configuration error: {line}", file=err)
        return 2
    command = args.command or "serve"
    try:
        if command == "serve":
            return _serve(settings)
        if command == "users":
            return _users(args, settings, out, stdin)
        if command == "history":
            return _history(args, settings, out)
        if command == "healthcheck":
            return _healthcheck(settings)
        if command == "status":
            return _status(args, settings, out, err)
        if command == "fingerprint":
            return _fingerprint(settings, out)
        if command == "initial-password":
            return _initial_password(settings, out, err)
    except (CommandError, StoreError) as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    except BrokenPipeError:
        # `chat-server history export bob | head`: the reader left; not an error.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(file=err)
        return 130
    raise AssertionError(f"unhandled command {command!r}")
