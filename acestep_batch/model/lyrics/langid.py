"""Per-line language identification (spec section 4.2).

Uses LangSegment 0.3.5 (PyPI ``langsegment-backup``) configured with the same 97-language filter
as upstream. LangSegment keeps its configuration and a last-input cache in module/class globals,
so every call is serialised by one lock and re-asserts the filter list.
"""

from __future__ import annotations

import threading

import LangSegment

LANGSEGMENT_FILTERS: list[str] = (
    "af am an ar as az be bg bn br bs ca cs cy da de dz el en eo es et eu fa fi fo fr ga gl gu he "
    "hi hr ht hu hy id is it ja jv ka kk km kn ko ku ky la lb lo lt lv mg mk ml mn mr ms mt nb ne "
    "nl nn no oc or pa pl ps pt qu ro ru rw se si sk sl sq sr sv sw ta te th tl tr ug uk ur vi vo "
    "wa xh zh zu"
).split()

_langsegment_lock = threading.Lock()


def get_lang(line: str) -> str:
    """The dominant language code of one lyric line; English only if nothing else was found.

    When English has the most characters but another language also occurs, the runner-up wins
    (a Chinese line with an English word is sung as Chinese). Any failure means "en".
    """
    try:
        with _langsegment_lock:
            LangSegment.setfilters(LANGSEGMENT_FILTERS)
            LangSegment.getTexts(line)
            counts = list(LangSegment.getCounts())
        lang = counts[0][0]
        if len(counts) > 1 and lang == "en":
            lang = counts[1][0]
    except Exception:
        lang = "en"
    return lang
