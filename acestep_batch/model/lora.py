"""LoRA adapters for the ACE-Step transformer (spec 6.9), without PEFT.

File format (upstream's): a folder holding `pytorch_lora_weights.safetensors` whose keys are PEFT
keys without prefix, `<module>.lora_A.weight` (r, in) and `<module>.lora_B.weight` (out, r), where
`<module>` is a module path of the transformer (`transformer_blocks.3.attn.to_q`,
`lyric_encoder.encoders.0.self_attn.linear_q`, `speaker_embedder`, ...).

Math (PEFT's unmerged Linear): `y = (W x + b) + B(A x) * s`, `s = weight * alpha / r` (rsLoRA:
`/ sqrt(r)`). Upstream ran diffusers 0.33, which ignores any metadata and uses alpha = r, so
`s = weight`; newer diffusers read `lora_adapter_metadata` from the safetensors header. The
`scale_mode` switch picks: "metadata" (default: use the header's alpha/rsLoRA when present, else
alpha = r - identical to upstream for files without metadata) or "upstream" (always alpha = r).

An adapter is applied with forward hooks on the target `nn.Linear` modules, so the base weights
are never modified and switching adapters is exact. ERG's query scaling multiplies the hooked
output, i.e. base + LoRA, as upstream's hooks on PEFT-wrapped modules do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
# The RapMachine LoRA's training targets (upstream's LoRA config).
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "speaker_embedder", "linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0",
)
SCALE_MODES = ("metadata", "upstream")


class LoraError(ValueError):
    """An adapter that cannot be found, read or applied to this checkpoint."""


@dataclass
class LoraAdapter:
    """One loaded adapter: per module (A, B, alpha/r factor), plus where it came from."""

    name: str  # what the request asked for (path, URI or Hub id)
    path: str  # the resolved local weights file
    sha256: str
    rank: int
    alpha: float
    use_rslora: bool
    has_metadata: bool
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def factor(self, scale_mode: str) -> float:
        """alpha / r (or alpha / sqrt(r)); multiplied by the request's `lora_weight`."""
        if scale_mode == "upstream" or not self.has_metadata:
            return 1.0
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    @property
    def identity(self) -> dict[str, str]:
        return {"lora_resolved": self.path, "lora_sha256": self.sha256}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def target_linears(model: nn.Module, targets: Iterable[str] = DEFAULT_TARGET_MODULES) -> dict[str, nn.Linear]:
    """The model's Linear modules PEFT would wrap for these target names (exact or dotted suffix)."""
    targets = tuple(targets)
    return {
        name: module for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    }


