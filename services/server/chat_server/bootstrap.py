"""
chat_server.bootstrap
~~~~~~~~~~~~~~~~~~~~~

The first user, so that a fresh install needs nothing but ``docker compose up -d``
and no password is ever known in advance (docs/ARCHITECTURE.md, "First start"):

* ``CHAT_BOOTSTRAP_PASSWORD`` set: ``CHAT_BOOTSTRAP_USER`` is created with it
  if absent (:func:`chat_server.auth.ensure_bootstrap_user`); no file.
* Otherwise, when the database has **no users at all**: ``CHAT_BOOTSTRAP_USER``
  (``admin``) is created with a generated password (:func:`generate_password`:
  140 random bits, lower-case letters and digits in groups, nothing to confuse),
  which is written to ``<data dir>/initial-password`` (0600, the directory
  0700) and announced by one log line naming ``chat-server initial-password``,
  never the password.
* The file lives only as long as its password works. ``chat-server users
  passwd`` and ``users remove`` delete it (:func:`remove_initial_password`);
  the server deletes it too when it sees the stored hash no longer verify
  (:class:`InitialPasswordCheck`), which covers every other way of changing
  it (the CLI of another replica, SQL).

Several servers starting at once:

* on one data directory (one host, or a volume the replicas share), a lock
  file serialises the whole step;
* on one PostgreSQL database, the insert is insert-if-absent (the name is the
  key): a replica whose insert loses writes no file (its temporary file is
  deleted). The file then exists only in the data directory of the replica
  that created the user, and that replica's log line names its host.

Crash safety: the file is written under a temporary name before the insert and
renamed into place after it. A temporary file left by a crash is promoted at
the next start if its password is the stored one, and deleted otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from argon2.exceptions import InvalidHashError, VerificationError

from .auth import PasswordHasherLike, ensure_bootstrap_user
from .config import Settings
from .store import Store, UserExists

__all__ = [
    "INITIAL_PASSWORD_FILE",
    "PASSWORD_ALPHABET",
    "InitialPassword",
    "InitialPasswordCheck",
    "ensure_first_user",
    "generate_password",
    "initial_password_path",
    "initial_password_works",
    "read_initial_password",
    "remove_initial_password",
]

log = logging.getLogger("chat_server.bootstrap")

INITIAL_PASSWORD_FILE = "initial-password"
_LOCK_FILE = ".first-start.lock"
_PENDING_PREFIX = ".initial-password."
_PENDING_SUFFIX = ".tmp"

#: Crockford's base32 in lower case: no i, l, o or u, so nothing reads as
#: something else when typed from a screen. 32 symbols: 5 bits each.
PASSWORD_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_GROUPS, _GROUP_LENGTH = 7, 4  # 28 symbols, 140 bits

#: How to read it, for the log line and the CLI's messages.
READ_COMMAND = "chat-server initial-password"
COMPOSE_READ_COMMAND = "docker compose exec server chat-server initial-password"


def generate_password() -> str:
    """A fresh random password: 7 groups of 4 from :data:`PASSWORD_ALPHABET`
    joined by ``-`` (140 bits from :mod:`secrets`)."""
    return "-".join(
        "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(_GROUP_LENGTH))
        for _ in range(_GROUPS)
    )


@dataclass(frozen=True)
class InitialPassword:
    """What the file holds: whose password it is, and the password."""

    user: str
    password: str = field(repr=False)

    def render(self) -> bytes:
        return (
            f"# The initial password of the chat server's user {self.user!r}, generated at\n"
            f"# its first start. `{READ_COMMAND}` prints it. This file is deleted\n"
            f"# when that password changes (chat-server users passwd {self.user}).\n"
            f"user: {self.user}\n"
            f"password: {self.password}\n"
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> InitialPassword | None:
        """The file's content, or ``None`` if it is not one of ours."""
        values: dict[str, str] = {}
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition(": ")
            if sep and key in ("user", "password"):
                values[key] = value
        if not values.get("user") or not values.get("password"):
            return None
        return cls(values["user"], values["password"])


def initial_password_path(settings: Settings) -> Path:
    """``<data dir>/initial-password``."""
    return settings.data_dir / INITIAL_PASSWORD_FILE


