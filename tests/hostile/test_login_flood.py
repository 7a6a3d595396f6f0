"""
Logins as a CPU sink, against a live server with the production Argon2
parameters (docs/SECURITY.md §13).

A password check costs tens of milliseconds of a core, so the server checks a
few at a time. Wrong passwords from many addresses, each within its own
address's allowance (docs/SECURITY.md §6), used to queue first come, first
served: the owner of an account logging in meanwhile waited behind every one
of them (seconds; with a steady flood, up to the login deadline). What is
measured here is not time but order, from the server's log: how many of the
attackers' guesses were checked between the owner's login arriving and its
success. From an address the owner logged in from before, at most the ones
already being checked; from a new address, at most one per attacking address
(they take turns), not the whole line.
"""


from __future__ import annotations

import secrets
import socket
import threading
import time

from ._support import parse_v2, raw, v2_frame

OWNER, OWNER_PASSWORD = "owner", "the owner's own passphrase"
#: The production Argon2id parameters (chat_server.config.Settings defaults).
TIME_COST, MEMORY_KIB = 2, 19456
#: The login deadline of this server (seconds; the production default): the
#: whole flood is checked well within it.
AUTH_TIMEOUT = 10.0
#: Addresses the flood comes from, each sending its allowance of wrong passwords.
ADDRESSES = 20
KNOWN, NEW = "127.0.0.1", "127.0.3.1"
#: Wrong passwords an address may send before its throttle starts (docs/SECURITY.md §6).
ADDRESS_ALLOWANCE = 10
HASH_SLOTS = 2


def _hello(port: int, source: str) -> socket.socket:
    """A v2 connection from ``source`` that has had the server's HELLO."""
    sock = raw(port, timeout=AUTH_TIMEOUT + 10, source=source)
    sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "flood/1"}))
    data = b""
    while not parse_v2(data):
        chunk = sock.recv(65536)
        assert chunk, "closed before its HELLO"
        data += chunk
    assert parse_v2(data)[0][0] == "HELLO", data
    return sock


def _auth(sock: socket.socket, user: str, password: str) -> str:
    """'ok', 'refused', or the ERROR code the login ended with."""
    try:
        sock.sendall(v2_frame("AUTH", {"user": user, "password": password}))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return "closed"
            data += chunk
            for kind, body in parse_v2(data):
                if kind == "AUTH_RESULT":
                    return "ok" if body["ok"] else "refused"
                if kind == "ERROR":
                    return str(body["code"])
    finally:
        sock.close()


def _login(port: int, source: str, user: str, password: str) -> str:
    return _auth(_hello(port, source), user, password)


def _owner_waited_behind(log: str, start: int, source: str) -> int:
    """Guesses from the flood's addresses checked after log offset ``start``
    and before the owner's login from ``source`` succeeded."""
    checked = 0
    for line in log[start:].splitlines():
        if "login ok" in line and f"user={OWNER} " in line and f"address={source} " in line:
            return checked
        if "login failed" in line and "address=127.0.4." in line:
            checked += 1
    raise AssertionError(f"no successful login of the owner from {source} in the log")


def test_a_flood_of_wrong_passwords_from_many_addresses_does_not_keep_the_owner_out(
        server_factory) -> None:
    server = server_factory(users={OWNER: OWNER_PASSWORD},
                            CHAT_ARGON2_TIME_COST=str(TIME_COST),
                            CHAT_ARGON2_MEMORY_KIB=str(MEMORY_KIB),
                            CHAT_AUTH_TIMEOUT=str(AUTH_TIMEOUT))
    # The owner's usual address, before the attack.
    assert _login(server.port, KNOWN, OWNER, OWNER_PASSWORD) == "ok"

    flood: list[socket.socket] = []
    try:
        for a in range(ADDRESSES):
            for _ in range(ADDRESS_ALLOWANCE):
                sock = raw(server.port, source=f"127.0.4.{1 + a}")
                sock.sendall(v2_frame("HELLO", {"versions": [2], "agent": "flood/1"})
                             + v2_frame("AUTH", {"user": f"nobody-{secrets.token_hex(4)}",
                                                 "password": secrets.token_hex(8)}))
                flood.append(sock)
        time.sleep(0.3)  # every guess is read and waiting for a slot

        # The owner, now: from the known address and from a new one at once
        # (connected first, so that what is counted is the wait for a slot).
        connections = {source: _hello(server.port, source) for source in (KNOWN, NEW)}
        start = len(server.log_text())
        outcomes: dict[str, str] = {}

        def owner_from(source: str) -> None:
            outcomes[source] = _auth(connections[source], OWNER, OWNER_PASSWORD)

        owners = [threading.Thread(target=owner_from, args=(source,)) for source in (KNOWN, NEW)]
        for t in owners:
            t.start()
        for t in owners:
            t.join(AUTH_TIMEOUT + 20)
        assert outcomes == {KNOWN: "ok", NEW: "ok"}, outcomes
        log = server.log_text()
        # Known: only what was being checked when it came. New: one turn of
        # every attacking address. (First come, first served, both waited
        # behind the whole line: ~190 of the 200.) The slack is for guesses
        # checked while the owner's AUTH was on its way on a busy machine.
        known = _owner_waited_behind(log, start, KNOWN)
        new = _owner_waited_behind(log, start, NEW)
        assert known <= HASH_SLOTS + 8, (known, new)
        assert new <= ADDRESSES + HASH_SLOTS + 8, (known, new)
    finally:
        for sock in flood:
            sock.close()
    assert server.proc is not None and server.proc.poll() is None
    assert "Traceback" not in server.log_text()
