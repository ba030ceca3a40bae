"""Multilingual text cleaners applied to every lyric line before BPE (spec section 4.4).

The checkpoints were trained on text cleaned exactly this way, so every table and regex here is
kept as the spec lists it, quirks included (an unescaped ``.`` in the thousands pattern, the
``cz`` language code handed to num2words for Czech, per-step exception handling).
"""

from __future__ import annotations

import re
from typing import Callable

from num2words import num2words

from .zh_textnorm import TextNorm

CLEANER_LANGUAGES: frozenset[str] = frozenset(
    {"ar", "cs", "de", "en", "es", "fr", "hu", "it", "nl", "pl", "pt", "ru", "tr", "zh", "ko"}
)

# --- abbreviations: (key, expansion) in the order they are applied -------------------------------
_ABBREVIATION_TABLE: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"),
        ("rev", "reverend"), ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"),
        ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"),
        ("ft", "fort"),
    ],
    "es": [
        ("sra", "señora"), ("sr", "señor"), ("dr", "doctor"), ("dra", "doctora"), ("st", "santo"),
        ("co", "compañía"), ("jr", "junior"), ("ltd", "limitada"),
    ],
    "fr": [
        ("mme", "madame"), ("mr", "monsieur"), ("dr", "docteur"), ("st", "saint"),
        ("co", "compagnie"), ("jr", "junior"), ("ltd", "limitée"),
    ],
    "de": [("fr", "frau"), ("dr", "doktor"), ("st", "sankt"), ("co", "firma"), ("jr", "junior")],
    "pt": [
        ("sra", "senhora"), ("sr", "senhor"), ("dr", "doutor"), ("dra", "doutora"), ("st", "santo"),
        ("co", "companhia"), ("jr", "júnior"), ("ltd", "limitada"),
    ],
    "it": [
        ("sig", "signore"), ("dr", "dottore"), ("st", "santo"), ("co", "compagnia"),
        ("jr", "junior"), ("ltd", "limitata"),
    ],
    "pl": [("p", "pani"), ("m", "pan"), ("dr", "doktor"), ("sw", "święty"), ("jr", "junior")],
    "cs": [("dr", "doktor"), ("ing", "inženýr"), ("p", "pan")],
    "ru": [("г-жа", "госпожа"), ("г-н", "господин"), ("д-р", "доктор")],
    "nl": [("dhr", "de heer"), ("mevr", "mevrouw"), ("dr", "dokter"), ("jhr", "jonkheer")],
    "tr": [("b", "bay"), ("byk", "büyük"), ("dr", "doktor")],
    "hu": [("dr", "doktor"), ("b", "bácsi"), ("nőv", "nővér")],
    "ar": [],
    "zh": [],
    "ko": [],
}


def _compile_abbreviations(lang: str, pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    # Russian keys are matched as whole words without a trailing dot; all others need the dot.
    template = r"\b%s\b" if lang == "ru" else r"\b%s\."
    return [(re.compile(template % key, re.IGNORECASE), expansion) for key, expansion in pairs]


_ABBREVIATIONS = {lang: _compile_abbreviations(lang, pairs) for lang, pairs in _ABBREVIATION_TABLE.items()}

# --- symbols: words for & @ % # $ £ °, applied in that column order --------------------------------
_SYMBOL_ORDER = ("&", "@", "%", "#", "$", "£", "°")
_SYMBOL_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("and", "at", "percent", "hash", "dollar", "pound", "degree"),
    "es": ("y", "arroba", "por ciento", "numeral", "dolar", "libra", "grados"),
    "fr": ("et", "arobase", "pour cent", "dièse", "dollar", "livre", "degrés"),
    "de": ("und", "at", "prozent", "raute", "dollar", "pfund", "grad"),
    "pt": ("e", "arroba", "por cento", "cardinal", "dólar", "libra", "graus"),
    "it": ("e", "chiocciola", "per cento", "cancelletto", "dollaro", "sterlina", "gradi"),
    "pl": ("i", "małpa", "procent", "krzyżyk", "dolar", "funt", "stopnie"),
    "ar": ("و", "على", "في المئة", "رقم", "دولار", "جنيه", "درجة"),
    "zh": ("和", "在", "百分之", "号", "美元", "英镑", "度"),
    "cs": ("a", "na", "procento", "křížek", "dolar", "libra", "stupně"),
    "ru": ("и", "собака", "процентов", "номер", "доллар", "фунт", "градус"),
    "nl": ("en", "bij", "procent", "hekje", "dollar", "pond", "graden"),
    "tr": ("ve", "at", "yüzde", "diyez", "dolar", "sterlin", "derece"),
    "hu": ("és", "kukac", "százalék", "kettőskereszt", "dollár", "font", "fok"),
    "ko": ("그리고", "에", "퍼센트", "번호", "달러", "파운드", "도"),
}
_SYMBOLS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    lang: [
        (re.compile(re.escape(symbol), re.IGNORECASE), f" {word} ")
        for symbol, word in zip(_SYMBOL_ORDER, words)
    ]
    for lang, words in _SYMBOL_WORDS.items()
}

