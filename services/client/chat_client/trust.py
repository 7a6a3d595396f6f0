"""
chat_client.trust
~~~~~~~~~~~~~~~~~

Which server certificates the client trusts without a certificate authority:
SHA-256 fingerprints, and the known-hosts file that remembers them per host
and port (the way SSH's ``known_hosts`` remembers host keys).

The file is ``$XDG_CONFIG_HOME/chat-client/known_hosts`` (default
``~/.config/chat-client/known_hosts``), mode 0600, one server per line::

    # comment
    localhost:5050 SHA256:AB:CD:…:EF
    [::1]:5050 SHA256:01:23:…:89

A fingerprint is the SHA-256 of the certificate's DER bytes, written as 32
colon-separated hex pairs (what ``openssl x509 -fingerprint -sha256`` and
``chat-server fingerprint`` print). Input is accepted with or without the
``SHA256:`` prefix, colons, or upper case.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KnownHost",
    "KnownHosts",
    "default_known_hosts_path",
    "fingerprint_of",
    "host_key",
    "parse_fingerprint",
]

_HEX = re.compile(r"[0-9A-F]{64}")


def fingerprint_of(der: bytes) -> str:
    """``AB:CD:…`` for a DER certificate."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def parse_fingerprint(text: str) -> str:
    """Normalise a SHA-256 fingerprint to ``AB:CD:…``; ValueError if it is not one."""
    value = text.strip().upper()
    value = value.removeprefix("SHA256:").removeprefix("SHA-256:").removeprefix("SHA256=")
    compact = value.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(compact):
        raise ValueError("expected a SHA-256 fingerprint: 64 hex digits, colons optional")
    return ":".join(compact[i:i + 2] for i in range(0, 64, 2))


def host_key(host: str, port: int) -> str:
    """How a server is named in the file: ``host:port``, ``[v6]:port``."""
    host = host.strip().lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def default_known_hosts_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chat-client" / "known_hosts"


@dataclass(frozen=True)
class KnownHost:
    fingerprint: str
    line: int


class KnownHosts:
    """The known-hosts file. Reads it on every lookup (it is tiny), so two
    clients that run at once see each other's additions."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, host: str, port: int) -> KnownHost | None:
        key = host_key(host, port)
        for number, name, fingerprint in self._entries():
            if name == key:
                return KnownHost(fingerprint, number)
        return None

    def remember(self, host: str, port: int, fingerprint: str) -> None:
        """Add ``host:port`` (replacing an older line for it)."""
        self.forget(host, port)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.chmod(0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{host_key(host, port)} SHA256:{parse_fingerprint(fingerprint)}\n")

    def forget(self, host: str, port: int) -> bool:
        """Remove ``host:port``; False if it was not there."""
        key = host_key(host, port)
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return False
        kept = [line for line in lines if _name(line) != key]
        if len(kept) == len(lines):
            return False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)
        return True

    def _entries(self) -> list[tuple[int, str, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if len(parts) < 2 or parts[0].startswith("#"):
                continue
            try:
                out.append((number, parts[0].lower(), parse_fingerprint(parts[1])))
            except ValueError:
                continue  # a line we cannot read never matches (and so never trusts)
        return out


def _name(line: str) -> str | None:
    parts = line.split()
    return parts[0].lower() if parts and not parts[0].startswith("#") else None
