"""Where the lyric BPE vocabulary comes from, and a tiny stand-in for tests.

The vocabulary is not part of the ACE-Step Hub checkpoint (upstream ships it inside its Python
package) and is not stored in this repository. It is found, in order, at an explicit path, via
``ACESTEP_LYRIC_VOCAB``, inside the checkpoint folder, in the local cache, or downloaded once
from the upstream file pinned at a commit and checked against its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import urllib.request

LYRIC_VOCAB_FILENAME = "lyric_vocab.json"
LYRIC_VOCAB_SHA256 = "c2a66ea48c478c0bb9acb5497144b926acdeaa37128faa799508d40f2b9cc558"
LYRIC_VOCAB_COMMIT = "d612523f50e252c0e138e68ae75b06223f96e934"
LYRIC_VOCAB_URL = (
    f"https://raw.githubusercontent.com/ace-step/ACE-Step/{LYRIC_VOCAB_COMMIT}"
    "/acestep/models/lyrics_utils/vocab.json"
)
DOWNLOAD_TIMEOUT_S = 60.0

ENV_VOCAB_PATH = "ACESTEP_LYRIC_VOCAB"
ENV_VOCAB_URL = "ACESTEP_LYRIC_VOCAB_URL"
ENV_CACHE_DIR = "ACESTEP_CACHE"
_OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "ACESTEP_OFFLINE")
_TRUTHY = {"1", "true", "yes", "on"}

# Token strings shared with the real vocabulary (spec section 4.7).
SPECIAL_TOKENS: tuple[str, ...] = ("[STOP]", "[UNK]", "[SPACE]", "[START]")
LANGUAGE_TAG_TOKENS: tuple[str, ...] = (
    "[en]", "[de]", "[fr]", "[es]", "[it]", "[pt]", "[pl]", "[tr]", "[ru]", "[cs]", "[nl]",
    "[ar]", "[zh-cn]", "[ja]", "[hu]", "[ko]", "[hi]",
)
STRUCTURE_TAG_TOKENS: tuple[str, ...] = (
    "[start]", "[intro]", "[verse]", "[chorus]", "[bridge]", "[outro]", "[end]", "[inst]",
    "[solo]", "[hook]", "[pre-chorus]", "[break]",
)


class LyricVocabError(ValueError):
    """The lyric vocabulary could not be found, downloaded or verified."""


def _how_to_supply(checkpoint_dir: str | os.PathLike[str] | None) -> str:
    folder = os.fspath(checkpoint_dir) if checkpoint_dir is not None else "<checkpoint>"
    return (
        "Supply the ACE-Step v1 lyric vocabulary in one of three ways:\n"
        f"  1. pass --lyric-vocab PATH (or set {ENV_VOCAB_PATH}=PATH);\n"
        f"  2. put it in the checkpoint folder as {folder}/ace_step_transformer/{LYRIC_VOCAB_FILENAME}"
        f" or {folder}/{LYRIC_VOCAB_FILENAME};\n"
        "  3. allow the one-time pinned download (unset HF_HUB_OFFLINE and ACESTEP_OFFLINE) of\n"
        f"     {LYRIC_VOCAB_URL}\n"
        f"     (SHA-256 {LYRIC_VOCAB_SHA256})."
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def default_cache_dir() -> pathlib.Path:
    """ACESTEP_CACHE, else $HF_HOME/acestep-batch, else ~/.cache/acestep-batch."""
    if os.environ.get(ENV_CACHE_DIR):
        return pathlib.Path(os.environ[ENV_CACHE_DIR])
    if os.environ.get("HF_HOME"):
        return pathlib.Path(os.environ["HF_HOME"]) / "acestep-batch"
    return pathlib.Path.home() / ".cache" / "acestep-batch"


def cached_vocab_path(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The cache file name carries the expected hash, so a new pin never reuses an old file."""
    base = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / f"lyric-vocab-{LYRIC_VOCAB_SHA256[:16]}.json"


