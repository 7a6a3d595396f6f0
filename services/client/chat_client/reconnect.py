"""
chat_client.reconnect
~~~~~~~~~~~~~~~~~~~~~

Getting a lost connection back (docs/PROTOCOL.md §15), for the interactive
client: a server restart, a replica that went away behind a balancer, a
network that dropped.

* **Backoff with jitter.** Attempt *k* waits ``min(cap, base * 2**(k-1))``
  seconds, scaled by a random factor in [0.5, 1) so that the clients of a
  restarted server do not all come back in the same instant; after
  ``attempts`` failures it gives up with one clear line (exit 6).
* **The session token, never the password.** The password is used for the
  first login only and is not kept; every login (the first and each reconnect)
  brings a fresh token from the server, and a reconnect logs in with the newest
  one. When the server no longer accepts it (expired, the password was changed,
  the user disabled), the user is asked for the password on a terminal
  (``ask_password``); without one, the reconnect fails with exit 3.
* **The same trust.** ``dial`` opens the connection exactly as the first one
  was opened (host, port, TLS options and known hosts); a certificate that
  changed meanwhile is refused (``TrustError``, exit 7), never retried.

Nothing here resends a message: the interactive session sends one again only
when the server did not take it (:mod:`.interactive`); what to do with an
answer that was cut is the user's decision (``/retry``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .connection import DEFAULT_HANDSHAKE_TIMEOUT, ChatConnection
from .errors import ConnectionLost, ServerError, TokenRefused

__all__ = ["DEFAULT_ATTEMPTS", "Backoff", "Reconnector"]

#: Reconnect attempts before giving up (``--reconnect-attempts``, ``CHAT_RECONNECT_ATTEMPTS``).
DEFAULT_ATTEMPTS = 10


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter; with the defaults, 10 attempts span
    76 to 152 seconds in all."""

    attempts: int = DEFAULT_ATTEMPTS
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.base <= 0 or self.cap < self.base:
            raise ValueError("attempts >= 0, 0 < base <= cap")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt - 1, 62))
        return ceiling * (0.5 + 0.5 * rand())


class Reconnector:
    """Opens a new, logged-in connection for a session whose connection was lost."""

    def __init__(
        self,
        dial: Callable[[], ChatConnection],
        user: str,
        token: str | None,
        *,
        backoff: Backoff | None = None,
        notify: Callable[[str], None] = lambda text: None,
        ask_password: Callable[[str], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        self._dial = dial
        self.user = user
        self._token = token
        self.backoff = backoff or Backoff()
        self._notify = notify
        self._ask_password = ask_password
        self._sleep = sleep
        self._timeout = timeout

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def enabled(self) -> bool:
        """Whether a lost connection can come back at all: attempts are allowed,
        and there is a token or a terminal to ask for the password on."""
        return self.backoff.attempts > 0 and (self.has_token or self._ask_password is not None)

    def reconnect(self, reason: str) -> ChatConnection:
        """A new connection, logged in as the same user. Raises
        :class:`ConnectionLost` after the last attempt, :class:`TokenRefused` /
        ``AuthFailed`` when the server refuses us, ``TrustError`` when its
        certificate is not trusted any more."""
        attempts = self.backoff.attempts
        last = reason
        for attempt in range(1, attempts + 1):
            delay = self.backoff.delay(attempt)
            self._notify(f"connection lost; reconnecting (attempt {attempt}/{attempts}) "
                         f"in {delay:.1f} s: {last}")
            self._sleep(delay)
            try:
                return self._login_again()
            except (ConnectionLost, ServerError) as exc:
                # Unreachable, reset, restarting, at its connection limit: try again.
                last = str(exc)
        raise ConnectionLost(f"connection lost; gave up after {attempts} reconnect attempts "
                             f"(last: {last})")

    def _login_again(self) -> ChatConnection:
        if self._token is not None:
            conn = self._open()
            try:
                conn.login_with_token(self.user, self._token, self._timeout)
            except TokenRefused:
                conn.close(bye=False)
                self._token = None
                if self._ask_password is None:
                    raise
                self._notify("the server no longer accepts this session's token (it expired, "
                             "or the password was changed); log in again")
            except BaseException:
                conn.close(bye=False)
                raise
            else:
                return self._logged_in(conn)
        if self._ask_password is None:
            raise TokenRefused("cannot log in again: the server issued no session token, "
                               "and there is no terminal to ask for the password")
        password = self._ask_password(self.user)
        conn = self._open()
        try:
            conn.login(self.user, password, self._timeout)
        except BaseException:
            conn.close(bye=False)
            raise
        finally:
            del password  # used once, not kept
        return self._logged_in(conn)

    def _open(self) -> ChatConnection:
        conn = self._dial()
        try:
            conn.handshake(self._timeout)
        except BaseException:
            conn.close(bye=False)
            raise
        return conn

    def _logged_in(self, conn: ChatConnection) -> ChatConnection:
        # Every login brings a fresh token; if none came (the server's store
        # failed), keep the one we have: after a password login it stays good
        # until it expires (a token login has used it up: the next reconnect
        # is told so and asks for the password).
        if conn.session_token is not None:
            self._token = conn.session_token
        return conn

    def remember(self, conn: ChatConnection) -> None:
        """Take the token of a connection logged in elsewhere (the first login)."""
        self._logged_in(conn)
