"""
chat_server.tls
~~~~~~~~~~~~~~~

The server's TLS certificate and its :class:`ssl.SSLContext`.

* With ``CHAT_TLS_CERT`` and ``CHAT_TLS_KEY`` the operator's PEM certificate
  chain and private key are used as they are.
* Without them the server uses a self-signed certificate of its own, kept in
  ``<data directory>/tls/`` (the directory of ``CHAT_DB``): generated with the
  ``cryptography`` package on the first start (an ECDSA P-256 key, written
  0600 from its first byte; a certificate for ``localhost``, the host name,
  127.0.0.1 and ::1), and reused on every later start so that the fingerprint
  clients have pinned stays the same. Delete both files to get a new one.

Either way the SHA-256 fingerprint of the certificate is logged at start; a
client compares it with what it pinned (``chat-client --fingerprint``) or
remembered (its known-hosts file). ``chat-server fingerprint`` prints it.

The context allows TLS 1.2 and 1.3 only, with Python's default (forward-secret,
AEAD) cipher list, no compression and no renegotiation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import Settings

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "TLSError",
    "TLSMaterial",
    "create_context",
    "fingerprint",
    "format_fingerprint",
    "generated_dir",
    "load_material",
    "read_material",
]

log = logging.getLogger("chat_server.tls")

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: Validity of a generated certificate. Clients trust it by its fingerprint (pinned
#: or remembered), not by its dates, and a new certificate makes every client
#: confirm the server again, so it is long-lived; rotate it by deleting the files.
GENERATED_VALIDITY = dt.timedelta(days=3650)
#: A certificate expiring sooner than this is warned about at every start.
EXPIRY_WARNING = dt.timedelta(days=30)


class TLSError(Exception):
    """The certificate or key cannot be used. ``str(exc)`` is one line."""


@dataclass(frozen=True)
class TLSMaterial:
    cert_path: Path
    key_path: Path
    #: SHA-256 of the certificate's DER bytes, as ``AB:CD:…`` (what openssl prints).
    fingerprint: str
    #: True when the certificate is the server's own (generated on a first start).
    generated: bool
    not_after: dt.datetime


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, ``AB:CD:…``."""
    return format_fingerprint(hashlib.sha256(der).digest())


def generated_dir(settings: Settings) -> Path:
    """Where the server keeps its own certificate: ``tls/`` beside the database."""
    return settings.data_dir / "tls"


def load_material(settings: Settings) -> TLSMaterial:
    """The configured certificate, or the generated one (created when absent).
    Raises :exc:`TLSError` when it cannot be read or used."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        material = _inspect(settings.tls_cert, settings.tls_key, generated=False)
    else:
        material = _generated(generated_dir(settings))
    # Build a context once now, so a bad pair fails at start and not at the first client.
    create_context(material)
    return material


def read_material(settings: Settings) -> TLSMaterial:
    """The certificate the server uses, without generating one."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return _inspect(settings.tls_cert, settings.tls_key, generated=False)
    directory = generated_dir(settings)
    if not (directory / CERT_FILE).exists():
        raise TLSError(f"no TLS certificate in {directory} yet: the server generates one on its first start")
    return _inspect(directory / CERT_FILE, directory / KEY_FILE, generated=True)


def create_context(material: TLSMaterial) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.verify_mode = ssl.CERT_NONE  # clients log in with a password, not a certificate

    def no_passphrase() -> bytes:
        raise TLSError(f"{material.key_path}: the private key is encrypted; give the server an unencrypted key")

    try:
        ctx.load_cert_chain(material.cert_path, material.key_path, password=no_passphrase)
    except TLSError:
        raise
    except ssl.SSLError as exc:
        raise TLSError(f"{material.cert_path} and {material.key_path} cannot be used together: "
                       f"{exc.reason or exc}") from None
    except OSError as exc:
        raise TLSError(f"cannot read the TLS certificate or key: {exc}") from None
    return ctx


# ---------------------------------------------------------------------------- reading
def _inspect(cert_path: Path, key_path: Path, *, generated: bool) -> TLSMaterial:
    try:
        pem = cert_path.read_bytes()
    except OSError as exc:
        raise TLSError(f"cannot read the TLS certificate {cert_path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]  # the leaf comes first in a chain
    except ValueError:
        raise TLSError(f"{cert_path} is not a PEM certificate") from None
    if not os.access(key_path, os.R_OK):
        raise TLSError(f"cannot read the TLS private key {key_path}")
    der = cert.public_bytes(serialization.Encoding.DER)
    return TLSMaterial(cert_path, key_path, fingerprint(der), generated, cert.not_valid_after_utc)


def _generated(directory: Path) -> TLSMaterial:
    # Replicas sharing one data volume (docker-compose.ha.yml) start at once:
    # one generates, the others wait and read its certificate, so every replica
    # presents the same one (clients pin it).
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        directory.chmod(0o700)
    with open(directory / ".generate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _generated_locked(directory)


def _generated_locked(directory: Path) -> TLSMaterial:
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if cert_path.exists() and key_path.exists():
        _fix_key_mode(key_path)
        return _inspect(cert_path, key_path, generated=True)
    if cert_path.exists() or key_path.exists():
        # A first start that died half-way: nobody can have pinned a certificate
        # whose key never existed (or the other way round), so start over.
        log.warning("incomplete generated TLS certificate in %s; generating a new one", directory)
    _generate(directory, socket.gethostname())
    material = _inspect(cert_path, key_path, generated=True)
    log.info("generated a self-signed TLS certificate in %s", directory, extra={"event": "tls_generated"})
    return material


def _fix_key_mode(key_path: Path) -> None:
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        key_path.chmod(0o600)
        log.warning("%s was readable by others (mode %o); now 0600", key_path, mode,
                    extra={"event": "tls_key_mode"})


def _generate(directory: Path, hostname: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        directory.chmod(0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for name in dict.fromkeys(n for n in (hostname, _fqdn(hostname)) if n and n != "localhost"):
        with contextlib.suppress(ValueError):  # a name x509 cannot carry is left out
            names.append(x509.DNSName(name.encode("idna").decode("ascii")))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
              x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, (hostname or "localhost")[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chat-server (self-signed)"),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # The key is written 0600 from its first byte (never chmod'ed after the fact),
    # to a temporary name, and renamed into place before the certificate: a crash
    # leaves either nothing or a key without a certificate (regenerated above).
    _write_new(directory / KEY_FILE, key_pem, 0o600)
    _write_new(directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _fqdn(hostname: str) -> str:
    try:
        return socket.getfqdn(hostname)
    except OSError:
        return ""


def _write_new(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def describe(material: TLSMaterial) -> str:
    """The start-up log line's text."""
    origin = "generated, self-signed" if material.generated else "configured"
    return f"TLS certificate {material.cert_path} ({origin}), SHA-256 fingerprint {material.fingerprint}"


def expiry_warning(material: TLSMaterial, now: dt.datetime | None = None) -> str | None:
    now = now or dt.datetime.now(dt.UTC)
    left = material.not_after - now
    if left <= dt.timedelta(0):
        return f"the TLS certificate {material.cert_path} expired on {material.not_after:%Y-%m-%d}"
    if left < EXPIRY_WARNING:
        return f"the TLS certificate {material.cert_path} expires on {material.not_after:%Y-%m-%d}"
    return None
