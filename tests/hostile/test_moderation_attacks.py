"""
Moderation attacks against a live server (docs/SECURITY.md §3-4, docs/BENCHMARKS.md
"Stalls").

* What a client receives, after every conversion, is clean: the answer is
  masked in the form it is sent (ASCII on v1), and look-alike forms of e-mail
  addresses, phone numbers and banned words never reach either protocol.
* The user's own message is moderated through the same forms.
* One huge answer or message does not stall the other sessions: their PING
  round trips stay short while it is processed. The bound asserted here is
  generous (the figures are measured in bench/holdback.py, docs/BENCHMARKS.md);
  before the fix these attacks stalled every other session for 0.8 s to 4.5 s.
"""

from __future__ import annotations

import gc
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server.moderation import BannedWords, mask_answer
from chatcore.privacy import find_personal_data
from chatcore.protocol import AnswerEnd, Error, Notice, NoticeKind, Ping, Pong
from ollama_standin import say

from tests.fixtures.server import PASSWORD, USER, LiveServer, make_server_env
from tests.fixtures.standin import StandIn
from tests.fixtures.v1client import OriginalV1Client, answer_text
from tests.server.clients import V2Client, logged_in

from ._support import Guard

pytestmark = pytest.mark.hostile

BANNED = BannedWords.from_file(Path(__file__).resolve().parents[2] / "cuss_words.txt")

#: Issue 10 §3: each reached the original client unmasked once transliterated.
LOOKALIKE_ANSWER = (
    "Write to john.smith@example\u3002com or call "
    "\u277e\u277d\u277c\u277b\u277a \u2779\u2778\u2777\u2776\u24ff, "
    "you \ua730\u1d1c\u1d04\u1d0b, and \U0001f155\U0001f164\U0001f152\U0001f15a too. Done."
)


def clean(text: str) -> bool:
    return not find_personal_data(text) and not BANNED.contains(text)


def answer_over(guard: Guard, protocol: str, text: str) -> str:
    """The stand-in says ``text``; what the client reads of it, whole, over
    the original client's v1 or over v2."""
    if protocol == "v1":
        with OriginalV1Client(guard.server.port) as v1:
            v1.login(USER, PASSWORD)
            chunks, how = v1.answer(say(text))
        assert how == "terminator"
        return answer_text(chunks)
    client = logged_in(guard.server.port, USER, PASSWORD)
    reply = client.chat(say(text))
    client.close()
    assert isinstance(reply.end, AnswerEnd)
    return reply.text


def test_masking_before_transliteration_attack_v1(guard: Guard) -> None:
    with OriginalV1Client(guard.server.port) as client:
        client.login(USER, PASSWORD)
        chunks, how = client.answer(say(LOOKALIKE_ANSWER))
    text = answer_text(chunks)
    assert how == "terminator"
    assert "john.smith" not in text and "example.com" not in text
    assert "98765" not in text and "43210" not in text
    assert "FUCK" not in text.upper()
    assert "[email removed]" in text and "[phone removed]" in text
    assert clean(text), text
    guard.check()


def test_masking_of_lookalike_forms_attack_v2(guard: Guard) -> None:
    client = logged_in(guard.server.port, USER, PASSWORD)
    reply = client.chat(say(LOOKALIKE_ANSWER))
    client.close()
    text = reply.text
    assert isinstance(reply.end, AnswerEnd)
    assert "\ua730\u1d1c\u1d04\u1d0b" not in text and "\u277e" not in text and "\u3002com" not in text
    assert "[email removed]" in text and "[phone removed]" in text
    assert clean(text), text
    assert any(n.kind is NoticeKind.ANSWER_MASKED for n in reply.notices)
    guard.check()


def assert_refused(guard: Guard, text: str, kind: NoticeKind) -> None:
    """A user's message ``text`` is refused with one notice of ``kind``, and
    nobody else's session stalled meanwhile."""
    client = logged_in(guard.server.port, USER, PASSWORD)
    reply = client.chat(text)
    client.close()
    assert isinstance(reply.error, Error)
    assert [n.kind for n in reply.notices if isinstance(n, Notice)] == [kind]
    guard.check()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("you \ua730\u1d1c\u1d04\u1d0b", NoticeKind.MODERATION),
        ("you f\u3164u\u3164c\u3164k", NoticeKind.MODERATION),
        ("\U0001f155\U0001f164\U0001f152\U0001f15a off", NoticeKind.MODERATION),
        ("mail john.smith@example\u3002com", NoticeKind.PRIVACY),
        ("mail john dot smith at example dot com", NoticeKind.PRIVACY),
        ("call \u277e\u277d\u277c\u277b\u277a \u2779\u2778\u2777\u2776\u24ff", NoticeKind.PRIVACY),
        ("call (212) 736-5000", NoticeKind.PRIVACY),
    ],
)
def test_users_message_in_lookalike_form_attack_is_refused(guard: Guard, text: str, kind: NoticeKind) -> None:
    assert_refused(guard, text, kind)


