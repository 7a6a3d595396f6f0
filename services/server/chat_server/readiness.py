"""
chat_server.readiness
~~~~~~~~~~~~~~~~~~~~~

A small HTTP endpoint for load balancers and orchestrators
(``CHAT_HEALTH_PORT``), beside the chat port:

=============  ===================================================================
``GET /ready``  ``200 ready`` while the server takes new connections and can answer
                (the default model is ready); ``503`` with the reason otherwise:
                ``draining`` from SIGTERM until the process exits (first, for
                ``CHAT_DRAIN_DELAY``, while it still serves as usual), ``starting`` /
                ``model not ready`` before that. HAProxy's ``option httpchk`` stops
                sending new connections to a replica that answers 503.
``GET /live``   ``200 live`` while the event loop runs (for a liveness probe that
                must not restart a draining replica).
=============  ===================================================================

``HEAD`` works too; other methods get 405, other paths 404. One request per
connection, parsed by h11 (a well-kept sans-IO HTTP/1.1 library), bounded to
8 KiB and :data:`REQUEST_SECONDS`; the answer is computed from plain attributes,
so a check costs microseconds of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import h11

__all__ = ["REQUEST_SECONDS", "HealthEndpoint", "Readiness", "assess", "start"]

log = logging.getLogger("chat_server.readiness")

REQUEST_SECONDS = 2.0
MAX_REQUEST_BYTES = 8 * 1024


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # "ready", "draining", "model not ready", ...


class ServerState(Protocol):
    """What readiness is judged on (``ChatService`` has both)."""

    @property
    def draining(self) -> bool: ...

    @property
    def shutting_down(self) -> bool: ...

    @property
    def model_ready(self) -> bool: ...


def assess(server: ServerState) -> Readiness:
    if server.draining or server.shutting_down:
        return Readiness(False, "draining")
    if not server.model_ready:
        return Readiness(False, "model not ready")
    return Readiness(True, "ready")


class HealthEndpoint:
    def __init__(self, server: asyncio.Server) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()


async def start(host: str, port: int, state: Callable[[], Readiness]) -> HealthEndpoint:
    """Listen on ``host:port``; ``state()`` is asked at every ``/ready``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                await _serve_one(reader, writer, state)
        except (TimeoutError, OSError, h11.ProtocolError):
            pass
        except Exception:  # never let a probe take the server down
            log.exception("health endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)
    endpoint = HealthEndpoint(server)
    log.info("health endpoint on %s:%d (/ready, /live)", host, endpoint.port,
             extra={"event": "health_listening"})
    return endpoint


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     state: Callable[[], Readiness]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(MAX_REQUEST_BYTES)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            break
        return  # ConnectionClosed or anything else: nothing to answer
    method, target = event.method.decode("ascii", "replace"), event.target.split(b"?", 1)[0]
    if target == b"/ready":
        readiness = state()
        status, body = (200 if readiness.ready else 503), readiness.reason
    elif target == b"/live":
        status, body = 200, "live"
    else:
        status, body = 404, "not found"
    if status != 404 and method not in ("GET", "HEAD"):
        status, body = 405, "method not allowed"
    payload = (body + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload))),
               ("Cache-Control", "no-store"), ("Connection", "close")]
    if status == 405:
        headers.append(("Allow", "GET, HEAD"))
    out = conn.send(h11.Response(status_code=status, headers=headers))
    if method != "HEAD":
        out += conn.send(h11.Data(data=payload))
    out += conn.send(h11.EndOfMessage())
    writer.write(out)
    await writer.drain()
