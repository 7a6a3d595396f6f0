"""
chat_server.health
~~~~~~~~~~~~~~~~~~

``chat-server healthcheck``: exit 0 only when the server on this machine accepts
a v2 connection *and* reports its model ready (the ``model_ready`` limit in the
server's HELLO). Used by the container HEALTHCHECK; a plain blocking socket is
enough here.
"""

from __future__ import annotations

import contextlib
import socket
import sys

from chatcore.protocol import (
    NEED_DATA,
    Bye,
    ClientHello,
    Connection,
    Error,
    ProtocolError,
    Role,
    ServerHello,
)

from .config import Settings

#: The agent string of `chat-server healthcheck`; the server logs such
#: sessions at debug only (container healthchecks run every few seconds).
HEALTHCHECK_AGENT = "chat-server-healthcheck"
TIMEOUT = 5.0


def probe(host: str, port: int, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """(healthy, one-line reason)."""
    conn = Connection(Role.CLIENT, version=2)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(conn.send(ClientHello((2,), agent=HEALTHCHECK_AGENT)))
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return False, "server closed the connection"
                    continue
                break
            if isinstance(event, Error):
                return False, f"server error: {event.code.value}: {event.message}"
            if not isinstance(event, ServerHello):
                return False, f"unexpected reply {type(event).__name__}"
            with contextlib.suppress(OSError, ProtocolError):
                sock.sendall(conn.send(Bye("healthcheck")))
            if event.limits.get("model_ready", 0) != 1:
                return False, f"server up, model {event.model} not ready"
            return True, f"ok: model {event.model} ready"
    except (OSError, ProtocolError) as exc:
        return False, f"cannot reach chat-server at {host}:{port}: {exc}"


def main(settings: Settings) -> int:
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    healthy, reason = probe(host, settings.port)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1
