"""Lyric front end: worked examples of spec section 4 against the real ACE-Step vocabulary."""

from __future__ import annotations

import importlib.util
import threading

import LangSegment
import pytest

from acestep_batch.model.lyrics import LyricTokenizer, get_lang
from acestep_batch.model.lyrics.cleaners import multilingual_cleaners
from acestep_batch.model.lyrics.frontend import preprocess_line
from acestep_batch.model.lyrics.transliterate import (
    JA_EXTRA_HINT,
    JapaneseSupportMissing,
    chinese_transliterate,
    korean_transliterate,
)
from acestep_batch.model.lyrics.zh_textnorm import TextNorm, read_cardinal

from shared_paths import REAL_LYRIC_VOCAB as REAL_VOCAB


START, SPACE, STOP, UNK = 261, 2, 0, 1
EN, ZH, JA, KO, RU = 259, 5023, 5412, 6152, 267
HAS_JAPANESE = all(importlib.util.find_spec(name) for name in ("cutlet", "fugashi", "unidic_lite"))


@pytest.fixture(scope="module")
def tok() -> LyricTokenizer:
    if not REAL_VOCAB.is_file():
        pytest.fail(f"real lyric vocabulary missing at {REAL_VOCAB} (set ACESTEP_SHARED_DIR)")
    return LyricTokenizer.from_file(REAL_VOCAB)


def tokens(tok: LyricTokenizer, ids: list[int]) -> list[str | None]:
    return [tok.id_to_token(i) for i in ids]


# --- 4.1 / 4.3 / 4.7 pipeline ---------------------------------------------------------------------


def test_real_vocab_special_ids_and_size(tok: LyricTokenizer) -> None:
    assert tok.vocab_size == 6693
    assert (tok.start_id, tok.space_id, tok.stop_id) == (START, SPACE, STOP)
    assert tok.token_id("[zh-cn]") == ZH
    assert tok.token_id("[pre-chorus]") == 6691


def test_structure_tag_line(tok: LyricTokenizer) -> None:
    assert tok.tokenize("[verse]") == [START, EN, 6683, SPACE]
    # Tags are lower-cased by the cleaners, so capitalised tags hit the same added tokens.
    assert tok.tokenize("[Chorus]") == [START, EN, 6684, SPACE]


def test_english_line(tok: LyricTokenizer) -> None:
    ids = tok.tokenize("Neon lights they flicker bright")
    assert ids == [START, EN, 111, 47, SPACE, 75, 20, 583, 32, SPACE, 141, SPACE,
                   468, 91, 2820, SPACE, 243, 343, 583, SPACE]
    assert "".join(tokens(tok, ids[2:-1])) == "neon[SPACE]lights[SPACE]they[SPACE]flicker[SPACE]bright"


def test_chinese_line(tok: LyricTokenizer) -> None:
    line = "我走过深夜的街道"
    assert preprocess_line(line, "zh") == "wo3zou3guo4shen1ye4de5jie1dao4"
    ids = tok.tokenize(line)
    assert ids[:2] == [START, ZH]
    assert ids[-1] == SPACE
    assert "".join(tokens(tok, ids[2:-1])) == "wo3zou3guo4shen1ye4de5jie1dao4"


def test_encode_line_matches_tokenize_body(tok: LyricTokenizer) -> None:
    assert tok.encode_line("[verse]", "en") == [EN, 6683]
    # "zh-cn" style codes are cut at "-" before choosing the cleaner and the tag.
    assert tok.encode_line("我走过深夜的街道", "zh-cn") == tok.tokenize("我走过深夜的街道")[1:-1]


def test_empty_and_blank_lines(tok: LyricTokenizer) -> None:
    assert tok.tokenize("[verse]\n\n   \n[chorus]") == [START, EN, 6683, SPACE, SPACE, SPACE, EN, 6684, SPACE]
    # Only "\n" splits; the "\r" of a CRLF file is removed by strip().
    assert tok.tokenize("[verse]\r\n[chorus]\r") == [START, EN, 6683, SPACE, EN, 6684, SPACE]


