"""Checkpoint resolution and strict loading of the official ACE-Step v1 layout.

Layout (Hub repo `ACE-Step/ACE-Step-v1-3.5B`): four component folders, each a diffusers or
transformers model folder (config.json + safetensors). Loading is strict: every missing,
unexpected or wrongly shaped tensor is listed in one error, and an unreadable file is named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from .request import DEFAULT_CHECKPOINT


TRANSFORMER_DIR = "ace_step_transformer"
DCAE_DIR = "music_dcae_f8c8"
VOCODER_DIR = "music_vocoder"
TEXT_ENCODER_DIR = "umt5-base"
COMPONENT_DIRS = (TRANSFORMER_DIR, DCAE_DIR, VOCODER_DIR, TEXT_ENCODER_DIR)

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_LIST_LIMIT = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be resolved or does not match the model: the message says why."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path
    source: str  # what the user asked for (directory or repo id)
    revision: str | None  # Hub snapshot commit when resolved from the Hub


def _missing_components(path: Path) -> list[str]:
    return [name for name in COMPONENT_DIRS if not (path / name).is_dir()]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hub_cache_dir() -> str | None:
    """The Hub cache named by the environment at call time. huggingface_hub reads HF_HOME /
    HF_HUB_CACHE / HF_HUB_OFFLINE once, when it is imported, so without this a process that sets
    them later (tests, notebooks, a server configured after start-up) would silently use others."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.expanduser(os.path.expandvars(os.environ[name]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"])), "hub")
    return None  # the library's own default


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None) -> ResolvedCheckpoint:
    """A local checkpoint folder, or a Hub repo id resolved with `snapshot_download` (which honours
    HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE: offline it returns the cached snapshot)."""
    text = os.fspath(checkpoint)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {text!r} is a file; expected a folder with {', '.join(COMPONENT_DIRS)}")
        missing = _missing_components(path)
        if missing:
            raise CheckpointError(
                f"checkpoint folder {text!r} is not an ACE-Step v1 checkpoint: missing {', '.join(missing)}/ "
                f"(expected the four folders {', '.join(COMPONENT_DIRS)} of {DEFAULT_CHECKPOINT})"
            )
        return ResolvedCheckpoint(path.resolve(), text, None)
    if not _REPO_ID.match(text):
        raise CheckpointError(f"checkpoint {text!r} is neither an existing folder nor a Hugging Face repo id (owner/name)")
    from huggingface_hub import snapshot_download

    offline = _hub_offline()
    try:
        snapshot = Path(snapshot_download(
            repo_id=text, revision=revision, cache_dir=cache_dir or _hub_cache_dir(), local_files_only=offline))
    except Exception as error:  # the hub raises many types; the message matters
        hint = (
            "HF_HUB_OFFLINE is set and the snapshot is not in the cache (HF_HOME / HF_HUB_CACHE)"
            if offline
            else "download it first (`hf download ACE-Step/ACE-Step-v1-3.5B`, or `huggingface-cli download` with older huggingface_hub) or pass a local folder"
        )
        raise CheckpointError(f"cannot resolve Hub checkpoint {text!r} (revision {revision or 'main'}): {hint}. Cause: {error}") from error
    missing = _missing_components(snapshot)
    if missing:
        raise CheckpointError(f"Hub snapshot {snapshot} of {text!r} lacks {', '.join(missing)}/")
    return ResolvedCheckpoint(snapshot, text, snapshot.name)


def read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"missing {config_path}")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {config_path}: {error}") from error


def weight_files(folder: Path, filename: str) -> list[Path]:
    """The safetensors files of a component: one file or the shards named by `<file>.index.json`."""
    single = folder / filename
    if single.is_file():
        return [single]
    index = folder / f"{filename}.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise CheckpointError(f"cannot read shard index {index}: {error}") from error
        shards = sorted(set(weight_map.values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise CheckpointError(f"shard index {index} names missing file(s): {', '.join(missing)}")
        return [folder / shard for shard in shards]
    raise CheckpointError(f"no weights in {folder}: expected {filename} (or a sharded {filename}.index.json)")


def read_tensors(files: list[Path], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensor = handle.get_tensor(key)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    tensors[key] = tensor
        except CheckpointError:
            raise
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"cannot read {path} (truncated or not a safetensors file?): {error}") from error
    return tensors


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def check_state_dict(
    component: str, expected: dict[str, torch.Size], found: dict[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped tensor."""
    missing = sorted(key for key in expected if key not in found and key not in optional)
    unexpected = sorted(key for key in found if key not in expected)
    mismatched = sorted(
        f"{key} {tuple(found[key].shape)} != {tuple(shape)}"
        for key, shape in expected.items()
        if key in found and tuple(found[key].shape) != tuple(shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"{component} weights do not match its config.json:"]
        if missing:
            lines.append(_listing("missing", missing))
        if unexpected:
            lines.append(_listing("unexpected", unexpected))
        if mismatched:
            lines.append(_listing("wrong shape (file != model)", mismatched))
        raise CheckpointError("\n".join(lines))


def load_into(module: nn.Module, component: str, tensors: dict[str, torch.Tensor], optional: tuple[str, ...] = ()) -> None:
    """Strictly load `tensors` into `module` (built on the meta device or on the CPU)."""
    expected = {key: value.shape for key, value in module.state_dict().items()}
    check_state_dict(component, expected, tensors, optional)
    module.load_state_dict(tensors, strict=False, assign=True)


def fingerprint(path: Path) -> str:
    """A cheap identity of a checkpoint folder: configs, safetensors headers, sizes and the first
    and last MiB of each weight file. Stable across copies; not a full content hash."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts):
        relative = file.relative_to(path).as_posix()
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with open(file, "rb") as handle:
            if file.suffix == ".json":
                digest.update(handle.read())
                continue
            digest.update(handle.read(1 << 20))
            if size > (2 << 20):
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]
