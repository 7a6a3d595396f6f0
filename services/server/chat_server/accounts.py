"""
chat_server.accounts
~~~~~~~~~~~~~~~~~~~~

Account changes made outside this process reach its live sessions.
``chat-server users disable`` and ``users remove`` run in another process, or
on another replica of the same PostgreSQL database, so the server looks for
itself: every ``CHAT_ACCOUNT_CHECK_INTERVAL`` seconds :class:`AccountWatch`
asks the store which of the users logged in here are disabled or gone
(:meth:`~chat_server.store.Store.inactive_users`: one indexed lookup per
distinct logged-in user, batched, so one query for up to 500 users; nothing
at all while nobody is logged in) and has their sessions ended. The same
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
from .store import Store, StoreError

__all__ = ["AccountWatch"]

log = logging.getLogger("chat_server.accounts")


class AccountWatch:
    """See the module docstring.

    ``logged_in()`` names the users with a live session here (duplicates
    allowed); ``end(users)`` ends every session of those users and returns how
    many it ended."""

    def __init__(
        self,
        store: Store,
        interval: float,
        *,
        logged_in: Callable[[], Iterable[str]],
        end: Callable[[set[str]], Awaitable[int]],
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
        """One check; the users whose sessions were ended. Raises StoreError."""
        ended: set[str] = set()
        users = set(self._logged_in())
        if users:
            inactive = await self.store.inactive_users(users)
            # Only those still logged in: a session may have ended meanwhile.
            inactive &= set(self._logged_in())
            if inactive:
                count = await self._end(inactive)
                for user in sorted(inactive):
                    log.info("sessions of %s ended: the account was disabled or removed",
                             user, extra={"event": "account_ended", "user": user})
                log.debug("%d session(s) ended", count, extra={"event": "account_ended"})
                ended = inactive
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
