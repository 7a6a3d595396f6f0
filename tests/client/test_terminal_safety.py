"""Text a server sent cannot drive the terminal the client runs in.

rich does not stop ESC (it drops only a few controls such as BEL), and a pipe
into a terminal stops nothing. A server, or a model that was told to, could
otherwise clear the screen, rewrite lines already shown (CR, cursor moves),
set the window title or write the clipboard (OSC 52). The client shows
everything a server sent without control characters other than newline and
tab, in both its terminal and its plain output.
"""

from __future__ import annotations

import io

from chat_client.render import MarkdownStream, PlainUI, RichUI
from chatcore.protocol import Notice, NoticeKind

from tests.client.conftest import client_env, run_client
from tests.client.terminal import screen_text, terminal_console
from tests.client.v1_peer import V1Peer

#: Each starts something a terminal acts on: clear screen and home, a window
#: title (OSC 0, ended by BEL), the clipboard (OSC 52, ended by ST), a return
#: that lets the next text cover this line, an 8-bit CSI.
ATTACKS = ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]52;c;cm0gLXJmIH4=\x1b\\", "\r", "\x9b2J"]


def _hostile(text: str) -> str:
    return "".join(f"{attack}{word} " for attack, word in zip(ATTACKS * 3, text.split(), strict=False))


def _no_control(raw: str) -> None:
    assert "\x1b]" not in raw and "\x1b[2J" not in raw and "\x1b[H" not in raw
    assert "\x9b" not in raw and "\x07" not in raw


def test_a_streamed_answer_cannot_clear_or_overwrite_the_screen() -> None:
    words = "the first line stays on the screen with every word after it"
    buf = io.StringIO()
    view = MarkdownStream(terminal_console(buf), interval=0)
    for piece in (_hostile(words)[i:i + 5] for i in range(0, len(_hostile(words)), 5)):
        view.append(piece)
    view.finish()
    _no_control(buf.getvalue())
    shown = " ".join(screen_text(buf.getvalue()))
    # Every word is on the screen, in order (the rest of each sequence stays
    # as harmless text, e.g. "[2J").
    position = 0
    for word in words.split():
        position = shown.index(word, position) + len(word)


def test_rich_notices_errors_history_and_model_name_show_no_controls() -> None:
    buf = io.StringIO()
    ui = RichUI(terminal_console(buf))
    ui.welcome(address="127.0.0.1:7000", user="alice", model="llama\x1b]0;x\x07", version=2)
    ui.server_notice(Notice(NoticeKind.INFO, message="note\x1b[2J\x1b[Hhere"))
    ui.error("refused\x1b]52;c;eA==\x1b\\ text")
    ui.history([("question\r\x1b[2J", "answer \x9b2J text", "note\x1b]0;t\x07")])
    raw = buf.getvalue()
    _no_control(raw)
    for visible in ("llama", "note[2J[Hhere", "refused", "question", "answer", "note"):
        assert visible in raw


def test_plain_output_shows_no_controls_on_stdout_or_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    ui = PlainUI(out, err)
    ui.welcome(address="127.0.0.1:7000", user="alice", model="m\x1b[2J", version=2)
    stream = ui.answer()
    for attack in ATTACKS:
        stream.append(f"word{attack}")
    stream.finish()
    ui.server_notice(Notice(NoticeKind.QUEUE, message="wait\x1b[H", position=2))
    ui.error("bad\r\x1b]0;t\x07")
    ui.history([("q\x1b[2J", "a\r", "n\x9b")])
    for raw in (out.getvalue(), err.getvalue()):
        _no_control(raw)
        assert "\r" not in raw
    assert out.getvalue().startswith("word[2J[Hword]0;pwnedword]52;c;cm0gLXJmIH4=\\wordword2J\n")


def test_the_v1_client_prints_a_hostile_answer_and_error_without_controls() -> None:
    answer = "Hello\x1b[2J\x1b[H there\r, friend\x1b]0;pwned\x07."
    peer = V1Peer(answer=lambda _message: answer).start()
    error_peer = V1Peer(answer=lambda _m: "[ERROR] model_error: bad\x1b]52;c;eA==\x1b\\ news").start()
    try:
        runs = [run_client(["--protocol", "v1", "--host", "127.0.0.1", "--port", str(p.port),
                            "--user", "alice", "--message", "hi"],
                           env=client_env(CHAT_PASSWORD="secret")) for p in (peer, error_peer)]
    finally:
        peer.stop()
        error_peer.stop()
    ok, failed = runs
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "Hello[2J[H there, friend]0;pwned.\n"
    assert failed.returncode == 5
    for raw in (ok.stdout, ok.stderr, failed.stdout, failed.stderr):
        _no_control(raw)
    assert "bad]52;c;eA==\\ news" in failed.stderr
