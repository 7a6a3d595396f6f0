"""A faithful stand-in for the Ollama REST API (stdlib only), for tests and benchmarks.

Run it with ``python -m ollama_standin --port 0``; it prints
``Listening on HOST:PORT (version X)`` like ``ollama serve``. See README.md for the
``[standin:...]`` directives and the ``/_standin/*`` control endpoints.
"""

from __future__ import annotations

import base64

from .answers import BUSY_ERROR, FAULTS, MID_STREAM_ERROR, RUNNER_ERROR, UNICODE_ANSWER
from .server import Config, serve

__all__ = [
    "BUSY_ERROR",
    "FAULTS",
    "MID_STREAM_ERROR",
    "RUNNER_ERROR",
    "UNICODE_ANSWER",
    "Config",
    "say",
    "serve",
]


def say(text: str) -> str:
    """The directive that makes the stand-in answer exactly ``text`` (in 1-3 char tokens)."""
    return "[standin:say-b64=" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "]"
