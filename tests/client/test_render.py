"""Streaming Markdown rendering: what ends up on a (pyte-emulated) screen.

``MarkdownStream`` redraws a live area in place and commits finished blocks
above it. These tests replay its escape sequences into a terminal emulator and
check the screen plus scrollback show the complete answer exactly once: no
lost lines, no duplicates left behind by redraws.
"""

from __future__ import annotations

import io

import pyte
from chat_client.commands import Command, Message, parse
from chat_client.render import MarkdownStream, split_markdown
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.markdown import Markdown

from tests.client.terminal import HEIGHT, WIDTH, screen_text, terminal_console


def _direct_render(markdown: str) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=WIDTH, color_system=None, _environ={}).print(Markdown(markdown))
    return [line.rstrip() for line in buf.getvalue().splitlines()]


def _stream(markdown: str, step: int) -> list[str]:
    buf = io.StringIO()
    view = MarkdownStream(terminal_console(buf), interval=0)  # redraw on every delta
    for i in range(0, len(markdown), step):
        view.append(markdown[i:i + step])
    view.finish()
    return screen_text(buf.getvalue())


LONG_ANSWER = (
    "Here is **bold** text and *emphasis*.\n\n"
    "1. first item\n2. second item\n3. third item\n\n"
    "```python\nprint('hello')\n```\n\n"
    + "\n\n".join(f"Paragraph {i} says something fairly long so that it wraps onto a "
                  f"second line of the narrow screen." for i in range(25))
)


def test_streamed_answer_matches_a_direct_render_exactly_once():
    expected = _direct_render(LONG_ANSWER)
    assert len(expected) > 3 * HEIGHT  # scrolls several screens
    for step in (1, 7, 64, 500, len(LONG_ANSWER)):
        shown = _stream(LONG_ANSWER, step)
        assert shown == expected, f"step {step}"


def test_code_block_taller_than_the_screen_keeps_every_line():
    code = "\n".join(f"line_{i:03d} = {i}" for i in range(60))
    answer = f"Intro.\n\n```python\n{code}\n```\n\nOutro."
    shown = "\n".join(_stream(answer, 9))
    for i in range(60):
        assert shown.count(f"line_{i:03d} = {i}") == 1, i
    assert shown.count("Intro.") == 1 and shown.count("Outro.") == 1


def test_one_huge_paragraph_is_complete_at_the_end():
    words = " ".join(f"w{i}" for i in range(600))
    shown = " ".join(_stream(words, 11)).split()
    assert shown == words.split()


# -- split_markdown ----------------------------------------------------------------

def test_split_at_the_last_blank_line():
    assert split_markdown("a\n\nb\n\nc") == ("a\n\nb\n\n", "", "c")
    assert split_markdown("just one paragraph") == ("", "", "just one paragraph")


def test_split_never_before_an_indented_continuation():
    text = "- item\n\n    continued\n"
    assert split_markdown(text) == ("", "", text)


def test_split_inside_an_open_fence_closes_and_reopens_it():
    done, reopen, rest = split_markdown("```py\na = 1\nb = 2\nc")
    assert (done, reopen, rest) == ("```py\na = 1\nb = 2\n```\n", "```py\n", "c")


_LINES = st.sampled_from(["", "text", "- item", "    indented", "```", "```py", "~~~", "# Title"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINES, max_size=12), st.booleans())
def test_split_invariants(lines: list[str], trailing_newline: bool):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    done, reopen, rest = split_markdown(text)
    if not done:
        assert (reopen, rest) == ("", text)
        return
    assert rest and done.endswith("\n")
    if reopen:
        # Inside a fence: done is a prefix of text plus a closing fence.
        prefix = text[: len(text) - len(rest)]
        assert done.startswith(prefix) and done[len(prefix):].strip() in ("```", "~~~")
        assert reopen.lstrip()[:3] in ("```", "~~~")
    else:
        assert done + rest == text


# -- commands --------------------------------------------------------------------

def test_parse_commands_and_messages():
    assert parse("   ") is None
    assert parse("/new") == Command("new")
    assert parse("/QUIT") == Command("quit")
    assert parse("/exit") == Command("quit")
    assert parse("/nope x") == Command("nope", "x") and not Command("nope").known
    assert parse("//etc/hosts is a file") == Message("/etc/hosts is a file")
    assert parse("hello\nworld") == Message("hello\nworld")


def test_the_newest_text_is_on_screen_while_streaming():
    buf = io.StringIO()
    view = MarkdownStream(terminal_console(buf), interval=0)
    cut = LONG_ANSWER.index("Paragraph 12 ")
    for i in range(0, cut + len("Paragraph 12 says"), 5):
        view.append(LONG_ANSWER[i:min(i + 5, cut + len("Paragraph 12 says"))])
    screen = pyte.Screen(WIDTH, HEIGHT)
    pyte.Stream(screen).feed(buf.getvalue().replace("\n", "\r\n"))
    visible = "\n".join(screen.display)
    assert "Paragraph 12 says" in visible
    # Earlier blocks went to the scrollback once, not into the redrawn area.
    assert "Paragraph 2 says" not in visible
    view.finish()


def test_answer_stats_line_reads_like_ollama_run_verbose():
    from chat_client.render import stats_text
    from chatcore.protocol import AnswerEnd

    end = AnswerEnd(1, "stop", prompt_tokens=10, answer_tokens=42, first_token_ms=200, total_ms=1400)
    assert stats_text(end) == "42 tokens · 1.4 s · 35 tokens/s · first token 0.20 s"
    # One token or no generation time: no rate (no division by zero).
    assert stats_text(AnswerEnd(1, answer_tokens=1, first_token_ms=5, total_ms=5)) == (
        "1 token · 0.0 s · first token 0.01 s"
    )
