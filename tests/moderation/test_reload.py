"""WatchedBannedWords: the list follows the file without a restart."""

from __future__ import annotations

import os

import pytest
from chat_server.moderation import AnswerFilter, WatchedBannedWords


def bump_mtime(path, seconds: int = 5) -> None:
    # Make the change visible even on file systems with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


@pytest.fixture
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# test list\nabcxyz\n", encoding="utf-8")
    return path


def test_a_changed_file_is_reloaded(words_file):
    watched = WatchedBannedWords(words_file, min_interval=0)
    assert watched.contains("abcxyz")
    assert not watched.contains("zorblax")

    words_file.write_text("zorblax\n", encoding="utf-8")
    bump_mtime(words_file)
    assert watched.contains("ZORBLAX!")
    assert not watched.contains("abcxyz")
    assert watched.reloads == 1
    assert watched.last_error is None


def test_same_size_rewrite_is_noticed_through_mtime(words_file):
    watched = WatchedBannedWords(words_file, min_interval=0)
    words_file.write_text("# test list\nqwerty\n", encoding="utf-8")  # same length
    bump_mtime(words_file)
    assert watched.contains("qwerty")
    assert watched.mask("a qwerty b") == "a ****** b"
    assert watched.find("qwerty") == [(0, 6)]


def test_checks_are_rate_limited(words_file):
    watched = WatchedBannedWords(words_file, min_interval=3600)
    words_file.write_text("zorblax\n", encoding="utf-8")
    bump_mtime(words_file)
    # Within the interval the file is not looked at again.
    assert not watched.contains("zorblax")
    watched.min_interval = 0
    assert watched.contains("zorblax")


def test_a_missing_file_at_reload_keeps_the_old_list(words_file):
    watched = WatchedBannedWords(words_file, min_interval=0)
    words_file.unlink()
    assert watched.contains("abcxyz")
    assert watched.last_error is not None and "words.txt" in watched.last_error

    words_file.write_text("zorblax\n", encoding="utf-8")
    bump_mtime(words_file, 10)
    assert watched.contains("zorblax")
    assert watched.last_error is None


def test_an_undecodable_file_keeps_the_old_list(words_file):
    watched = WatchedBannedWords(words_file, min_interval=0)
    words_file.write_bytes(b"\xff\xfe\xfa not utf-8\n")
    bump_mtime(words_file)
    assert watched.contains("abcxyz")
    assert watched.last_error is not None


def test_a_missing_file_at_start_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="banned-words file not found"):
        WatchedBannedWords(tmp_path / "missing.txt")


def test_an_answer_keeps_the_list_it_started_with(words_file):
    watched = WatchedBannedWords(words_file, min_interval=0)
    filt = AnswerFilter(watched)
    head = filt.feed("one abcxyz two ")
    words_file.write_text("two\n", encoding="utf-8")
    bump_mtime(words_file)
    rest = filt.feed("three two\n") + filt.finish()
    assert head + rest == "one ****** two three two\n"
    # New answers use the new list.
    filt = AnswerFilter(watched)
    assert filt.feed("one abcxyz two\n") + filt.finish() == "one abcxyz ***\n"
