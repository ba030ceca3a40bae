"""Parity of the lyric front end with upstream ACE-Step v1.

The expected ids come from ``tests/fixtures/upstream/lyric_ids.json``, produced by running
upstream's ``ACEStepPipeline.tokenize_lyrics`` / ``get_lang`` (commit d612523) over a
multilingual corpus; ``tests/fixtures/upstream/README.md`` records the exact versions.

The real lyric vocabulary is read from the shared data directory
(``$ACESTEP_SHARED_DIR/data/acestep-v1-lyric-vocab.json``, default ``<repo>/../shared``).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from shared_paths import REAL_LYRIC_VOCAB as VOCAB
from shared_paths import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "upstream" / "lyric_ids.json"

HAS_CUTLET = importlib.util.find_spec("cutlet") is not None


def _load_entries() -> list[dict]:
    with FIXTURE.open(encoding="utf-8") as f:
        return json.load(f)["entries"]


ENTRIES = _load_entries()


def _is_japanese(entry: dict) -> bool:
    return "ja" in entry["line_langs"]


def _entry_id(entry: dict) -> str:
    text = entry["lyrics"].replace("\n", "⏎")
    return text[:40] if text else "<empty>"


@pytest.fixture(scope="module")
def tokenizer():
    if not VOCAB.is_file():
        pytest.fail(
            f"lyric vocabulary not found at {VOCAB}; set ACESTEP_SHARED_DIR to the shared dir"
        )
    from acestep_batch.model.lyrics import LyricTokenizer

    return LyricTokenizer.from_file(VOCAB)


def test_fixture_is_well_formed():
    assert len(ENTRIES) >= 60
    for entry in ENTRIES:
        non_empty = [line for line in entry["lyrics"].split("\n") if line.strip()]
        assert len(entry["line_langs"]) == len(non_empty)
        assert entry["ids"][0] == 261  # [START]


@pytest.mark.parametrize("entry", ENTRIES, ids=_entry_id)
def test_token_ids_match_upstream(tokenizer, entry):
    if _is_japanese(entry) and not HAS_CUTLET:
        pytest.skip("Japanese romanisation needs cutlet (extra 'ja')")
    got = tokenizer.tokenize(entry["lyrics"])
    assert list(got) == entry["ids"], f"lyrics={entry['lyrics']!r}"


@pytest.mark.parametrize("entry", ENTRIES, ids=_entry_id)
def test_line_languages_match_upstream(entry):
    from acestep_batch.model.lyrics import get_lang

    lines = [line.strip() for line in entry["lyrics"].split("\n")]
    got = [get_lang(line) for line in lines if line]
    assert got == entry["line_langs"], f"lyrics={entry['lyrics']!r}"
