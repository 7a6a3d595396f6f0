"""
chat_server.login_queue
~~~~~~~~~~~~~~~~~~~~~~~

The few slots in which password hashes are checked, shared so that a flood
of logins cannot keep an account's owner out (docs/SECURITY.md §13).

An Argon2 verification costs tens of milliseconds of a core, so only a few
run at once (:class:`~chat_server.auth.Authenticator`). First come, first
served, a flood of wrong passwords from many addresses (each one within its
own throttle's allowance) fills the line, and the owner's login waits behind
all of it, past the login deadline. Instead:

* **Known first.** A login whose account logged in successfully from the same
  address recently (the throttle's *trusted* addresses, docs/SECURITY.md §6)
  is served before every other waiter: an attacker cannot be such a login
  without the password.
* **Then by address, in turn.** The other waiters are kept in one line per
  client address (an IPv6 client by its /64), and the addresses take turns,
  one login each: a hundred waiting logins from one address, or a few from
  each of fifty, put a newcomer behind at most one login per address, not
  behind all of them.

A slot that frees goes straight to the next waiter; a waiter that gives up
(the connection closed, the login deadline) leaves its line, and a slot it was
handed but did not take is passed on. All bookkeeping happens between awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

__all__ = ["LoginQueue"]


class LoginQueue:
    """``slots`` places for the expensive part of a login; see the module docstring."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self._free = slots
        self._known: deque[asyncio.Future[None]] = deque()
        self._lines: dict[Hashable, deque[asyncio.Future[None]]] = {}
        #: The addresses with waiters, in the order they take their turns.
        self._rotation: deque[Hashable] = deque()

    @property
    def waiting(self) -> int:
        """Logins waiting for a slot."""
        return len(self._known) + sum(len(line) for line in self._lines.values())

    async def acquire(self, address: Hashable, *, known: bool = False) -> None:
        """Wait for a slot (``known``: in the line of known logins); pair with
        :meth:`release`. Cancelled while waiting, it holds nothing."""
        if self._free > 0:  # a free slot means nobody waits: release() hands slots on
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if known:
            self._known.append(waiter)
        else:
            line = self._lines.get(address)
            if line is None:
                line = self._lines[address] = deque()
                self._rotation.append(address)
            line.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot it will not use: pass it on
            else:
                self._forget(waiter, address, known)
            raise

    def release(self) -> None:
        """A slot is free again: the next waiter gets it."""
        waiter = self._next()
        if waiter is None:
            self._free = min(self._free + 1, self.slots)
        else:
            waiter.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        while self._known:
            waiter = self._known.popleft()
            if not waiter.done():
                return waiter
        while self._rotation:
            address = self._rotation.popleft()
            line = self._lines[address]
            waiter = line.popleft()
            if line:
                self._rotation.append(address)  # its next login waits for its next turn
            else:
                del self._lines[address]
            if not waiter.done():
                return waiter
        return None

    def _forget(self, waiter: asyncio.Future[None], address: Hashable, known: bool) -> None:
        if known:
            if waiter in self._known:
                self._known.remove(waiter)
            return
        line = self._lines.get(address)
        if line is None or waiter not in line:
            return
        line.remove(waiter)
        if not line:
            del self._lines[address]
            self._rotation.remove(address)
