"""chat_server.memory: the allocation policy the server applies to itself."""

from __future__ import annotations

import asyncio
import platform

import pytest
from chat_server import memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


@glibc
def test_policy_is_applied_on_glibc() -> None:
    assert memory.apply_allocation_policy({}) == {
        "mmap_threshold": memory.MMAP_THRESHOLD, "arena_max": memory.ARENA_MAX}


@glibc
def test_an_operators_variable_wins() -> None:
    done = memory.apply_allocation_policy({"MALLOC_ARENA_MAX": "4"})
    assert done == {"mmap_threshold": memory.MMAP_THRESHOLD, "arena_max": "env"}


@pytest.mark.skipif(platform.libc_ver()[0] == "glibc", reason="the no-op path")
def test_nothing_is_done_off_glibc() -> None:
    assert memory.apply_allocation_policy({}) == {}


@glibc
def test_memory_is_given_back_once_enough_was_released() -> None:
    # Start from nothing reported (other tests release memory too): outside
    # an event loop, enough reported trims at once and starts the count over.
    memory.give_back(memory.TRIM_AFTER_BYTES)

    async def main() -> tuple[int, int, int]:
        before = memory.trims()
        memory.give_back(memory.TRIM_AFTER_BYTES // 2)
        await asyncio.sleep(memory.TRIM_DELAY + 0.3)
        small = memory.trims()
        memory.give_back(memory.TRIM_AFTER_BYTES)  # now past the threshold: one trim
        memory.give_back(memory.TRIM_AFTER_BYTES)  # coalesced into the same one
        await asyncio.sleep(memory.TRIM_DELAY + 0.3)
        return before, small, memory.trims()

    before, small, after = asyncio.run(main())
    assert small == before
    assert after == before + 1


def test_startup_objects_are_frozen_out_of_later_collections() -> None:
    import gc

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    before_start = Node()
    gc.unfreeze()
    try:
        frozen = memory.freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000  # the interpreter's, pytest's, ours
        later = Node()
        tracked = {id(o) for o in gc.get_objects()}
        # What existed is out of the collector's way; what comes later is not.
        assert id(before_start) not in tracked and id(later) in tracked
    finally:
        gc.unfreeze()
