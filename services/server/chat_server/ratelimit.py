"""Per-user message rate limit.

Algorithm: a sliding window log. For each key we keep the times of the
messages allowed during the last ``window`` seconds (60 by default). A new
message is allowed when fewer than ``per_minute`` of them are in the window.
So the promise is exact and easy to explain to a user: never more than
``per_minute`` messages in any 60 seconds. (A token bucket would allow the
same long-run rate but a burst of ``per_minute`` right after a full minute of
steady use, which is harder to explain.) The cost is one float per allowed
message per key, bounded by ``per_minute``.

Refused messages are not recorded, so a client that retries too early does
not push its own wait further out.

Memory stays bounded: keys whose newest message left the window are
forgotten, in a sweep done at most every ``window`` seconds, so only the
keys active in the last two windows are held.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``check(key)`` -> 0.0 if allowed (and recorded), else seconds to wait."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        window: float = 60.0,
    ) -> None:
        if per_minute < 0:
            raise ValueError(f"per_minute must be >= 0, got {per_minute}")
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self._limit = per_minute
        self._clock = clock
        self._window = window
        self._log: dict[str, deque[float]] = {}
        self._next_sweep = clock() + window

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def __len__(self) -> int:
        """Number of keys currently remembered (for tests and metrics)."""
        return len(self._log)

    @property
    def held(self) -> int:
        """Timestamps held over all keys: the limiter's memory, which is at most
        ``per_minute`` per remembered key (for tests and metrics)."""
        return sum(len(times) for times in self._log.values())

    def check(self, key: str) -> float:
        if self._limit == 0:
            return 0.0
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        horizon = now - self._window
        times = self._log.get(key)
        if times is None:
            times = self._log[key] = deque()
        # A message sent at t counts until t + window (exclusive).
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < self._limit:
            times.append(now)
            return 0.0
        # Positive: times[0] > horizon, i.e. times[0] + window > now.
        return times[0] + self._window - now

    def _sweep(self, now: float) -> None:
        horizon = now - self._window
        idle = [key for key, times in self._log.items() if not times or times[-1] <= horizon]
        for key in idle:
            del self._log[key]
        self._next_sweep = now + self._window
