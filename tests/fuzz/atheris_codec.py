"""
Coverage-guided fuzzing of the codec with atheris (libFuzzer for Python).

Run by ``test_atheris.py`` for a bounded time; by hand for longer::

    .venv/bin/python tests/fuzz/atheris_codec.py CORPUS_DIR -max_total_time=600

The first input byte picks the side (server, v2 client, v1 client), the next
ones where the stream is cut into pieces; the rest is the stream. The
invariants are those of :mod:`tests.fuzz.harness`: any other exception is a
finding, and libFuzzer saves the input as ``crash-*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["chatcore"]):
    import chatcore.protocol  # noqa: F401  (instrumented for coverage)

from tests.fuzz.harness import feed, server, split, v1_client, v2_client

SIDES = (server, v2_client, v1_client)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    side = SIDES[fdp.ConsumeIntInRange(0, len(SIDES) - 1)]
    cuts = [fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    feed(side(), split(blob, cuts))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
