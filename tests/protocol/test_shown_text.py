"""``without_controls``: text a server sent, fit to be shown on a terminal.

The server applies it to v2 answer text and the client to everything it shows
that came from a server (docs/PROTOCOL.md §4, "Text that is shown").
"""

from __future__ import annotations

import unicodedata

import pytest
from chatcore.protocol import without_controls
from hypothesis import given
from hypothesis import strategies as st

#: Every character a terminal may act on instead of showing, except the two
#: that text keeps.
CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_every_c0_c1_and_del_control_is_dropped(control: str) -> None:
    assert without_controls(f"a{control}b") == "ab"


@pytest.mark.parametrize(("raw", "shown"), [
    ("clear\x1b[2J\x1b[Hscreen", "clear[2J[Hscreen"),             # CSI: the ESC goes
    ("title\x1b]0;pwned\x07", "title]0;pwned"),                   # OSC window title
    ("clip\x1b]52;c;SGVsbG8=\x1b\\", "clip]52;c;SGVsbG8=\\"),    # OSC 52 clipboard, ST end
    ("real\rfake", "realfake"),                                   # CR cannot cover text
    ("csi\x9b31mred", "csi31mred"),                                # the 8-bit CSI
])
def test_terminal_sequences_lose_the_characters_that_start_them(raw: str, shown: str) -> None:
    assert without_controls(raw) == shown


def test_newline_tab_and_printable_unicode_are_kept() -> None:
    text = "line one\n\tcafé 北京 😀 – “quoted” \u2028 \u200b end"
    assert without_controls(text) == text


@given(st.text())
def test_only_the_controls_are_removed(text: str) -> None:
    shown = without_controls(text)
    assert shown == "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")
    assert without_controls(shown) == shown
