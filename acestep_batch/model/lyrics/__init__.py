"""ACE-Step v1 lyric front end: lyrics string -> lyric token ids (spec section 4).

Pure Python (no torch): language id per line, multilingual cleaning, romanisation of zh/ko/ja,
and BPE with the ACE-Step lyric vocabulary, which :func:`resolve_lyric_vocab` locates.
"""

from .frontend import SUPPORTED_LANGUAGES, LyricTokenizer
from .langid import get_lang
from .transliterate import JapaneseSupportMissing
from .vocab import (
    LYRIC_VOCAB_COMMIT,
    LYRIC_VOCAB_FILENAME,
    LYRIC_VOCAB_SHA256,
    LYRIC_VOCAB_URL,
    LyricVocabError,
    resolve_lyric_vocab,
    write_tiny_vocab,
)

__all__ = [
    "LYRIC_VOCAB_COMMIT",
    "LYRIC_VOCAB_FILENAME",
    "LYRIC_VOCAB_SHA256",
    "LYRIC_VOCAB_URL",
    "JapaneseSupportMissing",
    "LyricTokenizer",
    "LyricVocabError",
    "SUPPORTED_LANGUAGES",
    "get_lang",
    "resolve_lyric_vocab",
    "write_tiny_vocab",
]
