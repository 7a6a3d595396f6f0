"""
chat_client.interactive
~~~~~~~~~~~~~~~~~~~~~~~

The interactive session: a prompt_toolkit input line with persistent history
and multi-line entry, answers streamed as Markdown through :mod:`.render`,
slash commands (:mod:`.commands`), Ctrl-C to stop an answer.

Without a TTY (``docker compose run -T client``, a pipe) the same loop reads
one message per line from stdin and prints plain text: no prompts, no colours.

Ctrl-C while an answer streams: v2 sends ``CANCEL`` and keeps the partial
answer; the server ends it with ``END`` reason ``cancelled``. v1 cannot
cancel, so the client says so and keeps reading; a second Ctrl-C during the
same answer disconnects (exit 130). Ctrl-C at the prompt only clears the line.

A lost connection (v2) is got back by :class:`~chat_client.reconnect.Reconnector`
(backoff, a notice per attempt, the session token instead of the password) and
the conversation goes on: the server keeps its history. An answer that was cut
is marked as such (on screen and in ``/history``) and never sent again by
itself; ``/retry`` sends the last message again. A message the server did not
take (the connection was already gone, or the server answered it with
``shutting_down`` before any of its answer: a replica draining, a restart) is
sent again by itself, once, on the new connection. A connection the server
closed for being idle is reconnected only when the user sends the next message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from chatcore.privacy import refusal_notice
from chatcore.protocol import Bye, ConnectionClosed, Error, ErrorCode, Notice
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from .commands import Command, help_text, parse
from .connection import ChatConnection, server_error
from .errors import AuthFailed, ClientError, ConnectionLost, ExitCode
from .reconnect import Reconnector
from .render import PlainUI, RichUI
from .turn import TurnOutcome, run_turn

__all__ = ["InteractiveSession", "history_path", "new_conversation"]


def _model_key(name: str) -> str:
    """Model names compare as the server compares them: no tag means
    ``:latest``, case does not matter."""
    key = name.strip().lower()
    if key and ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


def new_conversation() -> str:
    return uuid.uuid4().hex


def history_path(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """``$XDG_STATE_HOME/chat-client/history``, default ``~/.local/state/…``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "chat-client" / "history"


class PrivateFileHistory(FileHistory):
    """Input history on disk, minus lines the privacy check refuses: a message
    that may not reach the server should not be kept in a file either."""

    def store_string(self, string: str) -> None:
        if refusal_notice(string) is None:
            super().store_string(string)


@contextlib.contextmanager
def _no_echo(tty: bool) -> Iterator[None]:
    """Turn the terminal's echo off while an answer streams.

    Otherwise a ``^C`` (or any key typed ahead) is echoed at the cursor, which
    sits at the end of the live area's last line; the terminal wraps, and the
    next redraw can no longer erase what is above. Keys typed meanwhile stay
    buffered for the next prompt; signals (Ctrl-C) still work.
    """
    if not tty:
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


class _Disconnected(Exception):
    """Raised out of the prompt when the server goes away while the user types."""


class _Lost(Exception):
    """The connection is gone; ``idle``: the server closed it for being idle."""

    def __init__(self, reason: str, *, idle: bool = False) -> None:
        super().__init__(reason)
        self.idle = idle


#: The ``/history`` note of an answer that did not arrive whole.
CUT_NOTE = "cut off: the connection was lost"


def _not_taken(outcome: TurnOutcome) -> bool:
    """The server ended the message with ``shutting_down`` before any part of
    its answer: it did not answer it, so sending it again cannot answer it
    twice (docs/PROTOCOL.md §7)."""
    err = outcome.error
    return (err is not None and err.code is ErrorCode.SHUTTING_DOWN
            and outcome.end is None and not outcome.text)
STOPPED_NOTE = "stopped by the server"


def _key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    # Terminals send Alt-Enter as Esc followed by Enter.
    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return kb