def test_encode_empty_and_non_empty(tok: LyricTokenizer) -> None:
    assert tok.encode("") == ([STOP], [0])
    assert tok.encode(None) == ([STOP], [0])
    # Whitespace-only lyrics are not "no lyrics": one empty line -> [START, SPACE].
    assert tok.encode("  ") == ([START, SPACE], [1, 1])
    ids, mask = tok.encode("[verse]\nNeon lights")
    assert ids == tok.tokenize("[verse]\nNeon lights")
    assert mask == [1] * len(ids)


def test_tag_with_text_is_english_and_brackets_are_unknown(tok: LyricTokenizer) -> None:
    ids = tok.tokenize("[Verse 1]")
    assert ids == [START, EN, UNK, 35, 173, 18, SPACE, 28, 111, UNK, SPACE]
    assert tokens(tok, ids) == ["[START]", "[en]", "[UNK]", "v", "ers", "e", "[SPACE]", "o", "ne", "[UNK]", "[SPACE]"]


def test_structure_line_is_english_even_when_chinese(tok: LyricTokenizer) -> None:
    # "[副歌] 我走过" starts with "[...]" so it is cleaned/tagged as English: no pinyin.
    ids = tok.tokenize("[副歌] 我走过")
    assert ids[:2] == [START, EN]
    assert ZH not in ids
    assert "wo3" not in tokens(tok, ids)


def test_unsupported_language_falls_back_to_english(tok: LyricTokenizer) -> None:
    assert get_lang("สวัสดีครับ") == "th"
    assert tok.tokenize("สวัสดีครับ")[:2] == [START, EN]


def test_korean_and_russian_lines(tok: LyricTokenizer) -> None:
    assert korean_transliterate("사랑해요") == "salanghae-yo"
    ids = tok.tokenize("사랑해요 너를")
    assert ids[:2] == [START, KO]
    assert "".join(tokens(tok, ids[2:-1])) == "salanghae-yo[SPACE]neoleul"
    ru = tok.tokenize("Привет мир")
    assert ru[:2] == [START, RU]


def test_mixed_chinese_english_line_is_chinese(tok: LyricTokenizer) -> None:
    line = "我爱你 baby tonight"
    ids = tok.tokenize(line)
    assert ids[:2] == [START, ZH]
    assert "".join(tokens(tok, ids[2:-1])) == "wo3ai4ni3[SPACE]baby[SPACE]tonight"


def test_multi_line_song(tok: LyricTokenizer) -> None:
    lyrics = "[verse]\nNeon lights they flicker bright\n\n[chorus]\n我走过深夜的街道"
    expected = (
        [START]
        + tok.encode_line("[verse]", "en") + [SPACE]
        + tok.encode_line("Neon lights they flicker bright", "en") + [SPACE]
        + [SPACE]
        + tok.encode_line("[chorus]", "en") + [SPACE]
        + tok.encode_line("我走过深夜的街道", "zh") + [SPACE]
    )
    assert tok.tokenize(lyrics) == expected
    assert expected[:4] == [START, EN, 6683, SPACE]


def test_tokenize_is_thread_safe(tok: LyricTokenizer) -> None:
    songs = [
        "[verse]\nNeon lights they flicker bright\n我走过深夜的街道",
        "사랑해요 너를\nПривет мир как дела\n[chorus]",
        "我爱你 baby tonight\nIch liebe dich so sehr\n\n[outro]",
        "I have 3 apples\n价格是12.5元\nสวัสดีครับ",
    ]
    expected = [tok.tokenize(song) for song in songs]
    results: dict[tuple[int, int], list[int]] = {}
    errors: list[BaseException] = []

    def worker(worker_index: int) -> None:
        try:
            for round_index in range(5):
                song_index = (worker_index + round_index) % len(songs)
                results[(worker_index, round_index)] = tok.tokenize(songs[song_index])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for (worker_index, round_index), ids in results.items():
        assert ids == expected[(worker_index + round_index) % len(songs)]


