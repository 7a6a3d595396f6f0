"""
``python -m tests.memory.traced_server``: the real ``chat-server`` (its console
entry point, unchanged) with :mod:`tracemalloc` on, for tests that count the
bytes the server allocates for something (tests/memory/test_connection_cost.py).

On ``SIGUSR1`` it collects garbage and writes the bytes tracemalloc currently
traces, as one decimal line, to the file named by ``TRACED_BYTES_FILE``
(written to a temporary name and renamed, so a reader never sees half a line).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc


def _report(signum: int, frame: object) -> None:
    gc.collect()
    path = os.environ["TRACED_BYTES_FILE"]
    with open(path + ".tmp", "w", encoding="ascii") as f:
        f.write(f"{tracemalloc.get_traced_memory()[0]}\n")
    os.replace(path + ".tmp", path)


def main() -> int:
    tracemalloc.start(int(os.environ.get("TRACED_FRAMES", "1")))
    signal.signal(signal.SIGUSR1, _report)
    from chat_server.cli import main as chat_server_main

    return chat_server_main()


if __name__ == "__main__":
    sys.exit(main())
