"""
chat_client.tls
~~~~~~~~~~~~~~~

TLS for the client's blocking connection, and the decision whether to trust
the server's certificate.

:class:`TLSSocket` runs an :class:`ssl.SSLObject` over memory buffers on top of
a plain socket. It offers what :class:`~chat_client.connection.ChatConnection`
uses of a socket (``recv``, ``sendall``, ``shutdown``, ``close``), and it is
safe for the connection's two threads (the reader in ``recv``, the sender in
``sendall``): every use of the TLS state is under one lock, while the blocking
``recv()`` of the socket itself is not, so a reader waiting for the server
never holds up a send. (An :class:`ssl.SSLSocket` must not be read and
written from two threads at once: OpenSSL's objects are not thread-safe.)

Trust, in this order (docs: README "TLS"):

1. ``--fingerprint``: the certificate must have that SHA-256 fingerprint; no CA involved.
2. ``--cafile``: the chain must verify against that CA file, and the name must match.
3. A server remembered in the known-hosts file: the certificate must have the
   remembered fingerprint; if it changed, the client refuses loudly.
4. Otherwise the system's CAs verify the chain and the name. A server they
   cannot vouch for (typically the server's own self-signed certificate) is
   untrusted: :exc:`UntrustedCertificate` carries its fingerprint, so the
   caller can ask the user (interactive) or stop (one-shot). With
   ``accept_new`` (like ssh's ``StrictHostKeyChecking=accept-new``) it is
   remembered at once instead.

Nothing of the chat protocol is sent before the certificate is trusted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConnectionLost, TrustError
from .trust import KnownHosts, fingerprint_of, host_key

__all__ = [
    "CertificateChanged",
    "TLSOptions",
    "TLSSocket",
    "UntrustedCertificate",
    "open_tls",
]

_RECV = 65536


@dataclass(frozen=True)
class TLSOptions:
    known_hosts: KnownHosts
    cafile: Path | None = None
    #: A pinned SHA-256 fingerprint (normalised, ``AB:CD:…``).
    fingerprint: str | None = None
    #: Remember an unknown server's certificate without asking.
    accept_new: bool = False
    #: Called with a one-line notice when ``accept_new`` remembered a certificate.
    on_remembered: Callable[[str], None] | None = None


class UntrustedCertificate(TrustError):
    """Neither a CA nor the known-hosts file vouches for the certificate."""

    def __init__(self, host: str, port: int, fingerprint: str, reason: str) -> None:
        self.host, self.port, self.fingerprint, self.reason = host, port, fingerprint, reason
        super().__init__(
            f"the TLS certificate of {host_key(host, port)} is not trusted ({reason}); "
            f"its SHA-256 fingerprint is {fingerprint}",
            (
                "Nothing was sent to the server. Ask its operator for the fingerprint "
                "(chat-server fingerprint) and compare. If it matches, either run chat-client "
                "interactively once and accept it (it is then remembered), or pass",
                f"  --fingerprint {fingerprint}",
            ),
        )


class CertificateChanged(TrustError):
    def __init__(self, host: str, port: int, known: str, presented: str, path: Path,
                 line: int) -> None:
        name = host_key(host, port)
        super().__init__(
            f"WARNING: the TLS certificate of {name} has CHANGED since it was remembered; "
            "refusing to connect",
            (
                f"  remembered: SHA256:{known}  ({path}, line {line})",
                f"  presented:  SHA256:{presented}",
                "Someone may be intercepting the connection (man in the middle), or the "
                "server's certificate was replaced. Nothing was sent to the server.",
                "Ask the server's operator for the new fingerprint (chat-server fingerprint). "
                "Only if it matches the presented one, forget the old one with",
                f"  chat-client --host {host} --port {port} --forget-host",
                f"(or delete line {line} of {path}) and connect again.",
            ),
        )


class TLSSocket:
    """A TLS connection over a connected socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self._sock = sock
        self._obj = obj
        self._in = incoming
        self._out = outgoing
        self._lock = threading.Lock()
        der = obj.getpeercert(binary_form=True)
        self.fingerprint = fingerprint_of(der) if der else ""

    @classmethod
    def handshake(cls, sock: socket.socket, context: ssl.SSLContext, server_hostname: str,
                  timeout: float) -> TLSSocket:
        """Run the client handshake on ``sock`` (blocking, within ``timeout``).
        Raises :class:`ssl.SSLError` (e.g. a failed verification) or
        :class:`ConnectionLost`."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        deadline = time.monotonic() + timeout
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if data := outgoing.read():
                sock.sendall(data)
            if done:
                return cls(sock, obj, incoming, outgoing)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionLost("the TLS handshake did not finish in time")
            sock.settimeout(left)
            try:
                raw = sock.recv(_RECV)
            except TimeoutError:
                raise ConnectionLost("the TLS handshake did not finish in time") from None
            if raw:
                incoming.write(raw)
            else:
                incoming.write_eof()

    # -- what ChatConnection uses of a socket --------------------------------------------
    @property
    def version(self) -> str:
        return self._obj.version() or ""

    def recv(self, bufsize: int) -> bytes:
        """Decrypted bytes; b"" at the end of the connection."""
        while True:
            with self._lock:
                try:
                    data = self._obj.read(bufsize)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                self._flush()  # reading can produce records to send (key updates)
            if data:
                return data
            if data == b"":
                return b""
            raw = self._sock.recv(_RECV)  # outside the lock: a send is never held up
            with self._lock:
                if raw:
                    self._in.write(raw)
                else:
                    self._in.write_eof()

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._obj.write(data)
            self._flush()

    def _flush(self) -> None:
        if out := self._out.read():
            self._sock.sendall(out)

    def shutdown(self, how: int) -> None:
        with self._lock:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._obj.unwrap()  # close_notify; the server's reply is not awaited
            with contextlib.suppress(OSError):
                self._flush()
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def getpeername(self) -> object:
        return self._sock.getpeername()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The certificate is checked by its fingerprint right after the handshake,
    # before anything of the chat protocol is sent.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _verifying_context(cafile: Path | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise TrustError(f"--cafile {cafile}: cannot load it: {getattr(exc, 'strerror', None) or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def open_tls(dial: Callable[[], socket.socket], host: str, port: int, options: TLSOptions,
             timeout: float) -> TLSSocket:
    """A trusted TLS connection to ``host:port``. ``dial()`` opens a new TCP
    connection (a second one is needed only to read an untrusted certificate
    after the CA check failed). Raises :class:`TrustError` subclasses or
    :class:`ConnectionLost`."""
    if options.fingerprint is not None:
        tls = _handshake(dial, host, port, _unverified_context(), timeout)
        if tls.fingerprint != options.fingerprint:
            tls.close()
            raise TrustError(
                f"the TLS certificate of {host_key(host, port)} does not match --fingerprint; "
                "refusing to connect",
                (f"  expected:  SHA256:{options.fingerprint}",
                 f"  presented: SHA256:{tls.fingerprint}",
                 "Nothing was sent to the server."),
            )
        return tls
    if options.cafile is not None:
        try:
            return _handshake(dial, host, port, _verifying_context(options.cafile), timeout)
        except ssl.SSLCertVerificationError as exc:
            raise TrustError(
                f"the TLS certificate of {host_key(host, port)} could not be verified with "
                f"--cafile {options.cafile}: {_verify_reason(exc)}") from None
    known = options.known_hosts.lookup(host, port)
    if known is not None:
        tls = _handshake(dial, host, port, _unverified_context(), timeout)
        if tls.fingerprint != known.fingerprint:
            tls.close()
            raise CertificateChanged(host, port, known.fingerprint, tls.fingerprint,
                                     options.known_hosts.path, known.line)
        return tls
    try:
        return _handshake(dial, host, port, _verifying_context(None), timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = _verify_reason(exc)
    tls = _handshake(dial, host, port, _unverified_context(), timeout)
    if options.accept_new:
        options.known_hosts.remember(host, port, tls.fingerprint)
        if options.on_remembered is not None:
            options.on_remembered(
                f"trusting the new TLS certificate of {host_key(host, port)} ({reason}) on "
                f"first use: SHA256:{tls.fingerprint}, remembered in {options.known_hosts.path}")
        return tls
    tls.close()
    raise UntrustedCertificate(host, port, tls.fingerprint, reason)


def _handshake(dial: Callable[[], socket.socket], host: str, port: int, ctx: ssl.SSLContext,
               timeout: float) -> TLSSocket:
    sock = dial()
    try:
        return TLSSocket.handshake(sock, ctx, host, timeout)
    except ssl.SSLCertVerificationError:
        sock.close()
        raise
    except ssl.SSLError as exc:
        sock.close()
        raise ConnectionLost(
            f"TLS with {host_key(host, port)} failed: {exc.reason or exc} (is it a chat-server "
            "that speaks TLS?)") from None
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, ConnectionResetError | BrokenPipeError):
            reason = "the server closed the connection"
        raise ConnectionLost(f"TLS with {host_key(host, port)} failed: {reason}") from None
    except BaseException:
        sock.close()
        raise


def _verify_reason(exc: ssl.SSLCertVerificationError) -> str:
    return str(exc.verify_message or exc.reason or exc)