# --- 4.2 language id ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "lang"),
    [
        ("Neon lights they flicker bright", "en"),
        ("我走过深夜的街道", "zh"),
        ("사랑해요 너를", "ko"),
        ("Привет мир как дела", "ru"),
        ("Ich liebe dich so sehr", "de"),
    ],
)
def test_get_lang(line: str, lang: str) -> None:
    assert get_lang(line) == lang


def test_get_lang_prefers_non_english_runner_up() -> None:
    line = "我爱你 baby tonight"
    assert get_lang(line) == "zh"
    # The rule was really exercised: English has more characters than Chinese here.
    LangSegment.getTexts(line)
    counts = LangSegment.getCounts()
    assert counts[0][0] == "en" and counts[1][0] == "zh"


# --- 4.4 cleaners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        # en: commas in numbers, currency (zero cents dropped / kept), ordinals, decimals
        ("The 2nd of 3 songs costs $1,000.50", "en",
         "the second of three songs costs one thousand dollars, fifty cents"),
        ("I owe you £20 and €3", "en", "i owe you twenty pounds sterling and three euro"),
        ("1,234,567 stars", "en",
         "one million, two hundred and thirty-four thousand, five hundred and sixty-seven stars"),
        ("Call Mrs. Smith at 5 & 6 @ home #1", "en", "call misess smith at five and six at home hash one"),
        ("It is 30° today, 100%", "en", "it is thirty degree today, one hundred percent"),
        ("Dr. Smith & co. 3.5%", "en", "doctor smith and company three point five percent"),
        ('He said "hello"', "en", "he said hello"),
        # es: dotted thousands, ordinal suffix, abbreviations
        ("tengo 3 perros y 1.000 gatos, 2ª vez", "es", "tengo tres perros y mil gatos, segundo vez"),
        ("la 1ª sra. García", "es", "la primero señora garcía"),
        ("3.14", "es", "tres punto uno cuatro"),
        # the unescaped "." of the thousands pattern swallows ",234." as one group
        ("1,234.567", "es", "uno punto dos tres cuatro cinco seis siete"),
        ("3.141", "es", "tres mil ciento cuarenta y uno"),
        # fr
        ("J'ai 21 ans et 1,5 kilo, Mme. Dupont", "fr",
         "j'ai vingt et un ans et un virgule cinq kilo, madame dupont"),
        ("Le 1er mai, 2e, 10%", "fr", "le premier mai, deuxième, dix pour cent"),
        # de: "3." ordinal, currency keeps num2words' capital letter
        ("Der 3. Tag, 2,5 Stunden, Dr. Müller", "de", "der dritte tag, zwei Komma fünf stunden, doktor müller"),
        ("Fr. Schmidt zahlt 3€", "de", "frau schmidt zahlt drei Euro"),
        # ru: comma thousands, "-й" ordinals, dot-less abbreviations
        ("у меня 21 кот и 1,5 литра, г-жа Иванова", "ru",
         "у меня двадцать один кот и одна целая пять десятых литра, госпожа иванова"),
        ("это 2-й раз, 1,000 рублей", "ru", "это второй раз, одна тысяча рублей"),
        # tr: dotted capitals, no decimals, currency fails inside num2words and is skipped
        ("3 İNSAN 2. kez ÖĞLE Ünlü", "tr", "üç insan ikinci kez öğle ünlü"),
        ("5,5 $5", "tr", "beş,beş dolar beş"),
        # cs: num2words gets "cz" and raises, so the whole number step is cancelled
        ("Dr. Novák má 3 psy a 2. místo", "cs", "doktor novák má 3 psy a 2. místo"),
        ("Ing. Dvořák & p. Novák 5%", "cs", "inženýr dvořák a pan novák 5 procento"),
        # other languages
        ("ik heb 3 katten, 2de keer", "nl", "ik heb drie katten, tweede keer"),
        ("3번째 사랑 5개", "ko", "세 번째 사랑 오개"),
        # zh: TextNorm instead of num2words, then zh symbol words
        ("2024年5月1日 30°", "zh", "二零二四年五月一日 三十 度"),
    ],
)
def test_multilingual_cleaners(text: str, lang: str, expected: str) -> None:
    assert multilingual_cleaners(text, lang) == expected


