"""RateLimiter: sliding window per key, driven by a fake clock."""

from __future__ import annotations

import pytest
from chat_server.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_allows_up_to_limit_then_reports_wait() -> None:
    clock = FakeClock()
    rl = RateLimiter(3, clock)
    assert [rl.check("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 10
    assert rl.check("alice") == pytest.approx(50.0)
    # Refusals are not recorded: asking again later gives a shorter wait.
    clock.now += 20
    assert rl.check("alice") == pytest.approx(30.0)


def test_window_slides_one_message_at_a_time() -> None:
    clock = FakeClock()
    rl = RateLimiter(2, clock)
    assert rl.check("a") == 0.0  # t=1000
    clock.now = 1030
    assert rl.check("a") == 0.0  # t=1030
    clock.now = 1059.5
    assert rl.check("a") == pytest.approx(0.5)
    clock.now = 1060  # the t=1000 message has left the window exactly now
    assert rl.check("a") == 0.0
    assert rl.check("a") == pytest.approx(30.0)  # the t=1030 one is still in


def test_keys_are_independent() -> None:
    clock = FakeClock()
    rl = RateLimiter(1, clock)
    assert rl.check("alice") == 0.0
    assert rl.check("alice") > 0
    assert rl.check("bob") == 0.0


def test_zero_disables() -> None:
    rl = RateLimiter(0, FakeClock())
    assert not rl.enabled
    assert all(rl.check("x") == 0.0 for _ in range(10_000))
    assert len(rl) == 0


def test_rejects_negative_limit() -> None:
    with pytest.raises(ValueError):
        RateLimiter(-1, FakeClock())


def test_idle_keys_are_pruned() -> None:
    clock = FakeClock()
    rl = RateLimiter(5, clock)
    for i in range(1000):
        rl.check(f"user{i}")
    assert len(rl) == 1000
    clock.now += 61
    rl.check("active")
    clock.now += 61
    rl.check("active")
    assert len(rl) == 1  # only the key used in the last window is kept
    # A pruned key starts fresh.
    assert rl.check("user1") == 0.0


def test_memory_per_key_is_bounded_by_limit() -> None:
    clock = FakeClock()
    rl = RateLimiter(4, clock)
    for _ in range(1000):
        rl.check("spammer")
        clock.now += 0.01
    assert len(rl) == 1
    assert rl.held == 4
