"""Lyric vocabulary: resolution order, offline/checksum errors, pinned download, tiny vocabulary."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from acestep_batch.model.lyrics import (
    LYRIC_VOCAB_FILENAME,
    LYRIC_VOCAB_SHA256,
    LyricTokenizer,
    LyricVocabError,
    resolve_lyric_vocab,
    write_tiny_vocab,
)
from acestep_batch.model.lyrics.vocab import (
    LANGUAGE_TAG_TOKENS,
    LYRIC_VOCAB_COMMIT,
    LYRIC_VOCAB_URL,
    SPECIAL_TOKENS,
    STRUCTURE_TAG_TOKENS,
    cached_vocab_path,
)

from shared_paths import REAL_LYRIC_VOCAB as REAL_VOCAB

CACHE_NAME = f"lyric-vocab-{LYRIC_VOCAB_SHA256[:16]}.json"


@pytest.fixture
def real_vocab() -> Path:
    if not REAL_VOCAB.is_file():
        pytest.fail(f"real lyric vocabulary missing at {REAL_VOCAB} (set ACESTEP_SHARED_DIR)")
    return REAL_VOCAB


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No vocabulary settings from the outer environment; HOME points at an empty folder."""
    for name in ("ACESTEP_LYRIC_VOCAB", "ACESTEP_LYRIC_VOCAB_URL", "ACESTEP_CACHE", "HF_HOME",
                 "HF_HUB_OFFLINE", "ACESTEP_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # The local test server must not be reached through a proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def serve_dir() -> Iterator[Callable[[Path, str], str]]:
    """Start an HTTP server on 127.0.0.1 for a folder; yields url_for(folder, name)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def url_for(folder: Path, name: str) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    yield url_for
    for server in servers:
        server.shutdown()
        server.server_close()


# --- pinned constants --------------------------------------------------------------------------


def test_pinned_constants(real_vocab: Path) -> None:
    assert LYRIC_VOCAB_FILENAME == "lyric_vocab.json"
    assert hashlib.sha256(real_vocab.read_bytes()).hexdigest() == LYRIC_VOCAB_SHA256
    assert len(LYRIC_VOCAB_COMMIT) == 40 and LYRIC_VOCAB_COMMIT.startswith("d612523")
    assert LYRIC_VOCAB_URL == (
        f"https://raw.githubusercontent.com/ace-step/ACE-Step/{LYRIC_VOCAB_COMMIT}"
        "/acestep/models/lyrics_utils/vocab.json"
    )
    assert issubclass(LyricVocabError, ValueError)


# --- resolution order --------------------------------------------------------------------------


def _touch(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_explicit_path_wins(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _touch(tmp_path / "mine.json")
    env_file = _touch(tmp_path / "env.json")
    checkpoint = tmp_path / "ckpt"
    _touch(checkpoint / "ace_step_transformer" / LYRIC_VOCAB_FILENAME)
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB", str(env_file))
    assert resolve_lyric_vocab(checkpoint, vocab_path=explicit) == explicit


def test_explicit_path_must_exist(clean_env: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(LyricVocabError, match="nope.json"):
        resolve_lyric_vocab(vocab_path=missing)


def test_env_path_before_checkpoint(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = _touch(tmp_path / "env.json")
    checkpoint = tmp_path / "ckpt"
    _touch(checkpoint / LYRIC_VOCAB_FILENAME)
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB", str(env_file))
    assert resolve_lyric_vocab(checkpoint) == env_file
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB", str(tmp_path / "gone.json"))
    with pytest.raises(LyricVocabError, match="gone.json"):
        resolve_lyric_vocab(checkpoint)


def test_checkpoint_folder_locations(clean_env: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    root_file = _touch(checkpoint / LYRIC_VOCAB_FILENAME)
    assert resolve_lyric_vocab(checkpoint, allow_download=False) == root_file
    sub_file = _touch(checkpoint / "ace_step_transformer" / LYRIC_VOCAB_FILENAME)
    assert resolve_lyric_vocab(checkpoint, allow_download=False) == sub_file


def test_cache_dir_sources(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_vocab: Path) -> None:
    data = real_vocab.read_bytes()
    home_cache = _touch(clean_env / ".cache" / "acestep-batch" / CACHE_NAME, "")
    home_cache.write_bytes(data)
    assert resolve_lyric_vocab(tmp_path / "empty-ckpt", allow_download=False) == home_cache

    hf_cache = tmp_path / "hf" / "acestep-batch" / CACHE_NAME
    _touch(hf_cache, "").write_bytes(data)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_lyric_vocab(allow_download=False) == hf_cache

    env_cache = tmp_path / "acache" / CACHE_NAME
    _touch(env_cache, "").write_bytes(data)
    monkeypatch.setenv("ACESTEP_CACHE", str(tmp_path / "acache"))
    assert resolve_lyric_vocab(allow_download=False) == env_cache

    arg_cache = tmp_path / "argcache" / CACHE_NAME
    _touch(arg_cache, "").write_bytes(data)
    assert resolve_lyric_vocab(cache_dir=tmp_path / "argcache", allow_download=False) == arg_cache
    assert cached_vocab_path(tmp_path / "argcache") == arg_cache


def test_cached_file_with_wrong_checksum_is_an_error(clean_env: Path, tmp_path: Path) -> None:
    bad = _touch(tmp_path / "cache" / CACHE_NAME, '{"not": "the vocab"}')
    with pytest.raises(LyricVocabError, match=CACHE_NAME) as info:
        resolve_lyric_vocab(cache_dir=tmp_path / "cache")
    assert "SHA-256" in str(info.value)
    assert bad.read_text() == '{"not": "the vocab"}'  # left for the user to inspect


@pytest.mark.parametrize("how", ["allow_download", "HF_HUB_OFFLINE", "ACESTEP_OFFLINE"])
def test_offline_error_lists_the_three_ways(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    kwargs: dict[str, object] = {"cache_dir": tmp_path / "cache"}
    if how == "allow_download":
        kwargs["allow_download"] = False
    else:
        monkeypatch.setenv(how, "1")
    with pytest.raises(LyricVocabError) as info:
        resolve_lyric_vocab(tmp_path / "ckpt", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "--lyric-vocab PATH" in message
    assert f"{tmp_path / 'ckpt'}/ace_step_transformer/{LYRIC_VOCAB_FILENAME}" in message
    assert LYRIC_VOCAB_URL in message
    assert not (tmp_path / "cache").exists()


# --- pinned download ---------------------------------------------------------------------------


def test_pinned_download_from_local_server(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_vocab: Path,
    serve_dir: Callable[[Path, str], str],
) -> None:
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB_URL", serve_dir(real_vocab.parent, real_vocab.name))
    cache = tmp_path / "cache"
    path = resolve_lyric_vocab(tmp_path / "ckpt", cache_dir=cache)
    assert path == cache / CACHE_NAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LYRIC_VOCAB_SHA256
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_NAME]  # no temp files left
    # Second call is served from the cache, even offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_lyric_vocab(cache_dir=cache) == path
    assert LyricTokenizer.from_file(path).vocab_size == 6693


def test_download_with_wrong_checksum_is_rejected(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_dir: Callable[[Path, str], str]
) -> None:
    served = tmp_path / "served"
    _touch(served / "vocab.json", '{"tampered": true}')
    url = serve_dir(served, "vocab.json")
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB_URL", url)
    cache = tmp_path / "cache"
    with pytest.raises(LyricVocabError, match="SHA-256") as info:
        resolve_lyric_vocab(cache_dir=cache)
    assert url in str(info.value)
    assert not (cache / CACHE_NAME).exists()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_failure_is_a_vocab_error(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_dir: Callable[[Path, str], str]
) -> None:
    url = serve_dir(tmp_path, "missing.json")  # server answers 404
    monkeypatch.setenv("ACESTEP_LYRIC_VOCAB_URL", url)
    with pytest.raises(LyricVocabError, match="--lyric-vocab PATH"):
        resolve_lyric_vocab(cache_dir=tmp_path / "cache")


# --- tiny vocabulary ---------------------------------------------------------------------------


def test_tiny_vocab_round_trip(tmp_path: Path, real_vocab: Path) -> None:
    path = tmp_path / "tiny" / LYRIC_VOCAB_FILENAME
    size = write_tiny_vocab(path)
    assert path.stat().st_size < 20_000
    tok = LyricTokenizer.from_file(path)
    assert tok.vocab_size == size

    # Same structure and token strings as the real vocabulary (spec 4.7).
    tiny, real = json.loads(path.read_text()), json.loads(real_vocab.read_text())
    for key in ("version", "normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert tiny[key] == real[key]
    assert {k: v for k, v in tiny["model"].items() if k not in ("vocab", "merges")} == {
        k: v for k, v in real["model"].items() if k not in ("vocab", "merges")
    }
    tiny_added = {t["content"] for t in tiny["added_tokens"]}
    real_added = {t["content"] for t in real["added_tokens"]}
    assert tiny_added == real_added == set(SPECIAL_TOKENS + LANGUAGE_TAG_TOKENS + STRUCTURE_TAG_TOKENS)

    en, verse = tok.token_id("[en]"), tok.token_id("[verse]")
    assert tok.tokenize("[verse]") == [tok.start_id, en, verse, tok.space_id]
    assert tok.encode("") == ([tok.stop_id], [0])

    ids = tok.tokenize("Neon lights they flicker bright")
    assert ids[:2] == [tok.start_id, en]
    assert "".join(tok.id_to_token(i) or "" for i in ids[2:-1]) == (
        "neon[SPACE]lights[SPACE]they[SPACE]flicker[SPACE]bright"
    )
    assert tok.token_id("[UNK]") not in ids
    assert len(ids) < len("neonlightstheyflickerbright") + 6  # the merges did something

    zh = tok.tokenize("我走过深夜的街道")
    assert zh[1] == tok.token_id("[zh-cn]")
    assert "".join(tok.id_to_token(i) or "" for i in zh[2:-1]) == "wo3zou3guo4shen1ye4de5jie1dao4"

    # Characters outside the tiny alphabet become [UNK] instead of failing.
    unk = tok.tokenize("Über café")
    assert unk.count(tok.token_id("[UNK]")) == 2
    assert tok.tokenize("[Verse 1]").count(tok.token_id("[UNK]")) == 2
