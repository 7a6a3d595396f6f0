"""What the stand-in answers: deterministic tokens, ``[standin:...]`` directives, JSON like Go.

The answer to a chat is ``Echo: <last user message>`` padded with filler words up
to the configured token count, so a test can assert exactly what passed through
the chat server. Directives in the last user message change one request; they
are removed from the echoed text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

#: Faults a directive or ``/_standin/control`` can select (see README.md).
FAULTS = frozenset({
    "error-mid-stream", "cut-mid-stream", "reset-mid-stream", "status-404", "status-503",
    "status-500", "stall", "trickle", "hang", "no-done", "bad-json", "blank-line", "no-message", "raw-u2028",
})

BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_ERROR = "llama runner process has terminated: exit status 2"
MID_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"

FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
          "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "magna")

#: ``[standin:unicode]``: text that trips naive encoders (curly quotes, accents,
#: an astral-plane emoji, U+2028 which str.splitlines() treats as a line break,
#: and a run of 70 spaces).
UNICODE_ANSWER = (
    "\u201cCurly quotes\u201d at the caf\u00e9 \U0001F600 line\u2028separator"
    + " " * 70 + "end \u00fcber na\u00efve \u2014 done."
)

_DIRECTIVE = re.compile(r"\[standin:([a-z0-9-]+)(?:=([^\]]*))?\]")
_WORD = re.compile(r"\s*\S+")


class DirectiveError(ValueError):
    """A directive value that does not parse; the stand-in answers 400."""


@dataclass
class Plan:
    """How one chat/generate request is answered."""

    tokens: list[str]
    delay: float = 0.0  # seconds between tokens
    fault: str | None = None
    stall_seconds: float = 0.0
    done_reason: str = "stop"
    used_global_fault: bool = False
    #: The whole streamed answer (every line, the done line, the end) in one write.
    burst: bool = False

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def split_words(text: str) -> list[str]:
    """Word tokens, each with its leading whitespace: ``"a  b"`` -> ``["a", "  b"]``."""
    return _WORD.findall(text)


def split_small(text: str) -> list[str]:
    """1-3 character tokens (1, 2, 3, 1, 2, 3, ...) to exercise cross-token masking."""
    out, i, n = [], 0, 1
    while i < len(text):
        out.append(text[i:i + n])
        i += n
        n = n % 3 + 1
    return out


def parse_fault(spec: str) -> tuple[str, str | None]:
    """``"stall=5"`` -> ``("stall", "5")``; raises DirectiveError for unknown names."""
    name, _, value = spec.partition("=")
    if name not in FAULTS:
        raise DirectiveError(f"unknown fault {name!r}")
    return name, (value or None)


def make_plan(text: str, *, tokens: int, delay_ms: float, global_fault: str | None,
              num_predict: int | None = None) -> Plan:
    """Turn the last user message (or prompt) plus the global settings into a Plan."""
    fault: str | None = None
    stall = 30.0
    say: str | None = None
    unicode = False
    burst = False
    directives = _DIRECTIVE.findall(text)
    used_global = False
    if global_fault and not any(name in FAULTS for name, _ in directives):
        name, value = parse_fault(global_fault)
        directives.append((name, value or ""))
        used_global = True
    for name, value in directives:
        try:
            if name == "tokens":
                tokens = int(value)
            elif name == "delay-ms":
                delay_ms = float(value)
            elif name == "say-b64":
                say = base64.b64decode(value, validate=True).decode("utf-8")
            elif name == "unicode":
                unicode = True
            elif name == "burst":
                burst = True
            elif name in ("stall", "trickle", "hang"):
                fault, stall = name, float(value or 30)
            elif name in FAULTS:
                fault = name
            else:
                raise DirectiveError(f"unknown directive {name!r}")
        except (ValueError, binascii.Error) as exc:
            raise DirectiveError(f"bad directive [standin:{name}={value}]: {exc}") from None
    if say is not None:
        toks = split_small(say)
    elif unicode:
        toks = split_words(UNICODE_ANSWER)
    else:
        toks = split_words("Echo: " + _DIRECTIVE.sub("", text).strip())
        i = 0
        while len(toks) < tokens:
            toks.append(" " + FILLER[i % len(FILLER)])
            i += 1
    reason = "stop"
    if num_predict is not None and 0 <= num_predict < len(toks):
        toks, reason = toks[:num_predict], "length"
    return Plan(toks, max(delay_ms, 0.0) / 1000.0, fault, stall, reason, used_global, burst)


def count_words(*texts: str) -> int:
    """A stand-in for a tokenizer: prompt_eval_count is the number of words (at least 1)."""
    return max(1, sum(len(t.split()) for t in texts))


def dumps(obj: Any) -> bytes:
    """Compact JSON like Go's json.Marshal, but ASCII-only.

    ensure_ascii=True escapes U+2028/U+2029 (which Go escapes too) and U+0085
    (which Go does not): the Python client splits lines with str.splitlines(),
    so a raw one of these inside a string would break its parsing. ``<>&`` are
    escaped like Go's HTML-safe encoder; in JSON they only occur inside strings.
    """
    s = json.dumps(obj, separators=(",", ":"))
    s = s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return s.encode("ascii")


def rfc3339nano(t: float | None = None) -> str:
    """``time.Now().UTC()`` formatted like Go's RFC3339Nano (trailing zeros trimmed)."""
    ns = time.time_ns() if t is None else int(t * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"