def test_cleaners_reject_unknown_language() -> None:
    with pytest.raises(NotImplementedError):
        multilingual_cleaners("hello", "xx")


def test_hindi_is_lowercased_and_whitespace_collapsed() -> None:
    assert preprocess_line("नमस्ते   Dunia\tX", "hi") == "नमस्ते dunia x"


# --- 4.5 Chinese TextNorm --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024年5月1日", "二零二四年五月一日"),             # year digit by digit, month/day cardinal
        ("08年12月25号", "零八年十二月二十五号"),
        ("我有2000块钱", "我有两千块钱"),                   # money, 两 before 千
        ("价格是12.5元", "价格是十二点五元"),
        ("3块5", "三块五"),
        ("涨了50%", "涨了百分之五十"),                       # percentage
        ("增长了３.５％", "增长了百分之三点五"),              # full-width digits and ％
        ("3/4的人", "四分之三的人"),                          # fraction
        ("电话13812345678。", "电话一三八一二三四五六七八,"),   # mobile + punctuation -> ","
        ("拨打+86 13912345678", "拨打八六一三九一二三四五六七八"),
        ("座机010-12345678", "座机零一零一二三四五六七八"),    # landline
        ("200个", "两百个"),                                  # 两 rule
        ("2个", "二个"),                                      # no unit after the 2: stays 二
        ("10件", "十件"),                                     # 十 rule: no leading 一
        ("15岁", "十五岁"),
        ("12000", "一二零零零"),                              # 4+ digits read digit by digit
        ("有12人和1个", "有一二人和一个"),                    # replace-first-occurrence quirk
        ("P2P网络", "P2P网络"),                               # letter-2-letter restored
        ("他说：“你好！”", "他说,,你好,,"),
        ("0.5", "零点五"),
    ],
)
def test_zh_textnorm(text: str, expected: str) -> None:
    assert TextNorm()(text) == expected


@pytest.mark.parametrize(
    ("number", "reading"),
    [
        ("10", "十"), ("11", "十一"), ("20", "二十"), ("200", "两百"), ("2000", "两千"),
        ("22000", "两万两千"), ("12000", "一万两千"), ("1200", "一千两百"), ("1020", "一千零二十"),
        ("10500", "一万零五百"), ("100000", "十万"), ("1000010", "一百万零一十"), ("2.5", "二点五"),
        ("007", "零七"), ("200000000", "两亿"),
    ],
)
def test_zh_cardinal_reading(number: str, reading: str) -> None:
    assert read_cardinal(number) == reading


def test_chinese_transliteration_keeps_non_han_text() -> None:
    assert chinese_transliterate("我爱你, baby 的") == "wo3ai4ni3, baby de5"


# --- Japanese (optional extra) ---------------------------------------------------------------------


@pytest.mark.skipif(not HAS_JAPANESE, reason="Japanese extra (cutlet, fugashi, unidic-lite) not installed")
def test_japanese_line(tok: LyricTokenizer) -> None:
    line = "東京の夜空に星が光る"
    assert get_lang(line) == "ja"
    assert preprocess_line(line, "ja") == "tokyo no yozora ni hoshi ga hikaru"
    ids = tok.tokenize(line)
    assert ids[:2] == [START, JA]
    assert "".join(tokens(tok, ids[2:-1])) == "tokyo[SPACE]no[SPACE]yozora[SPACE]ni[SPACE]hoshi[SPACE]ga[SPACE]hikaru"


@pytest.mark.skipif(HAS_JAPANESE, reason="only meaningful when the Japanese extra is absent")
def test_japanese_without_extra_names_the_install_command(tok: LyricTokenizer) -> None:
    with pytest.raises(JapaneseSupportMissing, match=r"acestep-batch\[ja\]"):
        tok.tokenize("東京の夜空に星が光る")
    assert JA_EXTRA_HINT == "pip install 'acestep-batch[ja]'"
