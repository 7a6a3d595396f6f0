"""
chat_client.render
~~~~~~~~~~~~~~~~~~

Everything the client shows, in two flavours with one interface:

* :class:`RichUI` for a terminal: answers rendered as Markdown while they
  stream (``rich.live.Live``), notices in a yellow, prefixed style, errors red.
* :class:`PlainUI` when stdout is not a TTY: the answer's text as it
  arrives, notices and errors on stderr as ``[notice] …`` / ``error: …`` lines.

Streaming Markdown without flicker or lost text: ``Live`` redraws its
renderable in place, which only works while it fits on the screen. So the
live part is kept short. When it grows taller than the terminal, the finished
blocks at its top (up to a blank line outside a code fence) are printed once,
permanently, above the live area, and only the tail stays live. A code block
taller than the screen is split the same way by closing and reopening its fence;
a single paragraph taller than the screen shows its last lines while it grows.
Refreshes are throttled (:data:`REFRESH_INTERVAL`); when the answer ends,
``Live.stop()`` replaces the (short) live area by the complete rendering once.

Both flavours show text a server sent (answers, notices, errors, history, the
model's name) without control characters other than newline and tab
(``chatcore.protocol.without_controls``): neither rich nor a pipe into a
terminal stops ESC, so a server, or a model that was told to, could otherwise
clear the screen, rewrite lines already shown, set the window title or write
the clipboard.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from typing import IO, Protocol

from chatcore.protocol import AnswerEnd, Notice, NoticeKind, without_controls
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
from rich.segment import Segment
from rich.text import Text

__all__ = [
    "REFRESH_INTERVAL",
    "UI",
    "AnswerView",
    "MarkdownStream",
    "PlainUI",
    "RichUI",
    "notice_text",
    "split_markdown",
]

#: At most this many redraws per second while an answer streams.
REFRESH_INTERVAL = 1 / 12

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")

_NOTICE_LABEL = {
    NoticeKind.QUEUE: "queue",
    NoticeKind.MODERATION: "moderation",
    NoticeKind.PRIVACY: "privacy",
    NoticeKind.ANSWER_MASKED: "masked",
    NoticeKind.CONTEXT_TRIMMED: "context",
    NoticeKind.MODEL_LOADING: "model",
    NoticeKind.INFO: "info",
}


def notice_text(notice: Notice) -> str:
    """A one-line, human rendering of a server notice, fit to be shown."""
    message = without_controls(notice.message)
    if notice.kind is NoticeKind.QUEUE and notice.position is not None:
        where = "next in line" if notice.position == 1 else f"number {notice.position} in line"
        return message or f"waiting for the model: you are {where}"
    return message or notice.kind.value.replace("_", " ")


def split_markdown(text: str) -> tuple[str, str, str]:
    """Split streaming Markdown into ``(done, reopen, rest)`` at the last safe point.

    ``done`` can be rendered on its own and never changes again; the rest is
    rendered as ``reopen + rest``. Safe points: after a blank line outside a
    code fence (``reopen`` is empty), or inside an open fence after a complete
    line (``done`` gets a closing fence and ``reopen`` repeats the opening one).
    Returns ``("", "", text)`` when there is no safe point.
    """
    fence: str | None = None  # the opening fence line while inside a code block
    fence_marker = ""
    best: tuple[str, str, str] = ("", "", text)
    pos = 0
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        pos += len(line)
        complete = line.endswith("\n")
        if not complete:
            break
        m = _FENCE.match(line.rstrip("\n"))
        if fence is None:
            if m:
                fence, fence_marker = line.rstrip("\n"), m.group(1)
            elif (not line.strip() and i > 0 and i + 1 < len(lines)
                  and not lines[i + 1][:1].isspace()):
                # Not before an indented line: on its own that would turn
                # a list item's continuation into a code block.
                best = (text[:pos], "", text[pos:])
        else:
            if m and m.group(1)[0] == fence_marker[0] and len(m.group(1)) >= len(fence_marker) \
                    and not m.group(2).strip():
                fence = None
            elif pos < len(text):
                stripped = fence.lstrip()
                best = (text[:pos] + fence_marker + "\n", stripped + "\n", text[pos:])
    return best


class AnswerView(Protocol):
    """Shows one answer while it streams."""

    def append(self, delta: str) -> None: ...
    def tick(self) -> None: ...
    def finish(self) -> None: ...


class _Tail:
    """The last ``lines`` lines of a renderable: the growing end of an answer."""

    def __init__(self, renderable: RenderableType, lines: int) -> None:
        self.renderable = renderable
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options, pad=False)
        for line in lines[-self.lines:]:
            yield from line
            yield Segment.line()


class MarkdownStream:
    """A growing Markdown answer in a ``rich.live.Live`` (see the module docstring)."""

    def __init__(self, console: Console, *, interval: float = REFRESH_INTERVAL) -> None:
        self._console = console
        self._interval = interval
        self._live = Live(
            console=console,
            transient=False,
            auto_refresh=False,  # we refresh, throttled, from the event loop
            # Only matters for the last refresh in stop(), which rich renders
            # in full whatever this says; while streaming _Tail fits the screen.
            vertical_overflow="crop",
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._reopen = ""  # fence to repeat before the live tail (see split_markdown)
        self._pending = ""  # text not yet committed above the live area
        self._dirty = False
        self._last_refresh = 0.0
        self._started = False

    def append(self, delta: str) -> None:
        if not self._started:
            self._live.start()
            self._started = True
        self._pending += without_controls(delta)
        self._dirty = True
        self.tick()

    def tick(self) -> None:
        if self._dirty and time.monotonic() - self._last_refresh >= self._interval:
            self._refresh()

    @property
    def started(self) -> bool:
        """Whether the answer's live display is on screen."""
        return self._started

    def print_above(self, renderable: object) -> None:
        """Print something (a notice) above the answer being streamed."""
        if self._started:
            self._live.console.print(renderable)
        else:
            self._console.print(renderable)

    def finish(self) -> None:
        if not self._started:
            return
        self._commit_overflow()
        # Not refreshed here: stop() draws this once, complete, over the tail.
        self._live.update(Markdown(self._reopen + self._pending), refresh=False)
        self._live.stop()
        self._started = False
        self._console.print()

    def _limit(self) -> int:
        return max(4, self._console.size.height - 4)

    def _refresh(self) -> None:
        self._dirty = False
        self._last_refresh = time.monotonic()
        self._commit_overflow()
        tail = _Tail(Markdown(self._reopen + self._pending), self._limit())
        self._live.update(tail, refresh=True)

    def _commit_overflow(self) -> None:
        # Keep the live area shorter than the screen: cursor-up redraws can't
        # reach lines that already scrolled away, which is where flicker and
        # duplicated text come from.
        limit = self._limit()
        live_text = self._reopen + self._pending
        if self._height(live_text) <= limit:
            return
        done, reopen, rest = split_markdown(live_text)
        if not done:
            return  # one huge paragraph: _Tail shows its end while it grows
        self._live.console.print(Markdown(done))
        if not reopen:
            # Rich separates Markdown blocks with a blank line; keep that
            # between the committed blocks and the live tail.
            self._live.console.print()
        self._reopen, self._pending = reopen, rest

    def _height(self, text: str) -> int:
        options = self._console.options
        return len(self._console.render_lines(Markdown(text), options, pad=False))


