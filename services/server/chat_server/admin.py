"""
chat_server.admin
~~~~~~~~~~~~~~~~~

The local-only admin endpoint behind ``chat-server status``.

It is a Unix stream socket (``CHAT_ADMIN_SOCKET``; by default ``admin.sock``
beside the database, i.e. in the data directory), never a network port:

* the socket file is created with mode 0600 (bound under a temporary name,
  restricted, then renamed into place, so it is never reachable by others);
* each peer's credentials (``SO_PEERCRED``) are checked as well: only the
  server's own user and root are answered, anyone else is closed on at once.

The exchange is one line each way: the client sends a command (``status``),
the server answers with one JSON object and closes. The snapshot holds uptime,
connections by protocol, the logged-in users (name, protocol, since, message
and refusal counts), the model queue and the backends' states. By construction
it holds no password, no message text and no client address: it is built only
from :class:`chat_server.metrics.Metrics`, which never receives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import metrics as metrics_module
from .metrics import Metrics

__all__ = [
    "MAX_SOCKET_PATH",
    "SNAPSHOT_VERSION",
    "AdminEndpoint",
    "AdminError",
    "Limits",
    "request",
    "snapshot",
    "start",
]

log = logging.getLogger("chat_server.admin")

SNAPSHOT_VERSION = 1
#: sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
#: A request is one short line; anything longer is not ours.
MAX_REQUEST_BYTES = 256
REQUEST_TIMEOUT = 5.0
#: Answers are one JSON line; a status of 10,000 sessions is about 2 MB.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class AdminError(Exception):
    """The admin endpoint cannot be used; ``str(exc)`` is one line for people."""


@dataclass(frozen=True)
class Limits:
    """Configured limits the snapshot shows next to the live numbers."""

    max_connections: int
    max_parallel: int
    model: str


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def snapshot(m: Metrics, limits: Limits, *, now: float | None = None) -> dict[str, Any]:
    """The server's state as a JSON-ready dict (call it on the event loop)."""
    now = time.time() if now is None else now
    by_protocol: dict[str, int] = {}
    by_transport: dict[str, int] = {}
    users = []
    for view in m.sessions.values():
        by_protocol[view.protocol.value] = by_protocol.get(view.protocol.value, 0) + 1
        by_transport[view.transport.value] = by_transport.get(view.transport.value, 0) + 1
        if view.user is None:
            continue
        since = view.logged_in_at or view.opened_at
        users.append({
            "user": view.user,
            "session": view.id,
            "protocol": view.protocol.value,
            "transport": view.transport.value,
            "since": _iso(since),
            "connected_seconds": round(max(now - since, 0.0), 1),
            "messages": view.messages,
            "refused": view.refused,
        })
    users.sort(key=lambda u: (u["since"] or "", u["user"]))
    return {
        "version": SNAPSHOT_VERSION,
        "server": {
            "version": m.version,
            "pid": os.getpid(),
            "started_at": _iso(m.started_at),
            "uptime_seconds": round(max(now - m.started_at, 0.0), 1),
            "stopping": m.stopping,
            "model": limits.model,
        },
        "connections": {
            "open": len(m.sessions),
            "logged_in": len(users),
            "max": limits.max_connections,
            "by_protocol": by_protocol,
            "by_transport": by_transport,
        },
        "users": users,
        "queue": {
            "waiting": m.queue_length,
            "in_flight": m.in_flight,
            "max_parallel": limits.max_parallel,
        },
        "backends": [
            {
                "name": b.name,
                "state": b.state.value,
                "model": b.model,
                "detail": b.detail,
                "in_flight": b.in_flight,
                "max_parallel": b.max_parallel,
            }
            for b in m.backends()
        ],
        "totals": m.counts(),
    }


def _peer_allowed(sock: socket.socket) -> bool:
    """Only our own user (and root) may ask. Without SO_PEERCRED (not Linux)
    the socket's 0600 mode is the guard."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


class AdminEndpoint:
    """Serves ``build()`` (a snapshot dict) on a Unix socket at ``path``."""

    def __init__(self, path: Path, build: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._build = build
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        """Bind and listen; raises :exc:`AdminError` (one line) when it can't."""
        path = self.path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise AdminError(f"admin socket path is longer than {MAX_SOCKET_PATH} bytes: {path}"
                             " (set CHAT_ADMIN_SOCKET to a shorter one)")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AdminError(f"cannot create {path.parent}: {exc.strerror}") from None
        self._clear_stale(path)
        # Bind under a temporary name, restrict it, then move it into place: the
        # socket is never reachable under its real name with a looser mode.
        tmp = path.parent / f".admin-{os.getpid()}.tmp"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            sock.bind(os.fsencode(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            self._inode = path.stat().st_ino
            sock.listen(64)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._handle, sock=sock)
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise AdminError(f"cannot listen on {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _clear_stale(path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AdminError(f"cannot use {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise AdminError(f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(os.fsencode(path))
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left behind by a server that is gone
            return
        finally:
            probe.close()
        raise AdminError(f"another chat-server answers on {path}")

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()
        self._server = None
        # Remove the file only if it is still ours.
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or not _peer_allowed(sock):
                log.warning("admin endpoint: refused a peer of another user", extra={"event": "admin_refused"})
                return
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    line = await reader.readuntil(b"\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if len(line) > MAX_REQUEST_BYTES:
                return
            command = line.decode("ascii", "replace").strip()
            if command == "status":
                data = self._build()
                body = await asyncio.to_thread(json.dumps, data, separators=(",", ":"))
            else:
                body = json.dumps({"error": "unknown command; try: status"})
            writer.write(body.encode() + b"\n")
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except Exception:
            log.warning("admin endpoint: request failed", exc_info=True, extra={"event": "admin_error"})
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await writer.wait_closed()


async def start(path: Path, limits: Limits, m: Metrics | None = None) -> AdminEndpoint | None:
    """Start the endpoint for the server; logs and returns None if it can't
    (the server keeps serving chats without it)."""
    recorder = metrics_module.default if m is None else m
    endpoint = AdminEndpoint(path, lambda: snapshot(recorder, limits))
    try:
        await endpoint.start()
    except AdminError as exc:
        log.warning("admin endpoint off (chat-server status will not work): %s", exc,
                    extra={"event": "admin_off"})
        return None
    log.info("admin endpoint on %s (chat-server status)", path, extra={"event": "admin_listening"})
    return endpoint


def request(path: Path, command: str = "status", *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Ask the server at ``path`` (blocking); raises :exc:`AdminError` with a
    one-line reason when no server answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fsencode(path))
        except FileNotFoundError:
            raise AdminError(f"no chat-server is running here (no admin socket at {path})") from None
        except ConnectionRefusedError:
            raise AdminError(f"no chat-server is running here (nothing answers on {path})") from None
        except PermissionError:
            raise AdminError(f"permission denied on {path}: run this as the server's user") from None
        except OSError as exc:
            raise AdminError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(command.encode("ascii") + b"\n")
            chunks, size = [], 0
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
                if size > MAX_RESPONSE_BYTES:
                    raise AdminError("the server's answer is too large")
        except TimeoutError:
            raise AdminError(f"the server did not answer within {timeout:.0f} s") from None
        except OSError as exc:
            raise AdminError(f"lost the connection to the server: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not chunks:
        raise AdminError("the server closed the connection without an answer (not allowed?)")
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise AdminError("the server's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise AdminError("the server's answer is not a JSON object")
    if "error" in answer:
        raise AdminError(f"the server says: {answer['error']}")
    return answer
