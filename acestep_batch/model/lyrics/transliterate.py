"""Romanisation of Chinese, Korean and Japanese lines (spec section 4.6).

The lyric vocabulary holds pinyin syllables and Latin letters rather than most CJK characters, so
these scripts are romanised before BPE. Japanese needs MeCab via fugashi plus a dictionary; those
are an optional extra, imported only when a Japanese line shows up.
"""

from __future__ import annotations

import threading
from typing import Any

from hangul_romanize import Transliter
from hangul_romanize.rule import academic
from pypinyin import Style, pinyin

JA_EXTRA_HINT = "pip install 'acestep-batch[ja]'"

_korean = Transliter(rule=academic)
_cutlet_lock = threading.Lock()
_cutlet: Any = None


class JapaneseSupportMissing(ImportError):
    """Raised when a Japanese line needs cutlet/fugashi/unidic-lite and they are not installed."""


def chinese_transliterate(text: str) -> str:
    """Han characters -> toned pinyin without separators ("我走" -> "wo3zou3"); others pass through."""
    return "".join(
        candidates[0]
        for candidates in pinyin(text, style=Style.TONE3, heteronym=False, neutral_tone_with_five=True)
    )


def korean_transliterate(text: str) -> str:
    """Hangul -> Latin letters with hangul-romanize's ``academic`` rule, as upstream."""
    return _korean.translit(text)


def _get_cutlet() -> Any:
    global _cutlet
    if _cutlet is None:
        try:
            import cutlet  # noqa: PLC0415 - optional extra, imported on first use
            import fugashi  # noqa: F401, PLC0415
            import unidic_lite  # noqa: F401, PLC0415
        except ImportError as exc:
            raise JapaneseSupportMissing(
                f"Japanese lyrics need cutlet, fugashi and unidic-lite ({exc}); "
                f"install them with: {JA_EXTRA_HINT}"
            ) from exc
        _cutlet = cutlet.Cutlet()
    return _cutlet


def japanese_transliterate(text: str) -> str:
    """Japanese -> lowercase Hepburn romaji via cutlet's defaults."""
    # The MeCab tagger inside cutlet is not documented as thread-safe: serialise.
    with _cutlet_lock:
        return _get_cutlet().romaji(text).lower()
