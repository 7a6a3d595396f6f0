"""FairScheduler: fairness order, parallelism bound, positions, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import random

import pytest
from chat_server.scheduler import FairScheduler, SchedulerClosed
from hypothesis import given, settings
from hypothesis import strategies as st

from ._harness import Probe, Req, run, settle


async def release_all_in_grant_order(probe: Probe) -> None:
    while probe.holding:
        probe.holding[0].release.set()
        await settle()


def test_rejects_bad_max_parallel() -> None:
    with pytest.raises(ValueError):
        FairScheduler(0)


def test_burst_cannot_starve_other_users() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(2), Probe(2)
        burst = [Req(sched, probe, "A") for _ in range(50)]
        await settle()
        others = [Req(sched, probe, f"U{i}") for i in range(10)]
        await settle()
        assert sched.in_flight == 2
        assert sched.waiting == 58
        assert sum(r.state == "waiting" for r in burst) == 48
        assert all(r.state == "waiting" for r in others)

        await release_all_in_grant_order(probe)

        order = probe.order
        assert len(order) == 60
        fifth_of_a = order.index(burst[4])
        for other in others:
            assert order.index(other) < fifth_of_a
        # The exact round-robin: A's 3rd is alone in the rotation when the first
        # slot frees, then every other user, then A again.
        assert order[:14] == [burst[0], burst[1], burst[2], *others, burst[3]]
        # A user's own requests are served in the order they were made.
        assert [r for r in order if r.user == "A"] == burst
        assert probe.peak == 2
        assert sched.in_flight == 0 and sched.waiting == 0

    run(main())


def test_round_robin_interleaves_bursts() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        reqs = {u: [Req(sched, probe, u) for _ in range(4)] for u in "ABC"}
        await settle()
        await release_all_in_grant_order(probe)
        a, b, c = reqs["A"], reqs["B"], reqs["C"]
        expected = [a[0], a[1], b[0], c[0], a[2], b[1], c[1], a[3], b[2], c[2], b[3], c[3]]
        assert probe.order == expected

    run(main())


def test_single_request_per_user_is_fifo_with_decreasing_positions() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        waiters = [Req(sched, probe, f"U{i}") for i in range(5)]
        await settle()
        assert holder.positions == []  # a free slot: no position notice
        assert [w.positions for w in waiters] == [[1], [2], [3], [4], [5]]
        await release_all_in_grant_order(probe)
        assert probe.order == [holder, *waiters]
        assert waiters[4].positions == [5, 4, 3, 2, 1]
        for w in waiters:
            assert w.positions == sorted(w.positions, reverse=True)
            assert len(set(w.positions)) == len(w.positions)

    run(main())


def test_max_parallel_never_exceeded_and_fully_used() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(3), Probe(3)
        reqs = [Req(sched, probe, f"u{i % 4}") for i in range(20)]
        await settle()
        assert probe.active == 3 == sched.in_flight
        rng = random.Random(7)
        while probe.holding:
            rng.choice(probe.holding).release.set()
            await settle()
            assert sched.in_flight == probe.active
            if sched.waiting:
                assert sched.in_flight == 3
        assert probe.peak == 3
        assert all(r.state == "done" for r in reqs)

    run(main())


def test_reported_positions_predict_grant_order() -> None:
    async def main() -> None:
        rng = random.Random(1234)
        sched, probe = FairScheduler(2), Probe(2)
        reqs = []
        for _ in range(40):
            reqs.append(Req(sched, probe, rng.choice("ABCDE"), async_callback=rng.random() < 0.5))
            if rng.random() < 0.3:
                await settle()
        await settle()
        waiting = [r for r in reqs if r.state == "waiting"]
        assert len(waiting) == sched.waiting == 38
        snapshot = {r: r.positions[-1] for r in waiting}
        assert sorted(snapshot.values()) == list(range(1, 39))

        await release_all_in_grant_order(probe)
        granted_after = [r for r in probe.order if r in snapshot]
        assert granted_after == sorted(waiting, key=snapshot.__getitem__)
        # With no new arrivals, positions only go down, one grant at a time.
        for r in waiting:
            tail = r.positions[r.positions.index(snapshot[r]) :]
            assert tail == list(range(snapshot[r], 0, -1))

    run(main())


def test_newcomer_ahead_in_rotation_raises_a_burst_position() -> None:
    # Documented behaviour: fairness lets a new user go before a burst's later
    # requests, so those see their number go up.
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        Req(sched, probe, "H")
        await settle()
        a = [Req(sched, probe, "A") for _ in range(3)]
        await settle()
        assert [r.positions for r in a] == [[1], [2], [3]]
        Req(sched, probe, "B")
        await settle()
        assert [r.positions[-1] for r in a] == [1, 3, 4]

    run(main())


def test_cancelled_waiter_leaves_queue_and_others_move_up() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        w = [Req(sched, probe, f"U{i}") for i in range(4)]
        await settle()
        w[1].task.cancel()
        await settle()
        assert w[1].state == "cancelled"
        assert sched.waiting == 3
        assert [w[0].positions, w[2].positions, w[3].positions] == [[1], [3, 2], [4, 3]]
        await release_all_in_grant_order(probe)
        assert probe.order == [holder, w[0], w[2], w[3]]
        assert sched.in_flight == 0

    run(main())


def test_cancelled_holder_releases_its_slot() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        waiter = Req(sched, probe, "W")
        await settle()
        holder.task.cancel()
        await settle()
        assert holder.state == "cancelled"
        assert waiter.state == "holding"
        assert sched.in_flight == 1 and sched.waiting == 0
        waiter.release.set()
        await settle()
        assert sched.in_flight == 0

    run(main())


def test_waiter_cancelled_after_grant_before_resuming_passes_slot_on() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        granted_then_cancelled = Req(sched, probe, "X")
        nxt = Req(sched, probe, "Y")
        await settle()
        # Same tick: the release grants X's slot, then X is cancelled before it runs.
        holder.release.set()
        await asyncio.sleep(0)  # holder task resumes and leaves: X is granted
        assert sched.waiting == 1 and sched.in_flight == 1
        granted_then_cancelled.task.cancel()
        await settle()
        assert granted_then_cancelled.state == "cancelled"
        assert granted_then_cancelled not in probe.order
        assert nxt.state == "holding"
        assert sched.in_flight == 1
        nxt.release.set()
        await settle()
        assert sched.in_flight == 0 and sched.waiting == 0

    run(main())


def test_failing_position_callback_removes_the_waiter() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()

        fail = asyncio.Event()

        async def broken(n: int) -> None:
            await fail.wait()  # the notice write fails later, while queued
            raise ConnectionResetError("client went away")

        async def doomed() -> None:
            async with sched.slot("D", on_position=broken):
                raise AssertionError("must not get a slot")

        task = asyncio.create_task(doomed())
        after = Req(sched, probe, "A")
        await settle()
        assert after.positions == [2]
        fail.set()
        await settle()
        with pytest.raises(ConnectionResetError):
            await task
        assert sched.waiting == 1
        assert after.positions == [2, 1]
        await release_all_in_grant_order(probe)
        assert probe.order == [holder, after]

    run(main())


def test_async_callback_still_running_when_granted() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        slow = Req(sched, probe, "S", async_callback=True, callback_steps=20)
        await asyncio.sleep(0)  # slow is now inside its position callback
        holder.release.set()
        await settle(100)
        assert slow.state == "holding"
        assert slow.positions == [1]
        slow.release.set()
        await settle()
        assert sched.in_flight == 0

    run(main())


def test_stop_accepting_serves_queue_then_drains() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        queued = Req(sched, probe, "Q")
        await settle()
        sched.stop_accepting()
        assert not sched.accepting
        with pytest.raises(SchedulerClosed):
            async with sched.slot("late"):
                raise AssertionError("unreachable")
        drain = asyncio.create_task(sched.drain(30))
        await settle()
        assert not drain.done()
        holder.release.set()
        await settle()
        assert queued.state == "holding"
        assert not drain.done()
        queued.release.set()
        await settle()
        assert drain.done() and drain.result() is True
        assert sched.in_flight == 0

    run(main())


def test_drain_times_out_while_a_slot_is_held() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(2), Probe(2)
        assert await sched.drain(0) is True  # idle: immediately
        holder = Req(sched, probe, "H")
        await settle()
        assert await sched.drain(0.01) is False
        holder.release.set()
        assert await sched.drain(30) is True

    run(main())


def test_close_rejects_queued_requests_but_not_holders() -> None:
    async def main() -> None:
        sched, probe = FairScheduler(1), Probe(1)
        holder = Req(sched, probe, "H")
        await settle()
        queued = [Req(sched, probe, "Q"), Req(sched, probe, "R")]
        await settle()
        sched.close()
        await settle()
        assert [q.state for q in queued] == ["closed", "closed"]
        assert holder.state == "holding"
        assert sched.waiting == 0 and sched.in_flight == 1
        holder.release.set()
        assert await sched.drain(30) is True
        with pytest.raises(SchedulerClosed):
            async with sched.slot("H"):
                pass

    run(main())


# -- random interleavings of arrivals, releases and cancellations -------------

OPS = ("spawn", "spawn", "release", "cancel_waiter", "cancel_holder", "cancel_any", "settle")


def check_invariants(sched: FairScheduler, probe: Probe, reqs: list[Req]) -> None:
    waiting = [r for r in reqs if r.state == "waiting"]
    assert sched.in_flight == probe.active == len(probe.holding)
    assert sched.in_flight <= sched.max_parallel
    assert sched.waiting == len(waiting)
    if waiting:  # work conserving: nobody waits while a slot is free
        assert sched.in_flight == sched.max_parallel
    # The last reported positions are exactly 1..waiting.
    assert sorted(r.positions[-1] for r in waiting) == list(range(1, len(waiting) + 1))


async def run_ops(ops: list[tuple[str, int]], max_parallel: int) -> None:
    sched, probe = FairScheduler(max_parallel), Probe(max_parallel)
    reqs: list[Req] = []
    for op, pick in ops:
        live = [r for r in reqs if not r.task.done()]
        if op == "spawn":
            reqs.append(Req(sched, probe, f"u{pick % 4}", async_callback=pick % 3 == 0))
        elif op == "release" and probe.holding:
            probe.holding[pick % len(probe.holding)].release.set()
        elif op == "cancel_waiter":
            waiting = [r for r in live if r.state == "waiting"]
            if waiting:
                waiting[pick % len(waiting)].task.cancel()
        elif op == "cancel_holder" and probe.holding:
            probe.holding[pick % len(probe.holding)].task.cancel()
        elif op == "cancel_any" and live:
            # May hit a task that was granted but has not resumed yet.
            live[pick % len(live)].task.cancel()
        elif op == "settle":
            await settle()
            check_invariants(sched, probe, reqs)
        if pick % 2:
            await asyncio.sleep(0)  # vary how far the loop gets between ops
    await settle()
    check_invariants(sched, probe, reqs)
    for r in reqs:
        r.task.cancel()
    await asyncio.gather(*(r.task for r in reqs), return_exceptions=True)
    assert sched.in_flight == 0 and sched.waiting == 0
    assert probe.active == 0
    assert await sched.drain(0) is True


@pytest.mark.parametrize("seed", range(20))
def test_random_stress_no_slot_leaks(seed: int) -> None:
    rng = random.Random(seed)
    ops = [(rng.choice(OPS), rng.randrange(1000)) for _ in range(300)]
    run(run_ops(ops, max_parallel=rng.choice([1, 2, 3])))


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 999)), max_size=60),
    max_parallel=st.integers(1, 3),
)
def test_hypothesis_no_slot_leaks(ops: list[tuple[str, int]], max_parallel: int) -> None:
    run(run_ops(ops, max_parallel))
