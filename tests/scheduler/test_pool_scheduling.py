"""FairScheduler over several resources (the model backends): least-loaded
grants, models served, health changes, urgent retries, exclusions, positions."""

from __future__ import annotations

import random

import pytest
from chat_server.scheduler import FairScheduler, NoCapacity

from ._harness import Probe, Req, run, settle


def pool(**resources: tuple[int, set[str] | None]) -> FairScheduler:
    sched = FairScheduler()
    for name, (capacity, serves) in resources.items():
        sched.set_resource(name, capacity, serves=serves)
    return sched


async def release(*reqs: Req) -> None:
    for r in reqs:
        r.release.set()
    await settle()


def test_grants_go_to_the_least_loaded_resource_relative_to_capacity() -> None:
    async def main() -> None:
        sched, probe = pool(a=(4, None), b=(2, None)), Probe(6)
        got = []
        for i in range(6):
            r = Req(sched, probe, f"u{i}")
            await settle()
            got.append(r.resource)
        # a 0/4 ~ b 0/2 (tie: a first), then b 0 < a .25, a .25 < b .5,
        # a .5 = b .5 (b granted less recently), a .5 < b 1, a .75 < b 1.
        assert got == ["a", "b", "a", "b", "a", "a"]
        assert sched.in_flight_on("a") == 4 and sched.in_flight_on("b") == 2

    run(main())


def test_ties_rotate_so_equal_backends_share_the_load() -> None:
    async def main() -> None:
        sched, probe = pool(a=(2, None), b=(2, None)), Probe(4)
        seen = []
        for i in range(20):  # one at a time: every grant is a tie at 0
            r = Req(sched, probe, f"u{i}")
            await settle()
            seen.append(r.resource)
            await release(r)
        assert seen.count("a") == seen.count("b") == 10

    run(main())


def test_a_request_only_goes_to_resources_serving_its_model() -> None:
    async def main() -> None:
        sched = pool(big=(2, {"m1", "m2"}), small=(2, {"m1"}))
        probe = Probe(4)
        reqs = [Req(sched, probe, f"u{i}", model="m2") for i in range(3)]
        await settle()
        assert [r.resource for r in reqs[:2]] == ["big", "big"]
        assert reqs[2].state == "waiting" and reqs[2].positions == [1]
        # m1 is still served on "small" while m2 waits for "big".
        other = Req(sched, probe, "v", model="m1")
        await settle()
        assert other.resource == "small" and other.positions == []
        await release(reqs[0])
        assert reqs[2].resource == "big"
        assert sched.capacity("m1") == 4 and sched.capacity("m2") == 2
        assert sched.capacity("m3") == 0

    run(main())


def test_a_model_nobody_serves_is_refused_at_once() -> None:
    async def main() -> None:
        sched, probe = pool(a=(1, {"m1"})), Probe(1)
        with pytest.raises(NoCapacity):
            async with sched.slot("u", model="m2"):
                raise AssertionError("unreachable")
        r = Req(sched, probe, "u", model="m1", exclude=("a",))
        await settle()
        assert r.state == "no_capacity"
        assert sched.waiting == 0 and sched.in_flight == 0

    run(main())


def test_waiters_survive_losing_one_of_two_resources_and_are_served_by_the_other() -> None:
    async def main() -> None:
        sched, probe = pool(a=(1, None), b=(1, None)), Probe(2)
        ha, hb = Req(sched, probe, "A"), Req(sched, probe, "B")
        await settle()
        assert {ha.resource, hb.resource} == {"a", "b"}
        waiting = Req(sched, probe, "W")
        await settle()
        dead = ha.resource
        sched.set_resource(dead, 1, healthy=False)
        await settle()
        assert waiting.state == "waiting" and sched.max_parallel == 1
        await release(ha)  # the failed backend's holder leaves: no grant there
        assert waiting.state == "waiting"
        await release(hb)
        assert waiting.state == "holding" and waiting.resource != dead
        # And when it comes back, it is used again.
        sched.set_resource(dead, 1, healthy=True)
        late = Req(sched, probe, "L")
        await settle()
        assert late.resource == dead

    run(main())


def test_waiters_whose_last_resource_fails_are_told_at_once() -> None:
    async def main() -> None:
        sched = pool(a=(1, {"m1"}), b=(1, {"m2"}))
        probe = Probe(2)
        holders = [Req(sched, probe, "h1", model="m1"), Req(sched, probe, "h2", model="m2")]
        await settle()
        w1, w2 = Req(sched, probe, "w1", model="m1"), Req(sched, probe, "w2", model="m2")
        await settle()
        sched.set_resource("a", 1, serves={"m1"}, healthy=False)
        await settle()
        assert w1.state == "no_capacity" and w2.state == "waiting"
        assert sched.waiting == 1 and w2.positions[-1] == 1
        await release(*holders)
        assert w2.state == "holding" and sched.in_flight == 1

    run(main())