class PlainStream:
    """The answer as plain text, written as it arrives (stdout is not a TTY)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._last = ""

    def append(self, delta: str) -> None:
        delta = without_controls(delta)
        if delta:
            self._out.write(delta)
            self._out.flush()
            self._last = delta

    def tick(self) -> None:
        pass

    def finish(self) -> None:
        if self._last and not self._last.endswith("\n"):
            self._out.write("\n")
        self._out.flush()
        self._last = ""


def _shown_turns(turns: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A conversation's turns as the server sent them, fit to be shown."""
    return [(without_controls(q), without_controls(a), without_controls(n)) for q, a, n in turns]


class UI(Protocol):
    """What the interactive session and the one-shot mode need to show."""

    def welcome(self, *, address: str, user: str, model: str, version: int) -> None: ...
    def answer(self) -> AnswerView: ...
    def notice(self, text: str, *, label: str = "notice") -> None: ...
    def server_notice(self, notice: Notice) -> None: ...
    def error(self, text: str) -> None: ...
    def info(self, text: str) -> None: ...
    def history(self, turns: Sequence[tuple[str, str, str]]) -> None:
        """(question, answer, note): a note says why an answer is not whole."""

    def answer_stats(self, end: AnswerEnd) -> None: ...


def stats_text(end: AnswerEnd) -> str:
    """``42 tokens · 1.3 s · 32 tokens/s · first token 0.21 s`` (like ``ollama run --verbose``)."""
    n = end.answer_tokens
    parts = [f"{n} token{'' if n == 1 else 's'}", f"{end.total_ms / 1000:.1f} s"]
    generating = (end.total_ms - end.first_token_ms) / 1000
    if end.answer_tokens > 1 and generating > 0:
        parts.append(f"{end.answer_tokens / generating:.0f} tokens/s")
    parts.append(f"first token {end.first_token_ms / 1000:.2f} s")
    return " · ".join(parts)