def _header_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def read_adapter(name: str, weights: Path, model: nn.Module, dtype: torch.dtype, device: torch.device) -> LoraAdapter:
    """Load and check an adapter file against `model` (module names and shapes)."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
        metadata = _header_metadata(weights)
    except Exception as error:
        raise LoraError(f"LoRA {name!r}: cannot read {weights}: {error}") from error
    linears = dict(model.named_modules())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.weight"
            if key.endswith(marker):
                pairs.setdefault(key[: -len(marker)], {})[part] = tensor
                break
        else:
            raise LoraError(f"LoRA {name!r}: unexpected key {key!r} in {weights} (expected <module>.lora_A/B.weight)")
    if not pairs:
        raise LoraError(f"LoRA {name!r}: {weights} holds no LoRA weights")
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    ranks = set()
    for module_name, pair in sorted(pairs.items()):
        target = linears.get(module_name)
        if not isinstance(target, nn.Linear):
            raise LoraError(f"LoRA {name!r}: module {module_name!r} is not a Linear layer of this transformer "
                            "(adapter trained for another model?)")
        if set(pair) != {"lora_A", "lora_B"}:
            raise LoraError(f"LoRA {name!r}: module {module_name!r} lacks lora_A or lora_B")
        a, b = pair["lora_A"], pair["lora_B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != target.in_features or b.shape[0] != target.out_features \
                or a.shape[0] != b.shape[1]:
            raise LoraError(
                f"LoRA {name!r}: {module_name} has A {tuple(a.shape)} / B {tuple(b.shape)}, which does not fit a "
                f"Linear({target.in_features} -> {target.out_features}) (adapter for another model size?)"
            )
        ranks.add(a.shape[0])
        modules[module_name] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
    rank = max(ranks)
    alpha, use_rslora, has_metadata = float(rank), False, False
    if METADATA_KEY in metadata:
        try:
            config = json.loads(metadata[METADATA_KEY])
            rank = int(config.get("r", rank))
            alpha = float(config.get("lora_alpha", rank))
            use_rslora = bool(config.get("use_rslora", False))
            has_metadata = True
        except (ValueError, TypeError) as error:
            raise LoraError(f"LoRA {name!r}: unreadable {METADATA_KEY} in {weights}: {error}") from error
    return LoraAdapter(name, str(weights), file_sha256(weights), rank, alpha, use_rslora, has_metadata, modules)


class ActiveLora:
    """Context manager: hooks `adapter` (scaled by `scale`) onto the model while inside."""

    def __init__(self, model: nn.Module, adapter: LoraAdapter | None, scale: float) -> None:
        self.model, self.adapter, self.scale = model, adapter, scale
        self.handles: list = []

    def __enter__(self) -> ActiveLora:
        if self.adapter is None:
            return self
        modules = dict(self.model.named_modules())
        for name, (a, b) in self.adapter.modules.items():
            self.handles.append(modules[name].register_forward_hook(self._hook(a, b)))
        return self

    def _hook(self, a: torch.Tensor, b: torch.Tensor):
        scale = self.scale

        def add_delta(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = inputs[0].to(a.dtype)
            delta = torch.nn.functional.linear(torch.nn.functional.linear(x, a), b) * scale
            return (output + delta).to(output.dtype)

        return add_delta

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def resolve_adapter_file(reference: str, cache_dir: str | None = None, storage_options: dict | None = None) -> Path:
    """Local folder/file, fsspec URI (copied to a local cache) or Hugging Face Hub repo id -> the
    local `pytorch_lora_weights.safetensors`. Raises LoraError naming what was tried."""
    local = Path(reference).expanduser()
    if local.is_dir():
        weights = local / LORA_WEIGHTS
        if not weights.is_file():
            raise LoraError(f"LoRA {reference!r}: folder has no {LORA_WEIGHTS}")
        return weights
    if local.is_file():
        return local
    if "://" in reference:
        return _fetch_uri(reference, cache_dir, storage_options)
    looks_like_repo = reference.count("/") == 1 and not reference.startswith((".", "/", "~"))
    if not looks_like_repo:
        raise LoraError(f"LoRA {reference!r}: no such file or folder (and not a Hub repo id 'owner/name')")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(reference, cache_dir=cache_dir, allow_patterns=[LORA_WEIGHTS])
    except Exception as error:
        raise LoraError(f"LoRA {reference!r}: not a local path, and the Hub download failed: "
                        f"{type(error).__name__}: {error}") from error
    weights = Path(folder) / LORA_WEIGHTS
    if not weights.is_file():
        raise LoraError(f"LoRA {reference!r}: the Hub repo has no {LORA_WEIGHTS}")
    return weights


def _fetch_uri(uri: str, cache_dir: str | None, storage_options: dict | None) -> Path:
    import fsspec

    target = uri.rstrip("/")
    if not target.endswith(".safetensors"):
        target = f"{target}/{LORA_WEIGHTS}"
    root = Path(cache_dir or os.environ.get("ACESTEP_LORA_CACHE", Path.home() / ".cache" / "acestep-batch" / "lora"))
    local = root / hashlib.sha256(target.encode()).hexdigest()[:24] / LORA_WEIGHTS
    if local.is_file():
        return local
    try:
        with fsspec.open(target, "rb", **(storage_options or {})) as handle:
            data = handle.read()
    except Exception as error:
        raise LoraError(f"LoRA {uri!r}: cannot read {target}: {type(error).__name__}: {error}") from error
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_suffix(f".part{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, local)
    return local


class AdapterCache:
    """LRU cache of loaded adapters (on the model's device); counts loads for monitoring."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device, size: int = 4,
                 cache_dir: str | None = None, storage_options: dict | None = None) -> None:
        if size < 1:
            raise ValueError("the LoRA cache needs room for at least one adapter")
        self.model, self.dtype, self.device, self.size = model, dtype, device, size
        self.cache_dir, self.storage_options = cache_dir, storage_options
        self._adapters: OrderedDict[str, LoraAdapter] = OrderedDict()
        self.loads = 0
        self.hits = 0

    def get(self, reference: str) -> LoraAdapter:
        if reference in self._adapters:
            self._adapters.move_to_end(reference)
            self.hits += 1
            return self._adapters[reference]
        weights = resolve_adapter_file(reference, self.cache_dir, self.storage_options)
        adapter = read_adapter(reference, weights, self.model, self.dtype, self.device)
        self.loads += 1
        self._adapters[reference] = adapter
        while len(self._adapters) > self.size:
            self._adapters.popitem(last=False)
        return adapter

    @property
    def loaded(self) -> list[str]:
        return list(self._adapters)


def make_tiny_lora(
    folder: str | os.PathLike, transformer: nn.Module, rank: int = 4, seed: int = 0,
    targets: Iterable[str] = DEFAULT_TARGET_MODULES, alpha: float | None = None, use_rslora: bool = False,
    with_metadata: bool = False, scale: float = 0.05,
) -> Path:
    """Write a random adapter in upstream's layout for `transformer` (deterministic in `seed`).

    Both A and B are random (a trained-from-zero B would make the adapter a no-op); `scale`
    keeps the update small next to the base weights. With `with_metadata` the header carries
    `lora_adapter_metadata` (r, lora_alpha, use_rslora, target_modules) as newer diffusers write it.
    """
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, linear in sorted(target_linears(transformer, targets).items()):
        a = torch.randn((rank, linear.in_features), generator=generator) / math.sqrt(linear.in_features)
        b = torch.randn((linear.out_features, rank), generator=generator) * scale
        tensors[f"{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{name}.lora_B.weight"] = b.contiguous()
    if not tensors:
        raise LoraError(f"no Linear module of this transformer matches the targets {list(targets)}")
    metadata = None
    if with_metadata:
        config = {"r": rank, "lora_alpha": alpha if alpha is not None else rank, "use_rslora": use_rslora,
                  "target_modules": list(targets)}
        metadata = {METADATA_KEY: json.dumps(config)}  # one key: safetensors orders several at random
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / LORA_WEIGHTS), metadata=metadata)
    return out / LORA_WEIGHTS


__all__ = [
    "LORA_WEIGHTS", "DEFAULT_TARGET_MODULES", "SCALE_MODES", "LoraError", "LoraAdapter", "ActiveLora",
    "AdapterCache", "read_adapter", "resolve_adapter_file", "make_tiny_lora", "target_linears", "file_sha256",
]
