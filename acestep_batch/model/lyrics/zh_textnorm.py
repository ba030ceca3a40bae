"""Chinese number and punctuation normaliser (spec section 4.5).

Chinese lyric lines are turned into pinyin afterwards, so digits must first become Chinese
numerals ("2024年" -> "二零二四年", "3个" -> "三个") and punctuation becomes ASCII commas. Only the
default configuration used by the lyric front end is implemented. The rewrite order and the
"replace the first occurrence anywhere" behaviour follow the spec exactly because they decide the
output for some inputs.
"""

from __future__ import annotations

import re
import string
from typing import Callable

_DIGITS = "零一二三四五六七八九"
_POINT = "点"
_LIANG = "两"
# (character, power of ten) of the "mid" numbering system, largest last.
_UNITS: tuple[tuple[str, int], ...] = (
    ("十", 1), ("百", 2), ("千", 3), ("万", 4), ("亿", 8), ("兆", 12), ("京", 16), ("垓", 20),
    ("秭", 24), ("穰", 28), ("沟", 32), ("涧", 36), ("正", 40), ("载", 44),
)
_UNIT_POWER = dict(_UNITS)

CHINESE_PUNCTUATION = (
    "！？｡。"
    "＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏·〈〉-"
)
_PUNCTUATION_TO_COMMA = str.maketrans({ch: "," for ch in CHINESE_PUNCTUATION + string.punctuation})

_MONEY_UNITS = r"((亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|)元|(亿|千万|百万|万|千|百|)块|角|毛|分)"
_QUANTIFIERS = (
    r"(匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|"
    r"座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|针|线|管|名|位|身|"
    r"堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|毫|厘|分|寸|尺|丈|里|寻|常|铺|程|"
    r"(千|分|厘|毫|微)米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|"
    r"煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|"
    r"支|道|面|片|张|颗|块)"
)

_DATE = re.compile(r"\D+((([089]\d|(19|20)\d{2})年)?(\d{1,2}月(\d{1,2}[日号])?)?)")
_DATE_PARTS = re.compile(r"(?:(\d+)年)?(?:(\d+)月(?:(\d+)([日号]))?)?")
_MONEY = re.compile(r"\D+((\d+(\.\d+)?)[多余几]?" + _MONEY_UNITS + r"(\d" + _MONEY_UNITS + r"?)?)")
_MOBILE = re.compile(r"\D((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})\D")
_LANDLINE = re.compile(r"\D((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})\D")
_FRACTION = re.compile(r"(\d+/\d+)")
_PERCENTAGE = re.compile(r"(\d+(\.\d+)?%)")
_QUANTITY = re.compile(r"(\d+(\.\d+)?)[多余几]?" + _QUANTIFIERS)
_DIGIT_STRING = re.compile(r"(\d{4,32})")
_NUMBER = re.compile(r"(\d+(\.\d+)?)")
_LETTERS_TWO_LETTERS = re.compile(r"(([a-zA-Z]+)二([a-zA-Z]+))")


def read_digits(digits: str) -> str:
    """Read a digit string one digit at a time ("2024" -> "二零二四", "." -> "点")."""
    return "".join(_POINT if ch == "." else _DIGITS[int(ch)] for ch in digits)


def _integer_symbols(value: str) -> list[str]:
    """Positional reading of an integer string; zeros inside become a single 零."""
    significant = value.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        digit = _DIGITS[int(significant)]
        return [_DIGITS[0], digit] if len(significant) != len(value) else [digit]
    unit, power = next((u, p) for u, p in reversed(_UNITS) if p < len(significant))
    # The high part keeps any leading zeros of `value`, so it reads as "零X" where one is needed.
    return _integer_symbols(value[:-power]) + [unit] + _integer_symbols(significant[-power:])