# --- numbers -----------------------------------------------------------------------------------
_COMMA_GROUPED_NUMBER = re.compile(r"\b\d{1,3}(,\d{3})*(\.\d+)?\b")
# The "." below is deliberately an unescaped wildcard: that is what the checkpoints were trained on.
_DOT_GROUPED_NUMBER = re.compile(r"\b\d{1,3}(.\d{3})*(\,\d+)?\b")
_CURRENCY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GBP", re.compile(r"((£[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+£))")),
    ("USD", re.compile(r"((\$[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+\$))")),
    ("EUR", re.compile(r"(([0-9\.\,]*[0-9]+€)|((€[0-9\.\,]*[0-9]+)))")),
)
_CURRENCY_AND_SEPARATOR: dict[str, str] = {
    "en": ", ", "es": " con ", "fr": " et ", "de": " und ", "pt": " e ", "it": " e ",
    "pl": ", ", "cs": ", ", "ru": ", ", "nl": ", ", "ar": ", ", "tr": ", ", "hu": ", ", "ko": ", ",
}
_DECIMAL_NUMBER = re.compile(r"([0-9]+[.,][0-9]+)")
_CARDINAL_NUMBER = re.compile(r"[0-9]+")
_ORDINAL_PATTERNS: dict[str, re.Pattern[str]] = {
    lang: re.compile(pattern)
    for lang, pattern in {
        "en": r"([0-9]+)(st|nd|rd|th)",
        "es": r"([0-9]+)(º|ª|er|o|a|os|as)",
        "fr": r"([0-9]+)(º|ª|er|re|e|ème)",
        "de": r"([0-9]+)(st|nd|rd|th|º|ª|\.(?=\s|$))",
        "pt": r"([0-9]+)(º|ª|o|a|os|as)",
        "it": r"([0-9]+)(º|°|ª|o|a|i|e)",
        "pl": r"([0-9]+)(º|ª|st|nd|rd|th)",
        "ar": r"([0-9]+)(ون|ين|ث|ر|ى)",
        "cs": r"([0-9]+)\.(?=\s|$)",
        "ru": r"([0-9]+)(-й|-я|-е|-ое|-ье|-го)",
        "nl": r"([0-9]+)(de|ste|e)",
        "tr": r"([0-9]+)(\.|inci|nci|uncu|üncü|\.)",
        "hu": r"([0-9]+)(\.|adik|edik|odik|edik|ödik|ödike|ik)",
        "ko": r"([0-9]+)(번째|번|차|째)",
    }.items()
}
_WHITESPACE = re.compile(r"\s+")

_text_norm = TextNorm()


def num2words_language(lang: str) -> str:
    """The language code handed to num2words: ``cz`` for Czech, as upstream does.

    num2words 0.5.14 knows Czech only as ``cs``, so every Czech number expansion raises and the
    digits stay as they are; the checkpoints saw Czech text that way.
    """
    return "cz" if lang == "cs" else lang


def _expand_currency(match: re.Match[str], lang: str, currency: str) -> str:
    amount = float(re.sub(r"[^\d.]", "", match.group(0).replace(",", ".")))
    spoken = num2words(amount, to="currency", currency=currency, lang=num2words_language(lang))
    if amount.is_integer():
        # Drop the "zero cents" tail after the language's last "and" separator.
        cut = spoken.rfind(_CURRENCY_AND_SEPARATOR[lang])
        if cut != -1:
            spoken = spoken[:cut]
    return spoken


def expand_numbers_multilingual(text: str, lang: str) -> str:
    """Spell out numbers; any exception outside the currency step propagates to the caller."""
    if lang == "zh":
        return _text_norm(text)
    n2w_lang = num2words_language(lang)
    if lang in ("en", "ru"):
        text = _COMMA_GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    else:
        text = _DOT_GROUPED_NUMBER.sub(lambda m: m.group(0).replace(".", ""), text)
    try:
        # One handler for all three currencies: a failure skips the remaining ones only.
        for currency, pattern in _CURRENCY_PATTERNS:
            text = pattern.sub(lambda m, c=currency: _expand_currency(m, lang, c), text)
    except Exception:
        pass
    if lang != "tr":
        text = _DECIMAL_NUMBER.sub(
            lambda m: num2words(float(m.group(1).replace(",", ".")), lang=n2w_lang), text
        )
    text = _ORDINAL_PATTERNS[lang].sub(
        lambda m: num2words(int(m.group(1)), ordinal=True, lang=n2w_lang), text
    )
    return _CARDINAL_NUMBER.sub(lambda m: num2words(int(m.group(0)), lang=n2w_lang), text)


def expand_abbreviations_multilingual(text: str, lang: str) -> str:
    """Expand the language's abbreviations in table order (e.g. "mrs." before "mr.")."""
    for pattern, expansion in _ABBREVIATIONS[lang]:
        text = pattern.sub(expansion, text)
    return text


def expand_symbols_multilingual(text: str, lang: str) -> str:
    """Replace & @ % # $ £ ° by the language's word, then strip the ends."""
    for pattern, word in _SYMBOLS[lang]:
        text = pattern.sub(word, text)
        text = text.replace("  ", " ")
    return text.strip()


def _keep_on_error(step: Callable[[str, str], str], text: str, lang: str) -> str:
    """Run one cleaning step; on any error the text stays as it was before the step."""
    try:
        return step(text, lang)
    except Exception:
        return text


def multilingual_cleaners(text: str, lang: str) -> str:
    """Lowercase, spell out numbers/abbreviations/symbols and collapse whitespace."""
    if lang not in CLEANER_LANGUAGES:
        raise NotImplementedError(f"no multilingual cleaner for language {lang!r}")
    text = text.replace('"', "")
    if lang == "tr":
        text = text.replace("İ", "i").replace("Ö", "ö").replace("Ü", "ü")
    text = text.lower()
    text = _keep_on_error(expand_numbers_multilingual, text, lang)
    text = _keep_on_error(expand_abbreviations_multilingual, text, lang)
    text = _keep_on_error(expand_symbols_multilingual, text, lang)
    return _WHITESPACE.sub(" ", text)
