"""Server-side moderation: banned words in users' messages and masking of the
model's answer (banned words and personal data), while it streams.

See docs/ARCHITECTURE.md, "Server-side moderation"."""

from .answer_filter import AnswerFilter, mask_answer, to_v1_answer_text, to_v2_answer_text
from .banned_words import BannedWords, WatchedBannedWords, parse_word_list

__all__ = ["AnswerFilter", "BannedWords", "WatchedBannedWords", "mask_answer", "parse_word_list",
           "to_v1_answer_text", "to_v2_answer_text"]