class RichUI:
    """A terminal UI with colours and Markdown."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=False)
        self._stream: MarkdownStream | None = None

    def welcome(self, *, address: str, user: str, model: str, version: int) -> None:
        body = Text.assemble(
            ("Connected to ", ""), (address, "bold"), (" as ", ""), (user, "bold"),
            ("\nModel: ", ""),
            (without_controls(model) or "unknown (the server did not say)", "bold cyan"),
            (f"   protocol v{version}", "dim"),
            ("\nType a message and press Enter. Alt-Enter (or Esc Enter) adds a new line.\n", ""),
            ("Ctrl-C stops an answer, Ctrl-D or /quit leaves. ", "dim"),
            ("/help", "bold"), (" lists the commands.", "dim"),
        )
        self.console.print(Panel(body, title="chat", title_align="left", border_style="cyan"))

    def answer(self) -> MarkdownStream:
        self._stream = MarkdownStream(self.console)
        return self._stream

    def _print(self, renderable: object) -> None:
        if self._stream is not None and self._stream.started:
            self._stream.print_above(renderable)
        else:
            self.console.print(renderable)

    def notice(self, text: str, *, label: str = "notice") -> None:
        self._print(Text.assemble(("» ", "bold yellow"), (f"{label}: ", "yellow"),
                                  (without_controls(text), "yellow")))

    def error(self, text: str) -> None:
        self._print(Text.assemble(("✖ ", "bold red"), (without_controls(text), "red")))

    def info(self, text: str) -> None:
        self._print(Text(without_controls(text), style="dim"))

    def server_notice(self, notice: Notice) -> None:
        self.notice(notice_text(notice), label=_NOTICE_LABEL.get(notice.kind, "notice"))

    def history(self, turns: Sequence[tuple[str, str, str]]) -> None:
        if not turns:
            self.info("Nothing in this conversation yet.")
            return
        items: list[object] = []
        for question, answer, note in _shown_turns(turns):
            items.append(Rule("you", align="left", style="green"))
            items.append(Text(question))
            items.append(Rule("assistant", align="left", style="cyan"))
            items.append(Markdown(answer) if answer else Text("(no answer)", style="dim"))
            if note:
                items.append(Text(f"[{note}]", style="yellow"))
        items.append(Rule(style="dim"))
        self.console.print(Group(*items))  # type: ignore[arg-type]

    def answer_stats(self, end: AnswerEnd) -> None:
        self.console.print(Text(stats_text(end), style="dim"), justify="right")


class PlainUI:
    """Plain text for pipes and ``docker compose run -T``: answers on stdout,
    everything else on stderr, no escape sequences."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None,
                 *, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet

    def welcome(self, *, address: str, user: str, model: str, version: int) -> None:
        if not self.quiet:
            model = without_controls(model)
            self.info(f"connected to {address} as {user}; model {model or 'unknown'}; "
                      f"protocol v{version}; /help lists the commands")

    def answer(self) -> PlainStream:
        return PlainStream(self.out)

    def notice(self, text: str, *, label: str = "notice") -> None:
        if not self.quiet:
            self.err.write(f"[{label}] {without_controls(text)}\n")
            self.err.flush()

    def error(self, text: str) -> None:
        self.err.write(f"error: {without_controls(text)}\n")
        self.err.flush()

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.write(f"{without_controls(text)}\n")
            self.err.flush()

    def server_notice(self, notice: Notice) -> None:
        self.notice(notice_text(notice), label=_NOTICE_LABEL.get(notice.kind, "notice"))

    def answer_stats(self, end: AnswerEnd) -> None:
        """Plain output stays the answer text only."""

    def history(self, turns: Sequence[tuple[str, str, str]]) -> None:
        for question, answer, note in _shown_turns(turns):
            self.out.write(f"you: {question}\nassistant: {answer}\n")
            if note:
                self.out.write(f"[{note}]\n")
        self.out.flush()