def _apply_liang(symbols: list[str]) -> list[str]:
    """Say 两 instead of 二 before a unit other than 十 (两百, 两万, but 二十, 十二万)."""
    result = list(symbols)
    for index, symbol in enumerate(symbols):
        if symbol != _DIGITS[2]:
            continue
        following = symbols[index + 1] if index + 1 < len(symbols) else None
        preceding = symbols[index - 1] if index > 0 else None
        followed_by_big_unit = following in _UNIT_POWER and following != "十"
        preceded_ok = preceding is None or (preceding in _UNIT_POWER and preceding != "十")
        if followed_by_big_unit and preceded_ok:
            result[index] = _LIANG
    return result


def read_cardinal(number: str) -> str:
    """Read a number as a Chinese cardinal ("12000" -> "一万两千", "3.5" -> "三点五")."""
    parts = number.split(".")
    if len(parts) > 2:
        raise ValueError(f"not a number: {number!r}")
    integer_part = parts[0]
    decimal_part = parts[1] if len(parts) == 2 else ""
    if len(integer_part) > 1:
        symbols = _integer_symbols(integer_part)
    else:
        symbols = [_DIGITS[int(ch)] for ch in integer_part]
    if decimal_part:
        symbols += [_POINT] + [_DIGITS[int(ch)] for ch in decimal_part]
    text = "".join(_apply_liang(symbols))
    if text.startswith(_POINT):
        text = _DIGITS[0] + text
    if text.startswith("一十"):
        text = text[1:]
    return text


def _read_date(date: str) -> str:
    year, month, day, day_suffix = _DATE_PARTS.fullmatch(date).groups()  # type: ignore[union-attr]
    text = ""
    if year is not None:
        text += read_digits(year) + "年"
    if month is not None:
        text += read_cardinal(month) + "月"
    if day is not None:
        text += read_cardinal(day) + day_suffix
    return text


def _read_money(money: str) -> str:
    return re.sub(r"\d+(\.\d+)?", lambda m: read_cardinal(m.group(0)), money)


def _read_mobile(number: str) -> str:
    return "".join(read_digits(part) for part in number.strip("+").split())


def _read_landline(number: str) -> str:
    return "".join(read_digits(part) for part in number.split("-"))


def _read_fraction(fraction: str) -> str:
    numerator, denominator = fraction.split("/")
    return read_cardinal(denominator) + "分之" + read_cardinal(numerator)


def _read_percentage(percentage: str) -> str:
    return "百分之" + read_cardinal(percentage.strip().strip("%"))


def _rewrite(text: str, pattern: re.Pattern[str], render: Callable[[str], str]) -> str:
    """Find all matches first, then replace each one's first occurrence anywhere in the text."""
    for found in pattern.findall(text):
        matched = found[0] if isinstance(found, tuple) else found
        text = text.replace(matched, render(matched), 1)
    return text


def normalize_nsw(raw: str) -> str:
    """Rewrite dates, money, phone numbers, fractions, percentages and numbers as Chinese words."""
    text = "^" + raw + "$"
    text = _rewrite(text, _DATE, _read_date)
    text = _rewrite(text, _MONEY, _read_money)
    text = _rewrite(text, _MOBILE, _read_mobile)
    text = _rewrite(text, _LANDLINE, _read_landline)
    text = _rewrite(text, _FRACTION, _read_fraction)
    text = text.replace("％", "%")
    text = _rewrite(text, _PERCENTAGE, _read_percentage)
    text = _rewrite(text, _QUANTITY, read_cardinal)
    text = _rewrite(text, _DIGIT_STRING, read_digits)
    text = _rewrite(text, _NUMBER, read_cardinal)
    # Undo "P2P" -> "P二P" style damage done to letter-digit-letter codes.
    for whole, left, right in _LETTERS_TWO_LETTERS.findall(text):
        text = text.replace(whole, left + "2" + right, 1)
    return text.lstrip("^").rstrip("$")


class TextNorm:
    """Default-configured Chinese normaliser: number words, then every punctuation mark -> ","."""

    def __call__(self, text: str) -> str:
        return normalize_nsw(text).translate(_PUNCTUATION_TO_COMMA)