#: Round two: forms that still got through (docs/SECURITY.md §3, §4), one of each class.
EVASIONS_ANSWER = (
    "Write to o'brien@example.ie, john.smith=40example.com, raj&amp;#64;gmail.com, "
    "juan arroba ejemplo punto com, raj at the rate gmail dot com, raj\u00abat\u00bbgmail\u00b7com, "
    "john.smith@\nexample.com or call +91\u221298765\u221243210, "
    "9\ufe0f\u20e38\ufe0f\u20e37\ufe0f\u20e36\ufe0f\u20e35\ufe0f\u20e3 4\ufe0f\u20e33\ufe0f\u20e32\ufe0f\u20e3"
    "1\ufe0f\u20e30\ufe0f\u20e3, 9\u03328\u03327\u03326\u03325\u0332 4\u03323\u03322\u03321\u03320\u0332, "
    "+91 9-8-7-6-5-4-3-2-1-0. You \u017fuck, fu\u03f2k, sh\u02dbt, f|u|c|k, s+h+i+t, fu(k, 8itch and fvck. "
    "Displayed backwards: \u202ekcuf\u202c. Done."
)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_second_round_evasions_in_the_answer_attack_are_masked(guard: Guard, protocol: str) -> None:
    text = answer_over(guard, protocol, EVASIONS_ANSWER)
    for leaked in ("brien", "john", "juan", "raj", "98765", "43210", "\u20e3", "\u0332", "fvck", "8itch"):
        assert leaked not in text, (leaked, text)
    assert text.count("[email removed]") == 7 and text.count("[phone removed]") == 4, text
    assert text.startswith("Write to ") and text.endswith(" Done."), text
    assert "\u202e" not in text  # no right-to-left override: "kcuf" reads as written
    assert clean(text), text
    guard.check()


def _tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("you \u017fuck", NoticeKind.MODERATION),
        ("you f|u|c|k", NoticeKind.MODERATION),
        ("you fu(k and s#it", NoticeKind.MODERATION),
        ("hello " + _tags("fuck you"), NoticeKind.MODERATION),  # ASCII smuggling
        ("you \u202ekcuf\u202c", NoticeKind.MODERATION),  # displayed right to left
        ("hi" + _tags(" call +91 98765 43210"), NoticeKind.PRIVACY),
        ("mail o'brien=40example.ie", NoticeKind.PRIVACY),
        ("mail raj at the rate gmail dot com", NoticeKind.PRIVACY),
        ("mail juan arroba ejemplo punto com", NoticeKind.PRIVACY),
        ("call +91\u221298765\u221243210", NoticeKind.PRIVACY),
        ("call 9\ufe0f\u20e38\ufe0f\u20e37\ufe0f\u20e36\ufe0f\u20e35\ufe0f\u20e3 "
         "4\ufe0f\u20e33\ufe0f\u20e32\ufe0f\u20e31\ufe0f\u20e30\ufe0f\u20e3", NoticeKind.PRIVACY),
    ],
)
def test_second_round_evasions_in_a_message_attack_are_refused(guard: Guard, text: str, kind: NoticeKind) -> None:
    assert_refused(guard, text, kind)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("call 98765_43210", NoticeKind.PRIVACY),
        ("call 212|736|5000", NoticeKind.PRIVACY),
        ("call 98765:43210 or later", NoticeKind.PRIVACY),
        ("call &#57;&#56;&#55;&#54;&#53;&#52;&#51;&#50;&#49;&#48;", NoticeKind.PRIVACY),
        ("call %39%38%37%36%35 43210", NoticeKind.PRIVACY),
        ("call 98765&nbsp;43210", NoticeKind.PRIVACY),
        ("mail j o h n @ e x a m p l e . c o m", NoticeKind.PRIVACY),
        ("mail j.o.h.n at e x a m p l e dot com", NoticeKind.PRIVACY),
        ("you fu¢k", NoticeKind.MODERATION),
        ("you §hit", NoticeKind.MODERATION),
    ],
)
def test_third_round_evasions_in_a_message_attack_are_refused(guard: Guard, text: str, kind: NoticeKind) -> None:
    assert_refused(guard, text, kind)


