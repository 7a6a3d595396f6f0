"""
chat_server.accounts
~~~~~~~~~~~~~~~~~~~~

Account changes made outside this process reach its live sessions.
``chat-server users disable``, ``users remove`` and ``users passwd`` run in
another process, or on another replica of the same PostgreSQL database, so the
server looks for itself: every ``CHAT_ACCOUNT_CHECK_INTERVAL`` seconds
:class:`AccountWatch` asks the store for the password generation of the users
logged in here (:meth:`~chat_server.store.Store.password_generations`: one
indexed lookup per distinct logged-in user, batched, so one query for up to
500 users; nothing at all while nobody is logged in) and has the sessions
ended whose account is disabled or gone, or that logged in under an older
password than the current one (a reset password after a compromise must not
leave the intruder's session open). Generations only count up, so a session
that logs in while the tick runs is never taken for an old one. The same
tick deletes the first start's password file once that password no longer
works (:class:`~chat_server.bootstrap.InitialPasswordCheck`).

A store that fails is logged once per outage and tried again next tick; the
sessions go on meanwhile (logins are checked by the store anyway). Any other
failure of a tick is logged with its traceback; the next tick runs all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from .bootstrap import InitialPasswordCheck
from .stop import StopReason
from .store import Store, StoreError

__all__ = ["ENDS", "AccountWatch", "Login"]

log = logging.getLogger("chat_server.accounts")

#: A live session's user and the password generation it logged in under.
Login = tuple[str, int]


#: Why a session's login no longer holds: the account was disabled or removed,
#: or its password changed.
ENDS = (StopReason.ACCOUNT_ENDED, StopReason.PASSWORD_CHANGED)


class AccountWatch:
    """See the module docstring.

    ``logged_in()`` gives the :data:`Login` of every live session here
    (duplicates allowed); ``end(logins, why)`` ends every session logged in as
    one of those and returns how many it ended."""

    def __init__(
        self,
        store: Store,
        interval: float,
        *,
        logged_in: Callable[[], Iterable[Login]],
        end: Callable[[set[Login], StopReason], Awaitable[int]],
        initial_password: InitialPasswordCheck | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.store = store
        self.interval = interval
        self._logged_in = logged_in
        self._end = end
        self._initial_password = initial_password
        self._failing = False

    async def tick(self) -> set[str]:
        """One check; the users some of whose sessions were ended. Raises
        StoreError."""
        users = {user for user, _ in self._logged_in()}
        ended: set[str] = set()
        if users:
            current = await self.store.password_generations(users)
            # Read again: sessions may have ended or begun meanwhile. One that
            # began has a generation at least the one just read.
            stale = {(user, generation) for user, generation in self._logged_in()
                     if user in users
                     and (user not in current or generation < current[user])}
            for why in ENDS:
                logins = {(user, generation) for user, generation in stale
                          if (user in current) is (why is StopReason.PASSWORD_CHANGED)}
                if not logins:
                    continue
                count = await self._end(logins, why)
                names = {user for user, _ in logins}
                for user in sorted(names):
                    log.info("sessions of %s ended: %s", user, why.value,
                             extra={"event": "account_ended", "user": user})
                log.debug("%d session(s) ended", count, extra={"event": "account_ended"})
                ended |= names
        if self._initial_password is not None:
            await self._initial_password.check(self.store)
        return ended

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except StoreError as exc:
                if not self._failing:
                    log.warning("cannot check the accounts of live sessions: %s", exc,
                                extra={"event": "store_error"})
                self._failing = True
            except OSError as exc:  # the initial-password file
                log.warning("account check: %s", exc, extra={"event": "account_check"})
            except Exception:  # a bug must not end the watch (nor surface at shutdown)
                log.exception("account check failed", extra={"event": "account_check"})
            else:
                if self._failing:
                    log.info("account checks work again", extra={"event": "store_ok"})
                self._failing = False
