"""
chat_client.errors
~~~~~~~~~~~~~~~~~~

Exit codes and the exceptions that carry them.

Every failure the client reports ends up as one :class:`ClientError` whose
``str()`` is a single line (scripts read it from stderr) and whose
``exit_code`` is documented in ``chat-client --help``.
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthFailed",
    "ClientError",
    "ConnectionLost",
    "ExitCode",
    "PrivacyRefused",
    "Refused",
    "ServerError",
    "TokenRefused",
    "TrustError",
    "UsageError",
]


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2
    AUTH = 3
    REFUSED = 4
    SERVER = 5
    CONNECTION = 6
    TRUST = 7
    INTERRUPTED = 130


#: The text of ``chat-client --help`` that documents the codes above.
EXIT_CODES_HELP = """\
exit codes:
  0  success (one-shot: the whole answer was printed; interactive: /quit or Ctrl-D)
  2  usage or configuration error (bad option, missing user or password without a TTY)
  3  authentication failed (bad user name or password, or too many attempts; also
     when a reconnect's session token is refused and there is no terminal to ask
     for the password, and when the server ends the session because the account
     was disabled or removed, or its password changed)
  4  refused: the message contains personal data (checked before sending) or the
     server's moderation refused it
  5  server or model error (the answer could not be produced)
  6  connection failed or lost (server unreachable, closed or killed mid-answer);
     the interactive client first tries to reconnect (--reconnect-attempts)
  7  the server's TLS certificate is not trusted (unknown, changed since it was
     remembered, or not the one --fingerprint names); nothing was sent to it
  130 interrupted (Ctrl-C outside an answer, e.g. at the password prompt)"""


def one_line(text: str) -> str:
    """Collapse ``text`` to one line: scripts read the reason with ``head -n1``."""
    return " ".join(text.split())


class ClientError(Exception):
    """A failure to report with a one-line reason and an exit code."""

    exit_code: ExitCode = ExitCode.SERVER
    #: Print as ``chat-client: <reason>``; False prints the reason verbatim.
    prefixed: bool = True

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(one_line(message))
        #: Lines printed after the one-line reason (how to fix it, for a person).
        self.details = details


class UsageError(ClientError):
    exit_code = ExitCode.USAGE


class AuthFailed(ClientError):
    exit_code = ExitCode.AUTH


class TokenRefused(AuthFailed):
    """A reconnect's session token was refused (expired, or the password was
    changed, or the user disabled): only the password logs in again."""


class Refused(ClientError):
    exit_code = ExitCode.REFUSED


class PrivacyRefused(Refused):
    """The client-side privacy check refused: the original notice, verbatim."""

    prefixed = False


class ServerError(ClientError):
    exit_code = ExitCode.SERVER


class ConnectionLost(ClientError):
    exit_code = ExitCode.CONNECTION


class TrustError(ClientError):
    """The server's certificate is not trusted; nothing was sent to it."""

    exit_code = ExitCode.TRUST
