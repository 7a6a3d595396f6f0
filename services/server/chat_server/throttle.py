"""
chat_server.throttle
~~~~~~~~~~~~~~~~~~~~

Throttling of failed logins, built so that it cannot be turned against an
account's owner (OWASP Authentication Cheat Sheet: account lockout must not
become a denial of service). docs/SECURITY.md states the policy for operators.

Three failure counters, each with exponential backoff (after ``threshold``
failures within ``window``, the n-th further failure makes the next attempt
wait ``base_delay * 2**n`` seconds, at most ``max_delay``):

* **per account and address**, strict (3 failures, then 1 s, 2 s ... 60 s):
  someone guessing one account from one address is slowed down at once, and
  only there: the same account from another address is not affected.
* **per address**, across accounts (10 failures): password spraying, one
  address trying many accounts. Many people can share an address (NAT), hence
  the higher threshold.
* **per account**, loose, across addresses (10 failures, counted only once
  they come from at least 3 addresses): a guessing attack spread over many
  addresses is still slowed down for the account as a whole, while one address
  alone, however fast it guesses, can never trigger it. An address from which
  the account's owner logged in successfully in the last 30 days (kept in
  memory) is exempt from this counter: the owner's usual address keeps working
  even during a distributed attack; only a new address has to wait then.

Addresses are keyed by :func:`chat_server.admission.client_key` (IPv6 by /64),
like the connection limits. An attempt without an address (tests, internal
callers) is throttled per account and as one anonymous source.

The tables are bounded (``max_entries``, least recently failed evicted first);
all state is in memory and starts empty at each start. Replicas on one
PostgreSQL apply the same policies to counters they share
(:class:`chat_server.coordination.PostgresLoginThrottle`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .admission import client_key

__all__ = [
    "DEFAULT_ACCOUNT_POLICY",
    "DEFAULT_ADDRESS_POLICY",
    "DEFAULT_PAIR_POLICY",
    "AccountPolicy",
    "FailureThrottle",
    "LoginThrottle",
    "ThrottlePolicy",
]

Address = str | tuple[Any, ...] | None


@dataclass(frozen=True)
class ThrottlePolicy:
    """``threshold`` failures within ``window`` seconds start the backoff; the
    n-th failure beyond that waits ``base_delay * 2**n`` (capped at
    ``max_delay``) before another attempt is heard. ``max_entries`` bounds memory."""

    threshold: int = 3
    window: float = 15 * 60
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_entries: int = 100_000

    def delay(self, count: int) -> float:
        """Seconds the next attempt waits after ``count`` failures (within the window)."""
        if count < self.threshold:
            return 0.0
        # Exponent capped so huge counts cannot overflow a float.
        return min(self.max_delay, self.base_delay * 2 ** min(count - self.threshold, 64))


@dataclass(frozen=True)
class AccountPolicy(ThrottlePolicy):
    """The loose per-account policy: failures count only once they have come
    from ``min_addresses`` distinct addresses; addresses the account logged in
    from within ``trust_for`` seconds (at most ``trusted_per_account`` each) are
    exempt."""

    threshold: int = 10
    min_addresses: int = 3
    trust_for: float = 30 * 24 * 3600
    trusted_per_account: int = 4


#: One account from one address: strict.
DEFAULT_PAIR_POLICY = ThrottlePolicy()
#: One address across accounts (spraying); tolerant of NAT.
DEFAULT_ADDRESS_POLICY = ThrottlePolicy(threshold=10)
#: One account across addresses: loose.
DEFAULT_ACCOUNT_POLICY = AccountPolicy()


@dataclass
class _Failures:
    count: int
    last: float
    #: Distinct sources seen (only kept by the per-account counter), capped.
    sources: set[Hashable] | None = None


#: How many distinct sources a per-account counter remembers (enough to know
#: that ``min_addresses`` is reached).
_MAX_SOURCES = 16


class FailureThrottle:
    """Failure counters keyed by anything hashable, with exponential backoff."""

    def __init__(self, policy: ThrottlePolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _delay(self, count: int) -> float:
        return self.policy.delay(count)

    def _live(self, key: Hashable) -> _Failures | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.last > self.policy.window:
            del self._entries[key]
            return None
        return entry

    def remaining(self, key: Hashable, *, min_sources: int = 0) -> float:
        """Seconds until ``key`` may try again (0.0: not throttled). With
        ``min_sources``, only once failures came from that many sources."""
        entry = self._live(key)
        if entry is None or len(entry.sources or ()) < min_sources:
            return 0.0
        return max(0.0, entry.last + self._delay(entry.count) - self._clock())

    def record_failure(self, key: Hashable, source: Hashable = None) -> None:
        now = self._clock()
        entry = self._entries.pop(key, None)
        if entry is None or now - entry.last > self.policy.window:
            entry = _Failures(0, now)
        entry.count += 1
        entry.last = now
        if source is not None:
            if entry.sources is None:
                entry.sources = set()
            if len(entry.sources) < _MAX_SOURCES:
                entry.sources.add(source)
        self._entries[key] = entry  # re-inserted: most recently used at the end
        self._prune(now)

    def reset(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def _prune(self, now: float) -> None:
        # Entries are ordered by last failure, so expired ones sit at the front.
        while self._entries:
            oldest_key, oldest = next(iter(self._entries.items()))
            if now - oldest.last > self.policy.window:
                del self._entries[oldest_key]
            else:
                break
        # A flood of distinct keys: forget the oldest. (An attacker could evict a
        # victim's counter this way, but only by failing from many addresses or
        # under many names, each of which is then throttled on its own.)
        while len(self._entries) > self.policy.max_entries:
            self._entries.popitem(last=False)


class LoginThrottle:
    """The three counters and the trusted addresses (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        pair_policy: ThrottlePolicy = DEFAULT_PAIR_POLICY,
        address_policy: ThrottlePolicy = DEFAULT_ADDRESS_POLICY,
        account_policy: AccountPolicy = DEFAULT_ACCOUNT_POLICY,
    ) -> None:
        self._clock = clock
        self.account_policy = account_policy
        self.pairs = FailureThrottle(pair_policy, clock)
        self.addresses = FailureThrottle(address_policy, clock)
        self.accounts = FailureThrottle(account_policy, clock)
        #: account -> {address key: last successful login}, least recent first
        self._trusted: OrderedDict[str, dict[str | None, float]] = OrderedDict()

    def wait(self, user: str, address: Address) -> float:
        """Seconds before ``user`` may try again from ``address`` (0.0: now)."""
        key = client_key(address)
        wait = self.pairs.remaining((user, key))
        if key is not None:
            wait = max(wait, self.addresses.remaining(key))
        if not self.trusted(user, key):
            wait = max(wait, self.accounts.remaining(
                user, min_sources=self.account_policy.min_addresses))
        return wait

    def failed(self, user: str, address: Address) -> None:
        key = client_key(address)
        self.pairs.record_failure((user, key))
        if key is not None:
            self.addresses.record_failure(key)
        self.accounts.record_failure(user, source=key)

    def failed_no_account(self, address: Address) -> None:
        """A failure under a name no account can have: it counts against the
        address only, so junk names take no places in the other tables."""
        key = client_key(address)
        if key is not None:
            self.addresses.record_failure(key)

    def succeeded(self, user: str, address: Address) -> None:
        """A successful login: this account and address start afresh, and the
        address becomes trusted for the account. (The other counters stay: an
        attack elsewhere goes on being slowed down.)"""
        key = client_key(address)
        self.pairs.reset((user, key))
        p = self.account_policy
        trusted = self._trusted.pop(user, {})
        trusted.pop(key, None)
        trusted[key] = self._clock()
        while len(trusted) > p.trusted_per_account:
            del trusted[next(iter(trusted))]
        self._trusted[user] = trusted
        while len(self._trusted) > p.max_entries:
            self._trusted.popitem(last=False)

    @property
    def trusted_accounts(self) -> int:
        """Accounts with a trusted address held (at most ``max_entries`` of the
        account policy)."""
        return len(self._trusted)

    def trusted(self, user: str, key: str | None) -> bool:
        """``user`` logged in successfully from the address ``key`` recently."""
        since = self._trusted.get(user, {}).get(key)
        return since is not None and self._clock() - since <= self.account_policy.trust_for