#: Round four (docs/SECURITY.md §3, §4): one form of each class closed in it.
FOURTH_ROUND_MESSAGES = [
    ("you s|-|it and fu|<", NoticeKind.MODERATION),  # multi-character leet
    ("you phuck off", NoticeKind.MODERATION),
    ("you wh()re", NoticeKind.MODERATION),
    ("you \u0448ank", NoticeKind.MODERATION),  # a Cyrillic leet letter in a Latin word
    ("you f\u0438ck", NoticeKind.MODERATION),
    ("call nine eight seven six five four three two one zero", NoticeKind.PRIVACY),  # digits as words
    ("call double nine one two three four five six seven eight", NoticeKind.PRIVACY),
    ("llama al nueve ocho siete seis cinco cuatro tres dos uno cero", NoticeKind.PRIVACY),
    ("call 987,654,3210", NoticeKind.PRIVACY),  # a comma between groups
    ("call 98765,43210", NoticeKind.PRIVACY),
    ("mail j  o  h  n @ example.com", NoticeKind.PRIVACY),  # letters two spaces apart
    ("mail j o hn@example.com", NoticeKind.PRIVACY),
]


@pytest.mark.parametrize(("text", "kind"), FOURTH_ROUND_MESSAGES, ids=[t for t, _ in FOURTH_ROUND_MESSAGES])
def test_fourth_round_evasions_in_a_message_attack_are_refused(guard: Guard, text: str, kind: NoticeKind) -> None:
    assert_refused(guard, text, kind)


FOURTH_ROUND_ANSWER = (
    "Sure: you s|-|it, |\\/|oron, \u0448anker. Call nine eight seven six five four three two one zero, "
    "or 987,654,3210, or mail j  o  h  n @ example.com. Done."
)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_fourth_round_evasions_in_the_answer_attack_are_masked(guard: Guard, protocol: str) -> None:
    text = answer_over(guard, protocol, FOURTH_ROUND_ANSWER)
    for leaked in ("|-|", "nine eight", "987,654", "j  o", "example.com"):
        assert leaked not in text, (leaked, text)
    assert text.count("[phone removed]") == 2 and text.count("[email removed]") == 1, text
    assert text.startswith("Sure: you ") and text.endswith(" Done."), text
    assert clean(text), text
    guard.check()


#: Prose full of number words, code constants and Russian/Greek text: nothing to mask.
FOURTH_ROUND_INNOCENT = (
    "Add two eggs, one cup of flour and three spoons of sugar; bake twenty-five to thirty minutes, "
    "one or two at a time. Count: one two three four five six seven eight nine ten. "
    "MAX = 2147483647; x = 4294967295; total 1,234,567 and 12,34,567; list 1,2,3. "
    "\u041c\u0430\u0439\u043a \u0438 \u0448\u0430\u043d\u0441; "
    "\u03c6\u03c9\u03c4\u03b9\u03ac. Graph of the phone, print() and savvy. Done."
)


@pytest.mark.parametrize("protocol", ["v2"])
def test_fourth_round_innocent_answer_attack_is_not_masked(guard: Guard, protocol: str) -> None:
    assert answer_over(guard, protocol, FOURTH_ROUND_INNOCENT) == FOURTH_ROUND_INNOCENT
    client = logged_in(guard.server.port, USER, PASSWORD)
    asked = client.chat(FOURTH_ROUND_INNOCENT)
    client.close()
    assert isinstance(asked.end, AnswerEnd), asked.events
    guard.check()


#: Number-heavy text a model writes: none of it is personal data.
NUMBERS_ANSWER = (
    "Counting: 1 2 3 4 5 6 7 8 9 10. Squares: 1 4 9 16 25 36 49 64 81 100. "
    "Primes: 2 3 5 7 11 13 17 19 23 29 31. Years 2020 2021 2022 2023 2024. "
    "Departures 08:15 08:45 09:15 09:45. 20731 * 30111 = 624231141 and f(52) == 694725402. "
    "int max 2_147_483_647; meet at 5 dot com. Done."
)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_number_heavy_answer_attack_is_not_masked(guard: Guard, protocol: str) -> None:
    assert answer_over(guard, protocol, NUMBERS_ANSWER) == NUMBERS_ANSWER
    guard.check()


def test_names_and_clitics_that_looked_like_stretched_words_attack_is_answered(guard: Guard) -> None:
    innocent = "Randy Shilts met Mr Blitch; the assess's weight? C++ and Q&A, an A+ grade. Hello! Wow?"
    client = logged_in(guard.server.port, USER, PASSWORD)
    asked = client.chat(innocent)
    answered = client.chat(say(innocent))
    client.close()
    assert isinstance(asked.end, AnswerEnd), asked.events
    assert answered.text == innocent
    guard.check()