def read_initial_password(path: Path) -> InitialPassword | None:
    """The file at ``path``, or ``None`` when there is none (or it is not ours).
    Raises :exc:`OSError` if it exists but cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return InitialPassword.parse(data)


def remove_initial_password(settings: Settings, user: str | None = None) -> bool:
    """Delete the initial-password file (only if it is ``user``'s, when given);
    ``True`` if one was deleted. For ``users passwd`` and ``users remove``."""
    path = initial_password_path(settings)
    try:
        current = read_initial_password(path)
    except OSError:
        return False
    if current is None or (user is not None and current.user != user):
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def initial_password_works(store: Store, hasher: PasswordHasherLike,
                                 initial: InitialPassword) -> str | None:
    """The stored hash of ``initial.user`` if ``initial.password`` verifies
    against it, else ``None`` (the password was changed, or the user removed).
    Raises :exc:`~chat_server.store.StoreError`."""
    user = await store.get_user(initial.user)
    if user is None:
        return None
    stored = user.password_hash
    return stored if await asyncio.to_thread(_verifies, hasher, stored, initial.password) else None


def _verifies(hasher: PasswordHasherLike, stored: str, password: str) -> bool:
    try:
        return bool(hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------------------- first start

async def ensure_first_user(store: Store, settings: Settings, hasher: PasswordHasherLike) -> bool:
    """Create the first user at start, as the module docstring says; ``True``
    if this call created one. Raises :exc:`~chat_server.store.StoreError`, and
    :exc:`OSError` when the data directory cannot be used."""
    if settings.bootstrap_password is not None:
        return await ensure_bootstrap_user(store, settings, hasher)
    directory = settings.data_dir
    name = settings.bootstrap_user
    await asyncio.to_thread(_private_directory, directory)
    async with _directory_lock(directory):
        await _recover_pending(store, hasher, directory)
        if await store.has_users():
            return False
        initial = InitialPassword(name, generate_password())
        password_hash = await asyncio.to_thread(hasher.hash, initial.password)
        pending = await asyncio.to_thread(_write_pending, directory, initial)
        try:
            await store.add_user(name, password_hash)
        except UserExists:
            # Another server on the same database inserted it first: its
            # password is the real one, ours never was.
            _unlink(pending)
            log.info("first user %r was created by another server on this database at the "
                     "same moment; its initial password is in that server's data directory "
                     "(its log says where)", name, extra={"event": "bootstrap", "user": name})
            return False
        except BaseException:
            _unlink(pending)
            raise
        path = directory / INITIAL_PASSWORD_FILE
        await asyncio.to_thread(_promote, pending, path)
    log.warning(
        "first start: created user %r with a generated password, in %s on host %s (readable "
        "only by the server's user); read it with `%s` (in the compose stack: `%s`), then "
        "change it with `chat-server users passwd %s`", name, path, socket.gethostname(),
        READ_COMMAND, COMPOSE_READ_COMMAND, name,
        extra={"event": "initial_password", "user": name},
    )
    return True


def _private_directory(directory: Path) -> None:
    """Create the data directory 0700, or close a looser one we own (with a log line)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_mode & 0o077 and not st.st_mode & stat.S_ISVTX and st.st_uid == os.geteuid():
        directory.chmod(0o700)
        log.warning("data directory %s was accessible to others (mode %o); made it 0700",
                    directory, stat.S_IMODE(st.st_mode), extra={"event": "permissions"})


@contextlib.asynccontextmanager
async def _directory_lock(directory: Path) -> AsyncIterator[None]:
    """An exclusive lock on ``<directory>/.first-start.lock`` (servers sharing
    the directory wait for each other; released when the file is closed, also
    by a crash)."""
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_pending(directory: Path, initial: InitialPassword) -> Path:
    # mkstemp creates the file 0600 with O_EXCL: private from its first byte.
    fd, name = tempfile.mkstemp(prefix=_PENDING_PREFIX, suffix=_PENDING_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(initial.render())
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(Path(name))
        raise
    return Path(name)


def _promote(pending: Path, path: Path) -> None:
    os.replace(pending, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename survives a power cut
    finally:
        os.close(dir_fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _recover_pending(store: Store, hasher: PasswordHasherLike, directory: Path) -> None:
    """Temporary files left by a crash (we hold the directory lock, so nobody
    is writing one now): promote the one whose password is the stored one,
    delete the rest."""
    for pending in sorted(directory.glob(f"{_PENDING_PREFIX}*{_PENDING_SUFFIX}")):
        try:
            initial = read_initial_password(pending)
        except OSError:
            initial = None
        if initial is not None and await initial_password_works(store, hasher, initial):
            await asyncio.to_thread(_promote, pending, directory / INITIAL_PASSWORD_FILE)
            log.warning("recovered the initial password of %r left by an interrupted first "
                        "start; read it with `%s`", initial.user, READ_COMMAND,
                        extra={"event": "initial_password", "user": initial.user})
        else:
            _unlink(pending)


# ---------------------------------------------------------------------------- the file's life

class InitialPasswordCheck:
    """Deletes the initial-password file once its password no longer works.

    :meth:`check` is cheap while nothing changes: one small file read and one
    user lookup, comparing the stored hash with the one that verified last
    time; only a changed hash is verified again (argon2, in a thread). The
    server calls it at start and then every ``CHAT_ACCOUNT_CHECK_INTERVAL``
    seconds (chat_server.accounts)."""

    def __init__(self, path: Path, hasher: PasswordHasherLike) -> None:
        self.path = path
        self._hasher = hasher
        self._verified_hash: str | None = None

    async def check(self, store: Store, *, remind: bool = True) -> bool:
        """``True`` while the file exists and its password works. The first
        time it finds a working password it logs a reminder (unless ``remind``
        is false: the file was just written and announced)."""
        try:
            initial = await asyncio.to_thread(read_initial_password, self.path)
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc.strerror or exc,
                        extra={"event": "initial_password"})
            return False
        if initial is None:
            self._verified_hash = None
            return False
        user = await store.get_user(initial.user)
        if user is not None and user.password_hash == self._verified_hash:
            return True
        stored = await initial_password_works(store, self._hasher, initial)
        if stored is not None:
            first = self._verified_hash is None
            self._verified_hash = stored
            if first:
                await asyncio.to_thread(_tighten, self.path)
            if first and remind:
                log.warning("the initial password of %r has not been changed yet; read it with "
                            "`%s`, then change it with `chat-server users passwd %s`",
                            initial.user, READ_COMMAND, initial.user,
                            extra={"event": "initial_password", "user": initial.user})
            return True
        self._verified_hash = None
        _unlink(self.path)
        log.info("deleted %s: the initial password of %r no longer works (changed, or the user "
                 "removed)", self.path, initial.user,
                 extra={"event": "initial_password", "user": initial.user})
        return False


def _tighten(path: Path) -> None:
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by others (mode %o); made it 0600", path,
                        stat.S_IMODE(st.st_mode), extra={"event": "permissions"})