def make_prompt_session(path: Path) -> PromptSession[str]:
    history: FileHistory | None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600, exist_ok=True)
        history = PrivateFileHistory(str(path))
    except OSError:
        history = None  # read-only home: history just isn't kept
    return PromptSession(
        history=history,
        multiline=True,  # so the buffer displays newlines; Enter still sends
        key_bindings=_key_bindings(),
        prompt_continuation=lambda width, line_number, wrap_count: "." * (width - 1) + " ",
        enable_history_search=False,
    )


class InteractiveSession:
    """Runs until /quit, Ctrl-D, end of input, or a lost connection."""

    def __init__(self, conn: ChatConnection, ui: RichUI | PlainUI, *, tty: bool,
                 timeout: float = 300.0, history_file: Path | None = None,
                 reconnector: Reconnector | None = None) -> None:
        self.conn = conn
        self.ui = ui
        self.tty = tty
        self.timeout = timeout
        #: Gets a lost connection back; None: a lost connection ends the session.
        self.reconnector = reconnector
        self.conversation = new_conversation()
        self.model = ""  # chosen with /model for this conversation; "" = the server's default
        #: (question, answer, note) for /history; note says why an answer is not whole.
        self.turns: list[tuple[str, str, str]] = []
        #: What /retry sends again.
        self.last_message: str | None = None
        #: Why we are disconnected while waiting to reconnect lazily (idle close).
        self._offline: str | None = None
        self._prompt: PromptSession[str] | None = None
        #: A line being typed when the connection dropped, offered again.
        self._pending_input = ""
        if tty:
            self._prompt = make_prompt_session(history_file or history_path())
            conn.on_closed = self._wake_prompt
        self._interrupts = 0

    # -- the loop --------------------------------------------------------------
    def run(self) -> int:
        self.ui.welcome(address=self.conn.address, user=self.conn.user,
                        model=self.conn.model, version=self.conn.version)
        try:
            while True:
                try:
                    self._drain()
                except _Lost as lost:
                    self._on_lost(str(lost), idle=lost.idle)
                    continue
                try:
                    line = self._read_line()
                except KeyboardInterrupt:
                    continue  # like a shell: Ctrl-C at the prompt clears the line
                except _Disconnected:
                    continue  # _drain() reports what happened
                except EOFError:
                    return self._quit()
                item = parse(line)
                if item is None:
                    continue
                if isinstance(item, Command):
                    if item.name == "quit":
                        return self._quit()
                    code = self._command(item)
                else:
                    code = self._chat(item.text)
                if code is not None:
                    return code
        except ClientError as exc:
            self.ui.error(str(exc))
            self.conn.close(bye=False)
            return exc.exit_code
        except KeyboardInterrupt:
            # A second Ctrl-C during one answer: leave without waiting.
            self.ui.error("interrupted: disconnected")
            self.conn.close(bye=False)
            return ExitCode.INTERRUPTED

    def _read_line(self) -> str:
        if self._prompt is None:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")
        # What the user was typing when the connection dropped comes back.
        pending, self._pending_input = self._pending_input, ""
        return self._prompt.prompt([("class:prompt", "you> ")], default=pending)

    def _wake_prompt(self) -> None:
        # Called from the reader thread: the connection is gone. If the user is
        # typing, end the prompt now instead of when they press Enter.
        prompt = self._prompt
        if prompt is None:
            return
        app = prompt.app
        loop = getattr(app, "loop", None)
        if app.is_running and loop is not None:
            def _exit() -> None:
                if app.is_running and not app.future.done():  # type: ignore[union-attr]
                    self._pending_input = app.current_buffer.text
                    app.exit(exception=_Disconnected())
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_exit)

    def _drain(self) -> None:
        """Show what the server said while we waited for input; :class:`_Lost`
        if it left."""
        if self._offline is not None:
            return  # nothing to read until the next message reconnects
        try:
            while True:
                event = self.conn.poll(0)
                if event is None:
                    if self.conn.eof:
                        # The reader stopped without an event: the queue says why.
                        event = self.conn.poll(0.5)
                        if event is None:
                            raise _Lost(f"connection to {self.conn.address} lost")
                    else:
                        return
                if isinstance(event, Notice):
                    self.ui.server_notice(event)
                elif isinstance(event, Error):
                    if event.code is ErrorCode.SESSION_REVOKED:
                        # The account was disabled or removed, or its password changed:
                        # no reconnecting.
                        raise AuthFailed(event.message or "the server ended the session")
                    if event.fatal:
                        raise _Lost(
                            f"the server closed the connection: "
                            f"{event.message or event.code.value}",
                            idle=event.code is ErrorCode.IDLE_TIMEOUT)
                    self.ui.error(str(server_error(event)))
                elif isinstance(event, Bye | ConnectionClosed):
                    raise _Lost(f"the server closed the connection ({self.conn.address})")
        except ConnectionLost as exc:
            raise _Lost(str(exc)) from None

    # -- losing and getting back the connection ------------------------------------
    @property
    def _can_reconnect(self) -> bool:
        return self.reconnector is not None and self.reconnector.enabled

    def _on_lost(self, reason: str, *, idle: bool = False) -> None:
        """The connection is gone: reconnect (now, or for an idle close when the
        next message is sent), or end the session with ``reason`` (exit 6)."""
        self.conn.close(bye=False)
        if not self._can_reconnect:
            raise ConnectionLost(reason)
        if idle:
            self._offline = reason
            self.ui.notice("the server closed this connection for being idle; your next "
                           "message reconnects", label="connection")
            return
        self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        assert self.reconnector is not None
        conn = self.reconnector.reconnect(reason)  # raises ClientError when it gives up
        self.conn = conn
        self._offline = None
        if self._prompt is not None:
            conn.on_closed = self._wake_prompt
        self.ui.notice(f"reconnected to {conn.address} as {conn.user}; the conversation "
                       "goes on", label="connection")

    def _ensure_connected(self) -> None:
        if self._offline is not None:
            self._reconnect(self._offline)

    def _quit(self) -> int:
        self.conn.close(bye=True)
        self.ui.info("Bye.")
        return ExitCode.OK

    # -- commands --------------------------------------------------------------
    def _command(self, cmd: Command) -> int | None:
        """Run a slash command; an exit code when the session must end."""
        if cmd.name == "retry":
            if self.last_message is None:
                self.ui.notice("nothing to retry yet: /retry sends your last message again",
                               label="retry")
                return None
            return self._chat(self.last_message)
        if cmd.name == "help":
            self.ui.info(help_text())
        elif cmd.name == "new":
            self.conversation = new_conversation()
            self.model = ""  # a new conversation starts with the default model
            self.turns.clear()
            self.last_message = None
            self.ui.notice("started a new conversation", label="new")
        elif cmd.name == "models":
            self._list_models()
        elif cmd.name == "model":
            self._choose_model(cmd.argument)
        elif cmd.name == "history":
            self.ui.history(self.turns)
        else:
            self.ui.notice(f"unknown command /{cmd.name}; /help lists the commands",
                           label="help")
        return None

    def _current_model(self) -> str:
        return self.model or self.conn.model

    def _list_models(self) -> None:
        models = self.conn.models
        if not models:
            self.ui.notice("the server does not say which models it offers"
                           + (" (protocol v1)" if self.conn.version < 2 else ""), label="models")
            return
        current = _model_key(self._current_model())
        lines = [f"{'*' if _model_key(m) == current else ' '} {m}"
                 + ("  (default)" if m == self.conn.model else "") for m in models]
        self.ui.info("\n".join(lines))

    def _choose_model(self, name: str) -> None:
        if self.conn.version < 2:
            self.ui.notice("protocol v1 cannot choose a model", label="models")
            return
        if not name:
            self.ui.notice(f"this conversation uses {self._current_model() or 'the default'};"
                           " /model NAME switches, /models lists them", label="models")
            return
        match = next((m for m in self.conn.models if _model_key(m) == _model_key(name)), None)
        if match is None:
            self.ui.notice(f"the server does not offer {name}; /models lists the models",
                           label="models")
            return
        self.model = match
        self.ui.notice(f"answers in this conversation now come from {match}", label="models")

    # -- chatting --------------------------------------------------------------
    def _chat(self, text: str) -> int | None:
        """One turn. Returns an exit code when the session must end."""
        notice = refusal_notice(text)
        if notice is not None:
            # The original client's behaviour and wording: nothing is sent.
            self.ui.notice(notice, label="privacy")
            return None
        self._ensure_connected()
        self.last_message = text
        outcome = self._turn(text)
        if outcome.failure is not None and self._can_reconnect and (
                not outcome.sent or _not_taken(outcome)):
            # The server never took the message: the connection was gone before
            # it left, or the server was shutting down (a replica draining,
            # a restart) and said so before any of its answer (docs/PROTOCOL.md
            # §7, shutting_down). It goes out once more, on the new connection;
            # a second refusal is left to the user (/retry).
            if outcome.sent:
                self.ui.notice("the server was restarting and did not take your message; "
                               "it is sent again once reconnected", label="connection")
            self._on_lost(str(outcome.failure))
            self._ensure_connected()
            outcome = self._turn(text)
        note = ""
        if outcome.cancelled and self._interrupts == 0:
            # Not the user's Ctrl-C: the server stopped it (shutting down).
            note = STOPPED_NOTE
            self.ui.notice("the server stopped this answer"
                           + ("; /retry asks again" if self._can_reconnect else ""), label="cut")
        elif outcome.cancelled:
            self.ui.notice("answer stopped", label="cancel")
        elif outcome.end is not None and outcome.error is None:
            self.ui.answer_stats(outcome.end)
        err = outcome.error
        if err is not None and not err.fatal and outcome.refusal is None:
            # A refusal notice was already shown; otherwise show the error itself.
            what = err.message or err.code.value.replace("_", " ")
            if err.code is ErrorCode.REFUSED:
                self.ui.notice(what, label="moderation")
            else:
                self.ui.error(f"server error ({err.code.value}): {what}")
        if outcome.failure is not None:
            if outcome.refusal is not None:
                self.ui.error("the server closed the connection after refusing the message")
                self.conn.close(bye=False)
                return ExitCode.REFUSED
            # Cut: what arrived stays on screen and in /history, marked; the
            # message is never sent again by itself (/retry is the user's call).
            self.turns.append((text, outcome.text, CUT_NOTE))
            what = ("the answer was cut off" if outcome.text
                    else "the answer did not arrive")
            if isinstance(outcome.failure, AuthFailed):  # the session was revoked
                raise outcome.failure
            self.ui.notice(what + ("; /retry asks again" if self._can_reconnect else "")
                           + f" ({outcome.failure})", label="cut")
            self._on_lost(str(outcome.failure))
            return None
        if outcome.refusal is None and (err is None or outcome.text):
            # Kept for /history: answers, stopped answers and partial ones.
            self.turns.append((text, outcome.text, note))
        return None

    def _turn(self, text: str) -> TurnOutcome:
        """Send ``text`` and show its answer as it streams."""
        view = self.ui.answer()

        def on_interrupt(cancelled: bool) -> None:
            if cancelled:
                self.ui.notice("stopping the answer…", label="cancel")
            else:
                self.ui.notice("protocol v1 cannot stop an answer; waiting for its end "
                               "(press Ctrl-C again to disconnect)", label="cancel")

        with self._catch_sigint(), _no_echo(self.tty):
            try:
                return run_turn(
                    self.conn, text, conversation=self.conversation, model=self.model,
                    timeout=self.timeout,
                    on_delta=view.append, on_notice=self.ui.server_notice, on_tick=view.tick,
                    interrupted=lambda: self._interrupts > 0, on_interrupt=on_interrupt,
                )
            finally:
                view.finish()

    @contextlib.contextmanager
    def _catch_sigint(self) -> Iterator[None]:
        """While an answer streams, Ctrl-C sets a flag (polled by run_turn)
        instead of raising; a second one raises to disconnect."""
        self._interrupts = 0

        def handler(signum: int, frame: FrameType | None) -> None:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