def _sha256_of_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, destination: pathlib.Path) -> None:
    """Fetch `url`, verify its SHA-256 and publish it at `destination` atomically."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            payload = response.read()
    except Exception as exc:
        raise LyricVocabError(f"could not download the lyric vocabulary from {url}: {exc}") from exc
    actual = hashlib.sha256(payload).hexdigest()
    if actual != LYRIC_VOCAB_SHA256:
        raise LyricVocabError(
            f"lyric vocabulary downloaded from {url} has SHA-256 {actual}, expected {LYRIC_VOCAB_SHA256}"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=destination.name + ".", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, destination)
    except BaseException:
        pathlib.Path(handle.name).unlink(missing_ok=True)
        raise


def resolve_lyric_vocab(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    vocab_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
) -> pathlib.Path:
    """Path of the lyric vocabulary: explicit, env, checkpoint folder, cache, then pinned download.

    Explicitly given files (argument, env, checkpoint folder) are used as they are, so tiny test
    vocabularies work; cached and downloaded files must match the pinned SHA-256.
    """
    if vocab_path is not None:
        explicit = pathlib.Path(vocab_path)
        if not explicit.is_file():
            raise LyricVocabError(f"lyric vocabulary file {os.fspath(explicit)!r} does not exist")
        return explicit

    from_env = os.environ.get(ENV_VOCAB_PATH)
    if from_env:
        env_path = pathlib.Path(from_env)
        if not env_path.is_file():
            raise LyricVocabError(f"{ENV_VOCAB_PATH}={from_env!r} does not name an existing file")
        return env_path

    if checkpoint_dir is not None:
        root = pathlib.Path(checkpoint_dir)
        for candidate in (root / "ace_step_transformer" / LYRIC_VOCAB_FILENAME, root / LYRIC_VOCAB_FILENAME):
            if candidate.is_file():
                return candidate

    cached = cached_vocab_path(cache_dir)
    if cached.is_file():
        actual = _sha256_of_file(cached)
        if actual != LYRIC_VOCAB_SHA256:
            raise LyricVocabError(
                f"cached lyric vocabulary {os.fspath(cached)!r} has SHA-256 {actual}, expected "
                f"{LYRIC_VOCAB_SHA256}; delete it to download it again"
            )
        return cached

    offline_vars = [name for name in _OFFLINE_ENV_VARS if _env_flag(name)]
    if not allow_download or offline_vars:
        reason = "downloads are disabled" if not allow_download else f"{'/'.join(offline_vars)} is set"
        raise LyricVocabError(f"lyric vocabulary not found and {reason}.\n{_how_to_supply(checkpoint_dir)}")

    url = os.environ.get(ENV_VOCAB_URL) or LYRIC_VOCAB_URL
    try:
        _download(url, cached)
    except LyricVocabError as exc:
        raise LyricVocabError(f"{exc}\n{_how_to_supply(checkpoint_dir)}") from exc
    return cached


# --- tiny vocabulary for test checkpoints --------------------------------------------------------
_TINY_PUNCTUATION = tuple("!'(),-./:;?")
_TINY_LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
_TINY_DIGITS = tuple("0123456789")
_TINY_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("i", "n"), ("th", "e"), ("a", "n"), ("e", "r"), ("o", "u"), ("r", "e"),
    ("o", "n"), ("n", "g"), ("in", "g"), ("e", "n"), ("a", "t"), ("o", "r"), ("an", "d"),
    ("s", "t"), ("a", "i"), ("a", "o"), ("o", "ng"), ("e", "ng"), ("a", "ng"), ("u", "i"),
    ("i", "e"),
)


def _added_token(token_id: int, content: str) -> dict[str, object]:
    return {
        "id": token_id, "content": content, "single_word": False, "lstrip": False,
        "rstrip": False, "normalized": False, "special": True,
    }


def tiny_vocab_json() -> dict[str, object]:
    """A small BPE vocabulary with the real one's structure and special token strings."""
    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS + LANGUAGE_TAG_TOKENS + _TINY_PUNCTUATION + _TINY_LETTERS + _TINY_DIGITS:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for left, right in _TINY_MERGES:
        if left in vocab and right in vocab and left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append(f"{left} {right}")
    added = [_added_token(vocab[token], token) for token in SPECIAL_TOKENS + LANGUAGE_TAG_TOKENS]
    next_id = len(vocab)
    for offset, token in enumerate(STRUCTURE_TAG_TOKENS):
        added.append(_added_token(next_id + offset, token))
    added.sort(key=lambda entry: int(entry["id"]))  # type: ignore[call-overload]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "[UNK]",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def write_tiny_vocab(path: str | os.PathLike[str]) -> int:
    """Write the tiny vocabulary to `path`; returns its id count (the lyric encoder's vocab size)."""
    data = tiny_vocab_json()
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    added = data["added_tokens"]
    return 1 + max(int(entry["id"]) for entry in added)  # type: ignore[union-attr,index]