def test_innocent_words_attack_is_answered(guard: Guard) -> None:
    client = logged_in(guard.server.port, USER, PASSWORD)
    reply = client.chat("We need to re-assess the risk; who're the Shiite scholars? Er a\u00df einen Apfel.")
    client.close()
    assert isinstance(reply.end, AnswerEnd), reply.events
    guard.check()


# --------------------------------------------------------------------------- stalls
class Pinger:
    """A second session that pings the server back to back and keeps the round trips."""

    def __init__(self, port: int) -> None:
        self.client = logged_in(port, USER, PASSWORD)
        self.rtts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            t0 = time.perf_counter()
            self.client.send(Ping(str(n)))
            while True:
                event = self.client.next_event(timeout=30)
                if isinstance(event, Pong) and event.nonce == str(n):
                    break
            self.rtts.append(time.perf_counter() - t0)
            time.sleep(0.005)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that accepts messages of up to 2 MiB (the answer is the message)."""
    standin = StandIn().start()
    d = tmp_path_factory.mktemp("moderation-stall")
    server = LiveServer(
        env=make_server_env(d, standin.url, CHAT_RATE_LIMIT="0",
                            CHAT_MAX_FRAME_BYTES=str(2 * 2**20)),
        log_path=d / "server.log", standin=standin,
    )
    server.add_user(USER, PASSWORD)
    server.start()
    yield server
    server.stop()
    standin.stop()


def _attack(server: LiveServer, text: str) -> tuple[list[float], object]:
    # The round trips are measured in this process, which also decodes the
    # attack's megabyte: a full garbage collection of the test process (large
    # after a whole suite) would pause the pinger thread for seconds and be
    # taken for a server stall. Collect first and keep the collector off meanwhile.
    gc.collect()
    gc.disable()
    try:
        with Pinger(server.port) as pinger:
            time.sleep(0.3)
            client = V2Client(server.port, timeout=120)
            client.login(USER, PASSWORD)
            reply = client.chat(text)
            client.close()
            time.sleep(0.2)
    finally:
        gc.enable()
    return pinger.rtts, reply


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_huge_answer_without_a_safe_cut_does_not_stall_other_sessions(big_server: LiveServer) -> None:
    rtts, reply = _attack(big_server, say("9" * 1_000_000))
    assert isinstance(reply.end, AnswerEnd)  # type: ignore[attr-defined]
    assert len(reply.text) == 1_000_000  # type: ignore[attr-defined]
    assert len(rtts) > 20
    # Generous (noisy shared machines); before the fix: one stall of seconds.
    assert max(rtts) < 1.5, (max(rtts), statistics.median(rtts))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_largest_message_of_phone_fragments_does_not_stall_other_sessions(big_server: LiveServer) -> None:
    rtts, reply = _attack(big_server, "+1 234 " * 9362)  # 64 KiB
    assert isinstance(reply.end, AnswerEnd), reply.events  # type: ignore[attr-defined]
    assert len(rtts) > 5
    assert max(rtts) < 1.5, (max(rtts), statistics.median(rtts))


def _digit_groups(count: int) -> str:
    rng = random.Random(3)
    return " ".join(str(rng.randrange(100, 1000)) for _ in range(count))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_largest_message_of_random_digit_groups_does_not_stall_other_sessions(big_server: LiveServer) -> None:
    # The phone detector's costliest text: seconds of checks for 64 KiB (in
    # the moderation worker, not in a thread that holds the server's GIL).
    rtts, reply = _attack(big_server, _digit_groups(16_383))
    # Some of the groups read as phone numbers: refused, after the whole check.
    assert any(isinstance(e, Notice) and e.kind is NoticeKind.PRIVACY
               for e in reply.events), reply.events  # type: ignore[attr-defined]
    assert len(rtts) > 5
    assert max(rtts) < 1.5, (max(rtts), statistics.median(rtts))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_answer_of_random_digit_groups_does_not_stall_other_sessions(big_server: LiveServer) -> None:
    text = _digit_groups(25_000)  # 100 KB
    rtts, reply = _attack(big_server, say(text))
    assert isinstance(reply.end, AnswerEnd)  # type: ignore[attr-defined]
    # Masked exactly (steps in the worker and on the loop alike).
    assert reply.text == mask_answer(text, BANNED)  # type: ignore[attr-defined]
    assert len(rtts) > 20
    assert max(rtts) < 1.5, (max(rtts), statistics.median(rtts))
