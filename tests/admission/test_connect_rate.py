"""chat_server.admission.ConnectRate: new connections per address, a token
bucket per client key, and the few refusals a second that get a reply. A clock
the test moves (no sleeping, no timing)."""

from __future__ import annotations

import pytest
from chat_server.admission import (
    RATE_REPLIES_PER_SECOND,
    RATE_REPLY_BURST,
    Admission,
    ConnectRate,
    Limit,
    Ticket,
    Turnaway,
)
from chatcore.protocol import ErrorCode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_comes_in_then_the_rate_applies() -> None:
    clock = Clock()
    rate = ConnectRate(2, 5, clock=clock)
    assert all(rate.take("a") for _ in range(5))
    assert not rate.take("a")
    clock.now += 0.5  # one token back at 2 a second
    assert rate.take("a")
    assert not rate.take("a")
    clock.now += 10  # refilled to the burst, not beyond
    assert sum(rate.take("a") for _ in range(20)) == 5


def test_each_address_has_its_own_bucket() -> None:
    rate = ConnectRate(1, 2, clock=Clock())
    assert rate.take("a") and rate.take("a") and not rate.take("a")
    assert rate.take("b") and rate.take("b")


def test_only_a_few_refusals_a_second_get_a_reply_then_the_rest_is_shed() -> None:
    clock = Clock()
    rate = ConnectRate(1, 1, clock=clock)
    assert rate.take("a") and not rate.take("a")
    assert not rate.exhausted("a")
    assert [rate.reply("a") for _ in range(RATE_REPLY_BURST + 2)] == (
        [True] * RATE_REPLY_BURST + [False, False])
    assert rate.exhausted("a")  # over the rate, replies used up: dropped as accepted
    clock.now += 1 / RATE_REPLIES_PER_SECOND
    assert rate.reply("a")
    assert not rate.exhausted("b")  # an address never seen is not shed


def test_a_rate_of_zero_is_no_limit() -> None:
    rate = ConnectRate(0, 1, clock=Clock())
    assert all(rate.take("a") for _ in range(10_000))
    assert not rate.exhausted("a")


def test_refilled_addresses_are_forgotten() -> None:
    clock = Clock()
    rate = ConnectRate(10, 10, clock=clock)
    for i in range(5000):
        rate.take(f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.01  # 50 s in all: the early ones have long refilled
    assert len(rate) < 3000


@pytest.mark.parametrize(("r", "burst"), [(-1, 5), (1, 0)])
def test_bad_settings_are_refused(r: float, burst: int) -> None:
    with pytest.raises(ValueError):
        ConnectRate(r, burst)


def test_admission_refuses_over_the_rate_with_too_many_connections() -> None:
    clock = Clock()
    adm = Admission(100, 100, 100, connect_rate=1, connect_burst=2, clock=clock)
    tickets = [adm.admit("192.0.2.7") for _ in range(2)]
    assert all(isinstance(t, Ticket) for t in tickets)
    refusal = adm.admit("192.0.2.7")
    assert isinstance(refusal, Turnaway)
    assert refusal.code is ErrorCode.TOO_MANY_CONNECTIONS and refusal.limit is Limit.ADDRESS_RATE
    assert refusal.reply and "new connections" in refusal.message
    assert len(adm) == 2  # a refused connection is not counted
    # After the replies, the rest is refused without one, and shed as accepted.
    replies = [r.reply for r in (adm.admit("192.0.2.7") for _ in range(RATE_REPLY_BURST + 1))]
    assert replies.count(True) == RATE_REPLY_BURST - 1 and replies[-1] is False
    assert adm.shed("192.0.2.7") and not adm.shed("192.0.2.8")
    # Another address is not affected; an IPv6 client counts by its /64.
    assert isinstance(adm.admit("192.0.2.8"), Ticket)
    assert isinstance(adm.admit("2001:db8::1"), Ticket)
    assert isinstance(adm.admit("2001:db8::2"), Ticket)
    assert isinstance(adm.admit("2001:db8::3"), Turnaway)
    clock.now += 1
    assert isinstance(adm.admit("192.0.2.7"), Ticket)


def test_behind_a_balancer_the_rate_applies_to_the_named_client() -> None:
    adm = Admission(100, 100, 100, connect_rate=1, connect_burst=1, clock=Clock())
    # The balancer's connections are not counted per address until moved.
    balancer = [adm.admit("10.0.0.1", per_address=False) for _ in range(5)]
    assert all(isinstance(t, Ticket) for t in balancer)
    assert adm.move(balancer[0], "192.0.2.7") is None  # type: ignore[arg-type]
    refusal = adm.move(balancer[1], "192.0.2.7")  # type: ignore[arg-type]
    assert refusal is not None and refusal.limit is Limit.ADDRESS_RATE
    assert adm.move(balancer[2], "192.0.2.9") is None  # type: ignore[arg-type]
