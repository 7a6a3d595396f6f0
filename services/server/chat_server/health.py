"""
chat_server.health
~~~~~~~~~~~~~~~~~~

``chat-server healthcheck``: exit 0 only when the server on this machine accepts
a v2 connection *and* reports its model ready (the ``model_ready`` limit in the
server's HELLO). Used by the container HEALTHCHECK; a plain blocking socket is
enough here. When the server refuses plaintext v2 (``CHAT_REQUIRE_TLS``) the
probe speaks TLS; it sends no credentials, so it does not verify the
certificate.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
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
    frame_name,
)

from .config import Settings

#: The agent string of `chat-server healthcheck`; the server logs such
#: sessions at debug only (container healthchecks run every few seconds).
HEALTHCHECK_AGENT = "chat-server-healthcheck"
TIMEOUT = 5.0


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a liveness probe on this machine; no secret is sent
    return ctx


def probe(host: str, port: int, timeout: float = TIMEOUT, *, tls: bool = False) -> tuple[bool, str]:
    """(healthy, one-line reason)."""
    conn = Connection(Role.CLIENT, version=2)
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if tls:
                sock = stack.enter_context(_tls_context().wrap_socket(sock))
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
                return False, f"unexpected reply {frame_name(event)}"
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
    healthy, reason = probe(host, settings.port, tls=settings.require_tls)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1
