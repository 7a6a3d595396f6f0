"""Number-heavy answers a model writes (tests/privacy/innocent_corpus.py:
multiplication tables, sequences, timetables, code, amounts, dates,
versions, arithmetic) hold no personal data: not one finding in the corpus.
Before the third round 220 of its 1,920 documents had one; with the fourth
round's number-word prose, program constants and Russian/Greek text, 87 of
2,610 had one on the code before that round (docs/SECURITY.md §3)."""

from __future__ import annotations

import pytest
from chatcore.privacy import find_personal_data, mask_personal_data

from tests.privacy.innocent_corpus import corpus

DOCS = corpus()


def test_the_corpus_is_large_and_covers_every_category():
    assert len(DOCS) >= 1500
    for marker in ["| 7 | 14 |", "Primes:", "Departures:", "curl http://", "Revenue", "ISBN 978-", "pi = ",
                   "Cubes:", " * ", " = "]:
        assert any(marker in d for d in DOCS), marker


def test_no_number_heavy_answer_holds_a_phone_number_or_an_address():
    found = [(d, [p.text for p in find_personal_data(d)]) for d in DOCS]
    assert [f for f in found if f[1]] == []


@pytest.mark.parametrize("joiner", ["\n", " ", "\n\n"])
def test_the_corpus_as_one_long_answer_comes_out_unmasked(joiner):
    text = joiner.join(DOCS[::7])
    assert mask_personal_data(text) == text
