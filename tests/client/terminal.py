"""The real ``chat-client`` executable, and a chat-client on a pseudo-terminal
(pexpect) for the interactive tests."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pexpect
import pyte
from rich.console import Console

from tests.fixtures.server import USER

REPO = Path(__file__).resolve().parents[2]
#: The installed console script, exactly what a user runs.
CHAT_CLIENT = str(REPO / ".venv" / "bin" / "chat-client")


def client_env(**extra: str) -> dict[str, str]:
    """The environment minus any CHAT_* settings of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(extra)
    return env


#: The emulated terminal of the rendering tests.
WIDTH, HEIGHT = 60, 15


def terminal_console(buf: io.StringIO) -> Console:
    """A rich console that writes what a terminal of WIDTH x HEIGHT would get."""
    return Console(file=buf, force_terminal=True, width=WIDTH, height=HEIGHT,
                   color_system=None, legacy_windows=False, _environ={})


def screen_text(raw: str) -> list[str]:
    """Scrollback + screen of a terminal that received ``raw``, as text lines."""
    screen = pyte.HistoryScreen(WIDTH, HEIGHT, history=100_000, ratio=0.5)
    stream = pyte.Stream(screen)
    stream.feed(raw.replace("\n", "\r\n"))  # the tty's ONLCR
    lines = ["".join(row[x].data for x in range(WIDTH)) for row in screen.history.top]
    lines += screen.display
    text = [line.rstrip() for line in lines]
    while text and not text[-1]:
        text.pop()
    return text


PROMPT = "you>"  # prompt_toolkit moves the cursor instead of printing the space


class Client:
    """A chat-client on a pty, with the whole transcript kept for assertions."""

    def __init__(self, args: list[str], tmp_path: Path, **env: str) -> None:
        self.state_home = tmp_path / "state"
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            CHAT_CLIENT, args, cwd=str(REPO), encoding="utf-8", timeout=30,
            dimensions=(40, 120),
            env=client_env(TERM="xterm", XDG_STATE_HOME=str(self.state_home),
                           # A pty from pexpect never answers cursor-position requests.
                           PROMPT_TOOLKIT_NO_CPR="1", **env),
        )
        self.child.logfile_read = self.transcript

    def expect(self, pattern: str, timeout: float = 30) -> str:
        """Wait for literal ``pattern``; returns the output before it."""
        self.child.expect_exact(pattern, timeout=timeout)
        return self.child.before

    def type(self, text: str) -> None:
        self.child.send(text + "\r")  # a terminal's Enter key sends CR

    def run(self, text: str, marker: str) -> str:
        """Enter ``text``, wait for ``marker`` then the next prompt; returns the
        output in between. (Waiting for the prompt alone is not enough: the
        prompt_toolkit redraws the accepted line, prompt included, right away.)"""
        start = len(self.transcript.getvalue())
        self.type(text)
        self.expect(marker)
        self.expect(PROMPT)
        return self.transcript.getvalue()[start:]

    def login(self, password: str) -> None:
        self.expect("Password:")
        self.child.sendline(password)

    def close(self) -> None:
        if self.child.isalive():
            self.child.kill(signal.SIGKILL)
        self.child.close()

    @property
    def history_file(self) -> Path:
        return self.state_home / "chat-client" / "history"




def user_args(port: int) -> list[str]:
    """The options that point a client at a local server as the test user."""
    return ["--host", "127.0.0.1", "--port", str(port), "--user", USER]
