"""
chat_server.auth
~~~~~~~~~~~~~~~~

Password login (OWASP Password Storage and Authentication cheat sheets):

* Argon2id hashes (parameters from :class:`~chat_server.config.Settings`);
  outdated hashes are upgraded on the next successful login.
* **Same work for every attempt.** An unknown user is verified against a dummy
  hash made once with the same parameters, so response time does not tell
  whether an account exists. The caller gets only a :class:`Verified` or
  ``None``; the reason of a failure goes to the DEBUG log.
* **Sessions end with the password.** :class:`Verified` carries the password
  generation the login was checked against, read before the credential is
  checked: a password change that races with the login leaves the session on
  the older generation, so :mod:`chat_server.accounts` ends it.
* **Impossible names fail at once.** A name no account can have (longer than
  64 characters, spaces, control characters: ``store.validate_username``) gets
  the same generic failure without a lookup or a hash, and counts against the
  client's address only. Those rules are public, so this tells nothing.
* **Bounded hashing.** Each Argon2 call takes ~19 MiB and tens of ms of CPU, so
  at most ``max_concurrent_hashes`` run at once, in worker threads (the event
  loop keeps serving). The slot is held until the thread really finishes, even
  if the waiting login is cancelled (auth timeout, disconnect). Waiting logins
  are served fairly (:mod:`chat_server.login_queue`): one from an address the
  account logged in from recently first, the others one address at a time, so
  a flood of wrong passwords from many addresses does not keep the owner out.
* **Throttling of failures** (:mod:`chat_server.throttle`; docs/SECURITY.md
  §6): strictly per account *and* address, per address across accounts, and
  loosely per account across addresses, so that a stranger's guesses never lock
  the owner out of their own address. Each further attempt must wait an
  exponentially growing delay (1 s, 2 s, 4 s ... up to 60 s). The check runs
  *before* hashing, so a flood against one account costs almost nothing. A
  throttled attempt fails like a wrong password.

Session tokens (docs/PROTOCOL.md §15): every successful v2 login is given a
fresh random token (:meth:`Authenticator.issue_token`, stored hashed by the
store, valid for ``CHAT_SESSION_TOKEN_TTL``), which a reconnecting client
sends instead of its password (:meth:`Authenticator.verify_token`), once: the
login that uses a token ends it and gets the next one. A token
login goes through the same throttling, fails with the same generic answer and
is logged the same way (the token itself never). The store ends a user's
tokens when the password changes or the user is disabled or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .admission import client_key
from .config import MAX_PASSWORD_LENGTH, Settings
from .coordination import SharedThrottle
from .login_queue import LoginQueue
from .logs import login_name_fields
from .store import Store, StoreError, UserExists, validate_username
from .throttle import (
    DEFAULT_ACCOUNT_POLICY,
    DEFAULT_ADDRESS_POLICY,
    DEFAULT_PAIR_POLICY,
    AccountPolicy,
    FailureThrottle,
    LoginThrottle,
    ThrottlePolicy,
)

__all__ = [
    "AccountPolicy",
    "Authenticator",
    "FailureThrottle",
    "PasswordHasherLike",
    "ThrottlePolicy",
    "Verified",
    "ensure_bootstrap_user",
]

log = logging.getLogger("chat_server.auth")

T = TypeVar("T")
Address = str | tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class Verified:
    """A successful login: the user's password generation it was checked
    against (:attr:`~chat_server.store.UserRecord.password_generation`). A
    session keeps it; when the user's password changes, sessions with an older
    one end."""

    generation: int


class PasswordHasherLike(Protocol):
    """The part of :class:`argon2.PasswordHasher` we use."""

    def hash(self, password: str) -> str: ...
    def verify(self, hash: str, password: str) -> bool: ...
    def check_needs_rehash(self, hash: str) -> bool: ...


def _possible_user_name(name: str) -> bool:
    """Whether an account could have this name (store.validate_username: 1-64
    printable characters, no spaces). A login with any other name fails at
    once, with the same generic answer: no lookup, no hash. The name's length
    and form are public rules, so the shortcut tells an attacker nothing."""
    try:
        validate_username(name)
    except ValueError:
        return False
    return True


class Authenticator:
    """Checks passwords against the store. See the module docstring."""

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasherLike,
        *,
        max_concurrent_hashes: int = 2,
        clock: Callable[[], float] = time.monotonic,
        pair_policy: ThrottlePolicy = DEFAULT_PAIR_POLICY,
        address_policy: ThrottlePolicy = DEFAULT_ADDRESS_POLICY,
        account_policy: AccountPolicy = DEFAULT_ACCOUNT_POLICY,
        session_token_ttl: float = 0.0,
        shared_throttle: SharedThrottle | None = None,
    ) -> None:
        if max_concurrent_hashes < 1:
            raise ValueError("max_concurrent_hashes must be >= 1")
        if session_token_ttl < 0:
            raise ValueError("session_token_ttl must be >= 0")
        self.store = store
        #: Seconds a session token lives; 0: none are issued.
        self.session_token_ttl = session_token_ttl
        self.hasher = hasher
        #: The hashing slots: known logins first, then each address in turn.
        self._slots = LoginQueue(max_concurrent_hashes)
        self.throttle = LoginThrottle(clock, pair_policy=pair_policy,
                                      address_policy=address_policy,
                                      account_policy=account_policy)
        #: The same policies on counters every replica shares (PostgreSQL), in
        #: place of :attr:`throttle`'s memory; None: one process, memory.
        self.shared_throttle = shared_throttle
        # Made once, with the live parameters, from a secret nobody knows: it
        # can never verify, and costs exactly what a real verification costs.
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(32))

    # -- throttling --------------------------------------------------------

    def is_throttled(self, user: str, address: Address = None) -> float:
        """Seconds before ``user`` from ``address`` may try again (0.0: now),
        by this process's own counters (see :meth:`wait_for`)."""
        return self.throttle.wait(user, address)

    async def wait_for(self, user: str, address: Address = None) -> float:
        """Seconds before ``user`` from ``address`` may try again (0.0: now),
        by the shared counters when there are any."""
        if self.shared_throttle is not None:
            return await self.shared_throttle.wait(user, address)
        return self.throttle.wait(user, address)

    async def _record_failure(self, user: str, address: Address) -> None:
        if self.shared_throttle is not None:
            await self.shared_throttle.failed(user, address)
        else:
            self.throttle.failed(user, address)

    async def _record_success(self, user: str, address: Address) -> None:
        if self.shared_throttle is not None:
            await self.shared_throttle.succeeded(user, address)
        # Also with shared counters: this process's trusted addresses put the
        # owner's next login from here first in line for a hashing slot.
        self.throttle.succeeded(user, address)

    # -- verification ------------------------------------------------------

    @staticmethod
    def _login_fields(user: str, address: Address, **extra: str) -> dict[str, Any]:
        # Until the store says the account exists, the name is logged only as
        # a keyed hash: it may be a password typed into the wrong field.
        return {
            **login_name_fields(user, exists=False),
            "address": client_key(address),
            "event": "login",
            **extra,
        }

    async def _may_attempt(self, user: str, address: Address, fields: dict[str, Any]) -> bool:
        """The checks every login attempt passes before any credential is
        looked at: not throttled, and a name that could be an account's (a
        name that cannot counts against the address). Logs the refusal."""
        if (wait := await self.wait_for(user, address)) > 0:
            log.info("login refused: throttled", extra={**fields, "retry_after": round(wait, 1)})
            return False
        if not _possible_user_name(user):
            self.throttle.failed_no_account(address)
            log.info("login failed", extra=fields)
            log.debug("login failed: not a possible user name", extra=fields)
            return False
        return True

    async def verify(self, user: str, password: str, address: Address = None) -> Verified | None:
        """A :class:`Verified` if ``password`` is ``user``'s password and the
        attempt is not throttled, else ``None``. Raises :exc:`~chat_server.store.StoreError` only if the
        user table cannot be read."""
        fields = self._login_fields(user, address)
        if not await self._may_attempt(user, address, fields):
            return None
        if len(password) > MAX_PASSWORD_LENGTH:
            # Nobody's password is this long (the CLI refuses to set one), so no
            # need to hash; the reply is the same generic failure.
            await self._record_failure(user, address)
            log.info("login failed", extra=fields)
            log.debug("login failed: password too long", extra=fields)
            return None

        record = await self.store.get_user(user)
        # A disabled account is checked like an unknown one: same work, same
        # generic failure, nothing that tells the two apart.
        stored = None if record is None or record.disabled else record.password_hash
        if record is not None:
            fields = {**login_name_fields(user, exists=True), **fields}
            fields.pop("user_hash", None)
        key = client_key(address)
        await self._slots.acquire(key, known=self.throttle.trusted(user, key))
        release = True
        try:
            # While we queued, other attempts may have failed: re-check, so a
            # burst of parallel guesses is cut off as soon as the threshold is
            # reached. Failures are recorded before the slot is released, so the
            # next waiter sees them.
            if await self.wait_for(user, address) > 0:
                log.info("login refused: throttled", extra=fields)
                return None
            work = asyncio.ensure_future(asyncio.to_thread(self._check, stored, password))
            try:
                ok, reason, new_hash = await asyncio.shield(work)
            except asyncio.CancelledError:
                # The thread keeps hashing; it keeps the slot until it is done,
                # so cancelled logins cannot push us past the cap.
                release = False
                work.add_done_callback(self._release_slot)
                raise
            if ok:
                await self._record_success(user, address)
            else:
                await self._record_failure(user, address)
        finally:
            if release:
                self._slots.release()

        if not ok:
            log.info("login failed", extra=fields)
            # Only at debug: the reason would help an attacker reading the logs
            # enumerate accounts.
            log.debug("login failed: %s", reason, extra=fields)
            return None
        assert record is not None  # a missing user never verifies
        try:
            await self.store.record_login(user)
            # Only if the password was not changed while we were hashing.
            if (new_hash is not None and stored is not None
                    and await self.store.upgrade_password_hash(user, stored, new_hash)):
                log.info("password hash upgraded", extra=fields)
        except StoreError as exc:
            # Not worth failing a correct login over; the next login retries.
            log.warning("could not record the login: %s", exc, extra=fields)
        log.info("login ok", extra=fields)
        return Verified(record.password_generation)

    # -- session tokens ------------------------------------------------------

    async def verify_token(self, user: str, token: str,
                           address: Address = None) -> Verified | None:
        """A :class:`Verified` if ``token`` is a live session token of ``user``
        (not expired, not revoked, the user not disabled) and the attempt is not
        throttled, else ``None``. A failure counts like a wrong password. Raises
        :exc:`~chat_server.store.StoreError` only if the store cannot be read."""
        fields = self._login_fields(user, address, method="token")
        if not await self._may_attempt(user, address, fields):
            return None
        # The generation first: a password change after this read revokes the
        # token (then it fails below) or leaves this session on the older
        # generation (then chat_server.accounts ends it).
        record = await self.store.get_user(user)
        # A token logs in once: this ends it, and the login gets a fresh one
        # (issue_token). A copy of it (replayed, or raced on another
        # connection) fails from now on, and ends the tokens its chain has
        # been given since (docs/SECURITY.md §2).
        owner = await self.store.use_session_token(token)
        if owner is None or owner != user or record is None:
            await self._record_failure(user, address)
            log.info("login failed", extra=fields)
            log.debug("login failed: %s", "token unknown, expired or revoked" if owner is None
                      else "token of another user", extra=fields)
            return None
        fields = {**login_name_fields(user, exists=True), **fields}
        fields.pop("user_hash", None)
        await self._record_success(user, address)
        try:
            await self.store.record_login(user)
        except StoreError as exc:
            log.warning("could not record the login: %s", exc, extra=fields)
        log.info("login ok", extra=fields)
        return Verified(record.password_generation)

    async def issue_token(self, user: str, *, follows: str | None = None) -> str | None:
        """A fresh session token for ``user`` (just logged in), or ``None`` when
        tokens are off or the store failed (logged; the login still stands).
        ``follows`` is the token the login used, if any: the new one continues
        its chain, which a replay of any used token of it ends."""
        if self.session_token_ttl <= 0:
            return None
        try:
            issued = await self.store.create_session_token(
                user, timedelta(seconds=self.session_token_ttl), follows=follows)
        except StoreError as exc:
            log.warning("could not issue a session token: %s", exc,
                        extra={"user": user, "event": "session_token"})
            return None
        return issued.token

    async def log_out(self, user: str, tokens: Iterable[str]) -> None:
        """The client ended its session with BYE: end the session tokens it
        logged in with and was given, so none of them logs in again. A store
        that fails is logged; the tokens then live until they expire."""
        try:
            for token in tokens:
                await self.store.revoke_session_token(token)
        except StoreError as exc:
            log.warning("could not end the session tokens at logout: %s", exc,
                        extra={"user": user, "event": "session_token"})

    def _check(self, stored: str | None, password: str) -> tuple[bool, str, str | None]:
        """Runs in a worker thread: (ok, reason, upgraded hash or None)."""
        if stored is None:
            with contextlib.suppress(VerificationError):
                self.hasher.verify(self._dummy_hash, password)
            return False, "unknown user", None
        try:
            self.hasher.verify(stored, password)
        except VerifyMismatchError:
            return False, "wrong password", None
        except (VerificationError, InvalidHashError):
            log.warning("stored password hash cannot be verified (corrupt or unsupported)")
            return False, "unusable stored hash", None
        new_hash = None
        if self.hasher.check_needs_rehash(stored):
            new_hash = self.hasher.hash(password)
        return True, "ok", new_hash

    def _release_slot(self, future: asyncio.Future[Any]) -> None:
        self._slots.release()
        if not future.cancelled():
            future.exception()  # mark retrieved if nobody awaits it any more


async def ensure_bootstrap_user(
    store: Store, settings: Settings, hasher: PasswordHasherLike
) -> bool:
    """Create ``CHAT_BOOTSTRAP_USER`` if it does not exist yet. Returns ``True``
    if a user was created. An existing user's password is left alone (the
    variable is for first start, not for password resets); only the name is
    logged."""
    name, password = settings.bootstrap_user, settings.bootstrap_password
    if name is None or password is None:
        return False
    if await store.get_user(name) is not None:
        log.info("bootstrap user already exists", extra={"user": name, "event": "bootstrap"})
        return False
    try:
        await store.add_user(name, hasher.hash(password))
    except UserExists:  # created concurrently (e.g. by the CLI) since we looked
        return False
    log.info("bootstrap user created", extra={"user": name, "event": "bootstrap"})
    return True
