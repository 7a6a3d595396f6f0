"""
chat_server.status
~~~~~~~~~~~~~~~~~~

``chat-server status``: what the running server is doing, read from its local
admin endpoint (:mod:`chat_server.admin`).

* in a terminal: a view that refreshes every ``--interval`` seconds until Ctrl-C
  (it keeps trying while the server restarts);
* ``--once`` (or when stdout is not a terminal): the view printed once;
* ``--json``: the raw snapshot, one JSON object, for scripts.

Exit status: 0, or 1 when no server answers (one line on stderr).
"""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .admin import AdminError, request

__all__ = ["duration", "render", "run"]

Snapshot = dict[str, Any]

_OUTCOME_WORDS = (
    ("answered", "answered"),
    ("refused", "refused"),
    ("rate_limited", "rate-limited"),
    ("busy", "busy"),
    ("rejected", "rejected"),
    ("cancelled", "cancelled"),
    ("interrupted", "interrupted"),
    ("failed", "failed"),
)
_STATE_STYLE = {"ready": "green", "pulling": "yellow", "starting": "yellow", "unavailable": "bold red"}


def duration(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m 05s``, ``2h 03m``, ``3d 04h``."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def _since(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        ts = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(snap: Snapshot, *, max_rows: int | None = None) -> RenderableType:
    """The human view of one snapshot."""
    server = snap.get("server", {})
    conns = snap.get("connections", {})
    queue = snap.get("queue", {})
    users: list[dict[str, Any]] = snap.get("users", [])
    totals = snap.get("totals", {})

    head = Text()
    head.append(f"chat-server {server.get('version', '?')}", style="bold")
    head.append(f" · pid {server.get('pid', '?')} · up {duration(server.get('uptime_seconds', 0))}")
    head.append(f" · model {server.get('model', '?')}")
    if server.get("stopping"):
        head.append(" · SHUTTING DOWN", style="bold red")

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    protocols = ", ".join(f"{k} {v}" for k, v in sorted(conns.get("by_protocol", {}).items()))
    summary.add_row(
        "Connections",
        f"{conns.get('open', 0)} open" + (f" ({protocols})" if protocols else "")
        + f" · {conns.get('logged_in', 0)} logged in · limit {conns.get('max', '?')}",
    )
    summary.add_row(
        "Queue",
        f"{queue.get('waiting', 0)} waiting · {queue.get('in_flight', 0)}/"
        f"{queue.get('max_parallel', '?')} generating",
    )
    backends = snap.get("backends", [])
    if backends:
        parts = Text()
        for i, b in enumerate(backends):
            if i:
                parts.append(" · ")
            parts.append(f"{b.get('name')}")
            if b.get("model"):
                parts.append(f" ({b['model']})")
            parts.append(": ")
            state = str(b.get("state", "?"))
            parts.append(state, style=_STATE_STYLE.get(state, ""))
            if b.get("max_parallel") is not None:
                parts.append(f" {b.get('in_flight') or 0}/{b['max_parallel']} generating")
            if state != "ready" and b.get("detail"):
                parts.append(f" - {b['detail']}")
        summary.add_row("Model", parts)
    messages = totals.get("messages", {})
    logins = totals.get("logins", {})
    summary.add_row(
        "Messages",
        " · ".join(f"{messages.get(key, 0)} {word}" for key, word in _OUTCOME_WORDS)
        + " (since start)",
    )
    summary.add_row(
        "Logins",
        f"{logins.get('success', 0)} ok · {logins.get('failure', 0)} failed · "
        f"{logins.get('throttled', 0)} throttled (since start)",
    )

    if not users:
        table: RenderableType = Text("No one is logged in.", style="dim")
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for name, justify in (("USER", "left"), ("PROTOCOL", "left"), ("SINCE", "left"),
                              ("FOR", "right"), ("MESSAGES", "right"), ("REFUSED", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        shown = users if max_rows is None else users[:max(max_rows, 1)]
        for u in shown:
            protocol = str(u.get("protocol", "?"))
            if u.get("transport") == "tls":
                protocol += "+tls"
            table.add_row(
                Text(str(u.get("user", "?"))),  # Text: a name is never markup
                protocol,
                _since(u.get("since")),
                duration(u.get("connected_seconds", 0)),
                str(u.get("messages", 0)),
                Text(str(u.get("refused", 0)), style="red" if u.get("refused") else ""),
            )
        if len(shown) < len(users):
            table.caption = f"... and {len(users) - len(shown)} more (chat-server status --json lists all)"
    return Group(head, summary, Text(""), table)


def run(socket_path: Path, *, once: bool, as_json: bool, interval: float,
        out: TextIO, err: TextIO, is_tty: bool | None = None,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """The ``status`` command; returns the exit status."""
    tty = out.isatty() if is_tty is None else is_tty
    if as_json or once or not tty:
        try:
            snap = request(socket_path)
        except AdminError as exc:
            print(f"chat-server status: {exc}", file=err)
            return 1
        if as_json:
            out.write(json.dumps(snap, ensure_ascii=False, indent=2) + "\n")
        elif tty:
            Console(file=out, highlight=False).print(render(snap))
        else:  # plain text for pipes and files: no colours, no trailing blanks
            buffer = io.StringIO()
            Console(file=buffer, width=160, highlight=False, no_color=True).print(render(snap))
            out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
        out.flush()
        return 0

    from rich.live import Live

    console = Console(file=out, highlight=False)

    def frame() -> RenderableType:
        try:
            snap = request(socket_path)
        except AdminError as exc:
            return Text(f"{exc}; retrying every {interval:g} s (Ctrl-C to leave)", style="yellow")
        rows = max(console.size.height - 12, 3)
        return Group(render(snap, max_rows=rows),
                     Text(f"refreshing every {interval:g} s · Ctrl-C to leave", style="dim"))

    # Ctrl-C leaves the view even when this process was started with SIGINT
    # ignored (by a script that ran it in the background, nohup, some
    # supervisors): Python keeps an inherited SIG_IGN, and the view would then
    # run until killed.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Live(frame(), console=console, auto_refresh=False, screen=False) as live:
            while True:
                sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
