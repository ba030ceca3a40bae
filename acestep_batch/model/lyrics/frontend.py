"""Lyrics string -> lyric token ids, as ACE-Step v1 computes them (spec sections 4.1 and 4.3).

Each line is language-identified, cleaned (numbers spelled out, lowercased), romanised for
zh/ko/ja, prefixed with its language tag and BPE-encoded with the lyric vocabulary. Special ids are
looked up by token string so that a small generated vocabulary works as well as the real one.
"""

from __future__ import annotations

import logging
import os
import re

from tokenizers import Tokenizer

from .cleaners import CLEANER_LANGUAGES, multilingual_cleaners
from .langid import get_lang
from .transliterate import (
    JapaneseSupportMissing,
    chinese_transliterate,
    japanese_transliterate,
    korean_transliterate,
)
from .vocab import LyricVocabError

logger = logging.getLogger(__name__)

# Languages with a tag token in the vocabulary; any other detected language is sung as English.
SUPPORTED_LANGUAGES: frozenset[str] = frozenset(
    {"en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "cs", "nl", "ar", "zh", "ja", "hu", "ko", "hi"}
)
START_TOKEN = "[START]"
SPACE_TOKEN = "[SPACE]"
STOP_TOKEN = "[STOP]"
UNK_TOKEN = "[UNK]"

# `.match`: a line that starts with "[" and has a later "]" (e.g. "[Verse 1] text") is a tag line.
_STRUCTURE_LINE = re.compile(r"\[.*?\]")
_WHITESPACE = re.compile(r"\s+")


def preprocess_line(text: str, lang: str) -> str:
    """Language-specific cleaning and romanisation of one line (lang is a base code like "zh")."""
    if lang in CLEANER_LANGUAGES:
        text = multilingual_cleaners(text, lang)
        if lang == "zh":
            text = chinese_transliterate(text)
        elif lang == "ko":
            text = korean_transliterate(text)
        return text
    if lang == "ja":
        return japanese_transliterate(text)
    if lang == "hi":
        return _WHITESPACE.sub(" ", text.lower())
    raise NotImplementedError(f"language {lang!r} is not supported by the lyric tokenizer")


class LyricTokenizer:
    """Thread-safe lyric tokenizer around a ``tokenizers`` BPE vocabulary."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.start_id = self._required_id(START_TOKEN)
        self.space_id = self._required_id(SPACE_TOKEN)
        self.stop_id = self._required_id(STOP_TOKEN)
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, vocab_path: str | os.PathLike[str]) -> "LyricTokenizer":
        """Load a ``tokenizers`` JSON vocabulary (the real one or a tiny generated one)."""
        try:
            tokenizer = Tokenizer.from_file(os.fspath(vocab_path))
        except Exception as exc:
            raise LyricVocabError(f"cannot load lyric vocabulary {os.fspath(vocab_path)!r}: {exc}") from exc
        return cls(tokenizer)

    def _required_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise LyricVocabError(f"lyric vocabulary has no {token} token")
        return token_id

    def token_id(self, token: str) -> int | None:
        """The id of a token string (e.g. "[en]"), or None when the vocabulary lacks it."""
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of an id, for debugging and tests."""
        return self._tokenizer.id_to_token(token_id)

    def encode_line(self, text: str, lang: str) -> list[int]:
        """Clean one line for `lang`, prefix its language tag and BPE it (no trailing [SPACE])."""
        lang = lang.split("-")[0]
        text = preprocess_line(text, lang)
        tag = "zh-cn" if lang == "zh" else lang
        text = f"[{tag}]{text}".replace(" ", SPACE_TOKEN)
        return list(self._tokenizer.encode(text).ids)

    def tokenize(self, lyrics: str) -> list[int]:
        """Token ids of non-empty lyrics: [START], then each line's ids followed by [SPACE].

        An empty line becomes a lone [SPACE]. A line that fails to encode is dropped with a
        warning, as upstream does, except when Japanese support is not installed.
        """
        ids = [self.start_id]
        for raw_line in lyrics.split("\n"):
            line = raw_line.strip()
            if not line:
                ids.append(self.space_id)
                continue
            lang = get_lang(line)  # upstream runs it on tag lines too; harmless and kept
            if lang not in SUPPORTED_LANGUAGES:
                lang = "en"
            if _STRUCTURE_LINE.match(line):
                lang = "en"
            try:
                line_ids = self.encode_line(line, lang)
            except JapaneseSupportMissing:
                raise
            except Exception as exc:
                logger.warning("dropping lyric line %r (lang %s): %s", line, lang, exc)
                continue
            ids.extend(line_ids)
            ids.append(self.space_id)
        return ids

    def encode(self, lyrics: str | None) -> tuple[list[int], list[int]]:
        """(ids, mask) for the lyric encoder; no lyrics means a single masked [STOP]."""
        if not lyrics:
            return [self.stop_id], [0]
        ids = self.tokenize(lyrics)
        return ids, [1] * len(ids)
