"""
chat_server.memory
~~~~~~~~~~~~~~~~~~

The server's allocation policy, applied by the process itself at start, so its
memory figures hold however it is started (the image, ``pip install`` and
``chat-server``, a systemd unit...).

Why: every login hashes with Argon2id, which allocates a 19 MiB buffer in a
worker thread. With glibc's defaults the first such buffer is served by mmap
and returned on free, but freeing it raises glibc's *dynamic* mmap threshold,
so later buffers come from the thread's arena (one per thread, up to 8 per
core) and stay in the process after they are freed: measured, idle
connections cost 34.8 KiB each instead of 8.6 KiB (docs/BENCHMARKS.md).

The policy (glibc only, through ``mallopt``; nothing is done elsewhere):

* ``M_MMAP_THRESHOLD`` = 1 MiB: allocations of 1 MiB or more always use mmap
  and go back to the OS when freed (setting it also turns the dynamic threshold
  off). Python objects are far smaller and never reach it.
* ``M_ARENA_MAX`` = 2: the asyncio loop and the few worker threads (hashing,
  the store, long moderation) share two arenas instead of one per thread, so
  less freed memory is stranded in idle arenas.

And one habit: after a large amount of memory was used and released (a long
answer, its frames and its filter windows), :func:`give_back` returns the free
pages of the heap to the OS (``malloc_trim``, well under a millisecond), a
moment later, once the objects are gone. Without it a few megabytes stay in
the process after each such answer (measured in tests/hostile/test_slow_reader.py).

A variable an operator sets (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``)
wins: glibc has applied it before Python started, and it is left alone.

The cycle collector gets one policy too: what exists once the server has
started (modules, the ollama/httpx/pydantic machinery, the moderation tables,
about 125,000 objects) lives as long as the process, so
:func:`freeze_startup_objects` moves it to the collector's permanent generation
(``gc.freeze``). Without it every full collection walks all of it again: about
36 ms each, with every session stalled meanwhile, several times a minute under
load (docs/BENCHMARKS.md, "Throughput").
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import platform
from collections.abc import Mapping

__all__ = [
    "ARENA_MAX",
    "MMAP_THRESHOLD",
    "TRIM_AFTER_BYTES",
    "apply_allocation_policy",
    "freeze_startup_objects",
    "give_back",
    "trims",
]

log = logging.getLogger("chat_server.memory")

#: Allocations at least this large are served by mmap (returned to the OS on free).
MMAP_THRESHOLD = 1024 * 1024
#: Malloc arenas shared by all threads.
ARENA_MAX = 2
#: Return free heap memory to the OS once this much was reported released.
TRIM_AFTER_BYTES = 256 * 1024
#: ...this many seconds later (the memory is freed when the objects using it go).
TRIM_DELAY = 0.5

# mallopt parameter numbers from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: parameter name -> (mallopt number, value, the environment variable that overrides it)
_POLICY = {
    "mmap_threshold": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
    "arena_max": (_M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
}


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None  # musl, macOS, Windows: their allocators have no such knobs here
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def apply_allocation_policy(environ: Mapping[str, str] | None = None) -> dict[str, int | str]:
    """Apply the policy (see the module docstring). Returns what was done per
    parameter: the value set, ``"env"`` (left to the operator's variable),
    ``"failed"`` or, off glibc, nothing at all (an empty dict)."""
    env = os.environ if environ is None else environ
    libc = _glibc()
    if libc is None:
        return {}
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: dict[str, int | str] = {}
    for name, (param, value, variable) in _POLICY.items():
        if env.get(variable):
            done[name] = "env"
        elif mallopt(param, value) == 1:  # mallopt returns 1 on success
            done[name] = value
        else:
            done[name] = "failed"
            log.warning("could not set the allocator's %s", name)
    return done


class _Trim:
    """Process-wide (there is one allocator): bytes reported since the last trim."""

    released = 0
    scheduled: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop | None = None  # the loop ``scheduled`` is due on
    count = 0


def give_back(nbytes: int) -> None:
    """Report that about ``nbytes`` were used and are being released. Once
    :data:`TRIM_AFTER_BYTES` have been reported, the heap's free pages go back to
    the OS :data:`TRIM_DELAY` seconds later (glibc ``malloc_trim``; a no-op
    elsewhere). Without a running event loop the trim happens at once."""
    _Trim.released += nbytes
    if _Trim.released < TRIM_AFTER_BYTES:
        return
    if _glibc() is None:
        _Trim.released = 0
        return
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if _Trim.scheduled is not None:
        if _Trim.loop is loop and not _Trim.scheduled.cancelled():
            return  # coalesced into the trim already due
        _Trim.scheduled.cancel()  # due on a loop that has ended: it never runs
        _Trim.scheduled = None
    if loop is None:
        _trim()
        return
    _Trim.scheduled = loop.call_later(TRIM_DELAY, _trim)
    _Trim.loop = loop


def _trim() -> None:
    _Trim.scheduled = None
    _Trim.released = 0
    _Trim.count += 1
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def trims() -> int:
    """How many times free heap memory was given back so far (for tests and logs)."""
    return _Trim.count


def freeze_startup_objects() -> int:
    """Collect once, then keep every object alive now out of all later
    collections (``gc.freeze``; see the module docstring). Call it once the
    server has started, before it serves. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
