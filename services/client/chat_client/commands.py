"""
chat_client.commands
~~~~~~~~~~~~~~~~~~~~

Slash commands of the interactive client. Parsing only: the session decides
what each one does.

A line starting with ``/`` is a command; ``//text`` sends ``/text`` as an
ordinary message, for the rare question that starts with a slash.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "Message", "help_text", "parse"]

#: name → one-line description, in the order /help lists them.
COMMANDS: dict[str, str] = {
    "help": "show this help",
    "new": "start a fresh conversation (the model forgets this one)",
    "history": "show this conversation so far",
    "retry": "send your last message again (after an answer was cut off, or for another answer)",
    "models": "list the models the server offers (* marks this conversation's)",
    "model": "/model NAME: answer with NAME for the rest of this conversation",
    "quit": "leave (same as Ctrl-D)",
}

_ALIASES = {"exit": "quit", "bye": "quit", "h": "help", "?": "help", "clear": "new"}


@dataclass(frozen=True)
class Command:
    name: str  # a key of COMMANDS, or the unknown name as typed
    argument: str = ""

    @property
    def known(self) -> bool:
        return self.name in COMMANDS


@dataclass(frozen=True)
class Message:
    text: str


def parse(line: str) -> Command | Message | None:
    """What the user typed: a command, a message, or ``None`` for a blank line."""
    if not line.strip():
        return None
    stripped = line.strip()
    if stripped.startswith("//"):
        return Message(stripped[1:])
    if stripped.startswith("/") and "\n" not in stripped:
        name, _, argument = stripped[1:].partition(" ")
        name = name.lower()
        return Command(_ALIASES.get(name, name), argument.strip())
    return Message(line.strip("\n"))


def help_text() -> str:
    width = max(len(n) for n in COMMANDS) + 1
    lines = [f"  /{name:<{width}} {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "Keys: Enter sends; Alt-Enter or Esc then Enter inserts a new line;",
        "Up/Down browse the input history; Ctrl-C stops the answer being written",
        "(protocol v1 cannot stop an answer: a second Ctrl-C disconnects);",
        "Ctrl-D on an empty line leaves. Start a message with // to send a leading /.",
    ]
    return "\n".join(lines)