def test_urgent_retries_go_first_and_skip_excluded_resources() -> None:
    async def main() -> None:
        sched, probe = pool(a=(1, None), b=(1, None)), Probe(2)
        ha, hb = Req(sched, probe, "A"), Req(sched, probe, "B")
        await settle()
        queued = [Req(sched, probe, f"q{i}") for i in range(3)]
        await settle()
        retry = Req(sched, probe, "R", exclude=(ha.resource,), urgent=True)
        await settle()
        assert retry.positions == [1]
        assert [q.positions[-1] for q in queued] == [2, 3, 4]
        await release(ha)  # the excluded resource frees: the queue's first gets it
        assert queued[0].state == "holding" and retry.state == "waiting"
        await release(hb)
        assert retry.state == "holding" and retry.resource == hb.resource

    run(main())


def test_positions_count_only_requests_competing_for_the_same_backends() -> None:
    async def main() -> None:
        sched = pool(a=(1, {"m1"}), b=(1, {"m2"}))
        probe = Probe(2)
        Req(sched, probe, "h1", model="m1")
        Req(sched, probe, "h2", model="m2")
        await settle()
        w = [Req(sched, probe, f"u{i}", model="m1" if i % 2 == 0 else "m2") for i in range(6)]
        await settle()
        assert [r.positions[-1] for r in w] == [1, 1, 2, 2, 3, 3]

    run(main())


def test_a_burst_cannot_starve_others_across_the_pool() -> None:
    async def main() -> None:
        sched, probe = pool(a=(2, None), b=(1, None), c=(1, None)), Probe(4)
        burst = [Req(sched, probe, "A") for _ in range(40)]
        await settle()
        others = [Req(sched, probe, f"U{i}") for i in range(8)]
        await settle()
        while probe.holding:
            probe.holding[0].release.set()
            await settle()
        order = probe.order
        assert order[:4] == burst[:4]
        fifth_round = order.index(burst[6])
        assert all(order.index(o) < fifth_round for o in others)
        assert probe.peak == 4

    run(main())


@pytest.mark.parametrize("seed", range(15))
def test_random_health_flaps_never_leak_or_overfill(seed: int) -> None:
    async def main() -> None:
        rng = random.Random(seed)
        sched = pool(a=(2, {"m1", "m2"}), b=(1, {"m1"}), c=(2, {"m2"}))
        probe = Probe(5)
        reqs: list[Req] = []
        caps = {"a": (2, {"m1", "m2"}), "b": (1, {"m1"}), "c": (2, {"m2"})}
        healthy = dict.fromkeys("abc", True)
        for _ in range(200):
            op = rng.random()
            if op < 0.4:
                reqs.append(Req(sched, probe, f"u{rng.randrange(4)}",
                                model=rng.choice(["m1", "m2"]), urgent=rng.random() < 0.1))
            elif op < 0.7 and probe.holding:
                rng.choice(probe.holding).release.set()
            elif op < 0.8:
                name = rng.choice("abc")
                cap, serves = caps[name]
                healthy[name] = rng.random() < 0.7
                sched.set_resource(name, cap, serves=serves, healthy=healthy[name])
            elif op < 0.9:
                live = [r for r in reqs if not r.task.done()]
                if live:
                    rng.choice(live).task.cancel()
            await settle(rng.randrange(1, 5))
            for name in "abc":
                assert sched.in_flight_on(name) <= caps[name][0]
            if rng.random() < 0.7:
                continue
            await settle()  # quiet: every granted task has resumed
            for name in "abc":
                assert sched.in_flight_on(name) <= caps[name][0]
            waiting = [r for r in reqs if r.state == "waiting"]
            assert sched.waiting == len(waiting)
            assert sched.in_flight == len(probe.holding)
            # Work conserving: no request that is next for its user (requests of
            # one user are served in order) or urgent waits while a usable slot is free.
            heads = [r for r in waiting if r.urgent]
            heads += [next(r for r in waiting if r.user == u and not r.urgent)
                      for u in {r.user for r in waiting if not r.urgent}]
            for r in heads:
                assert not any(healthy[n] and r.model in caps[n][1]
                               and sched.in_flight_on(n) < caps[n][0] for n in "abc")
        for r in reqs:
            r.task.cancel()
        await settle()
        assert sched.in_flight == 0 and sched.waiting == 0
        assert await sched.drain(0)

    run(main())


def test_cancelling_a_blocked_request_lets_the_users_next_one_run() -> None:
    async def main() -> None:
        sched = pool(a=(1, {"m1"}), b=(1, {"m2"}))
        probe = Probe(2)
        Req(sched, probe, "h", model="m1")
        await settle()
        blocked = Req(sched, probe, "u", model="m1")
        behind = Req(sched, probe, "u", model="m2")  # "b" is free, but u's older request waits
        await settle()
        assert behind.state == "waiting"
        blocked.task.cancel()
        await settle()
        assert behind.state == "holding" and behind.resource == "b"

    run(main())
