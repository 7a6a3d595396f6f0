"""chat_server.admission: the server's and each address's connection limits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from chat_server.admission import Admission, Limit, Ticket, Turnaway, client_key
from chatcore.protocol import ErrorCode


@dataclass(eq=False)
class Session:
    user: str | None = None


def admit(adm: Admission, address: str, user: str | None = None) -> Ticket:
    ticket = adm.admit(address)
    assert isinstance(ticket, Ticket), ticket
    ticket.attach(Session(user))
    return ticket


def refused(adm: Admission, address: str) -> Turnaway:
    refusal = adm.admit(address)
    assert isinstance(refusal, Turnaway), refusal
    assert refusal.code is ErrorCode.TOO_MANY_CONNECTIONS
    return refusal


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    (("192.0.2.7", 5050), "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the same client as its IPv4 form
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("?", "?"),
    (None, None),
])
def test_client_key(address, key) -> None:
    assert client_key(address) == key


def test_server_limit_counts_every_address() -> None:
    adm = Admission(3, 10, 10)
    tickets = [admit(adm, f"10.0.0.{i}") for i in range(3)]
    assert refused(adm, "10.0.0.9").limit is Limit.SERVER
    tickets[0].release()
    admit(adm, "10.0.0.9")
    assert len(adm) == 3


def test_a_connection_counts_before_it_has_a_session() -> None:
    # A socket that never sends a byte sits at the gate: it holds its place.
    adm = Admission(100, 10, 2)
    assert isinstance(adm.admit("10.0.0.1"), Ticket)
    assert isinstance(adm.admit("10.0.0.1"), Ticket)
    assert refused(adm, "10.0.0.1").limit is Limit.ADDRESS_UNAUTHENTICATED


def test_unauthenticated_limit_per_address_frees_up_on_login() -> None:
    adm = Admission(100, 10, 2)
    a, _b = admit(adm, "10.0.0.1"), admit(adm, "10.0.0.1")
    refusal = refused(adm, "10.0.0.1")
    assert refusal.limit is Limit.ADDRESS_UNAUTHENTICATED and "not logged in yet" in refusal.message
    admit(adm, "10.0.0.2")  # another address is not affected
    assert a.member is not None
    a.member.user = "alice"  # type: ignore[misc]  # logs in: its place among the unauthenticated is free
    admit(adm, "10.0.0.1")
    assert adm.connections_from("10.0.0.1") == (3, 2)


def test_total_limit_per_address_counts_logged_in_connections_too() -> None:
    adm = Admission(100, 3, 3)
    tickets = [admit(adm, "2001:db8::1", "u"), admit(adm, "2001:db8::2", "u"),
               admit(adm, "2001:db8::3")]
    # Another host of the same /64 is the same client.
    refusal = refused(adm, "2001:db8::ffff")
    assert refusal.limit is Limit.ADDRESS and "your address" in refusal.message
    admit(adm, "2001:db8:0:1::1")  # another /64
    tickets[0].release()
    admit(adm, "2001:db8::4")


def test_release_is_idempotent_and_forgets_empty_addresses() -> None:
    adm = Admission(2000, 5, 5)
    tickets = [admit(adm, f"10.1.{i // 250}.{i % 250}") for i in range(1000)]
    for t in tickets:
        t.release()
        t.release()
    assert len(adm) == 0
    assert adm.connections_from("10.1.0.1") == (0, 0)


def test_a_refused_connection_is_not_counted() -> None:
    adm = Admission(100, 1, 1)
    admit(adm, "10.0.0.1")
    for _ in range(5):
        refused(adm, "10.0.0.1")
    assert len(adm) == 1 and adm.connections_from("10.0.0.1") == (1, 1)


def test_a_ticket_moves_to_the_real_client_address() -> None:
    # Behind a proxy every connection arrives from the proxy's address; the
    # PROXY protocol header then names the client.
    adm = Admission(100, 2, 2)
    first = admit(adm, "10.9.9.9")
    assert adm.move(first, "192.0.2.1") is None
    second = admit(adm, "10.9.9.9")
    assert adm.move(second, "192.0.2.1") is None
    third = admit(adm, "10.9.9.9")
    refusal = adm.move(third, "192.0.2.1")
    assert refusal is not None and refusal.limit is Limit.ADDRESS
    assert adm.connections_from("192.0.2.1") == (2, 2)
    assert adm.connections_from("10.9.9.9") == (1, 1)
    third.release()
    first.release()
    assert adm.connections_from("192.0.2.1") == (1, 1) and len(adm) == 1


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Admission(10, 0, 1)


def test_a_balancers_connection_counts_per_address_once_its_client_is_named() -> None:
    adm = Admission(100, 5, 2)
    # Many connections from the balancer at once: none is held to the
    # balancer's own per-address limits while its header is on the way.
    tickets = []
    for _ in range(10):
        ticket = adm.admit("10.9.9.9", per_address=False)
        assert isinstance(ticket, Ticket)
        tickets.append(ticket)
    assert adm.connections_from("10.9.9.9") == (0, 0) and len(adm) == 10
    assert adm.move(tickets[0], "192.0.2.1") is None
    assert adm.move(tickets[1], "192.0.2.1") is None
    refusal = adm.move(tickets[2], "192.0.2.1")  # a third, not logged in, from that client
    assert refusal is not None and refusal.limit is Limit.ADDRESS_UNAUTHENTICATED
    assert adm.move(tickets[2], "192.0.2.2") is None
    for ticket in tickets:
        ticket.release()
    assert len(adm) == 0 and adm.connections_from("192.0.2.1") == (0, 0)
