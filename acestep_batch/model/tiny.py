"""Random-weight checkpoints in the official ACE-Step v1 layout, small enough for CPU tests.

Two profiles:
- `tiny` (default): every component shrunk, including the lyric encoder (through this project's
  `lyric_encoder_*` config extension) and a small generated lyric vocabulary carried in
  `ace_step_transformer/lyric_vocab.json`. Loads only here.
- `parity`: the small configurations of the spec's parity plan (section 10.2) with the full-size
  lyric encoder and the 6,693-id lyric vocabulary, so upstream loads the same files unchanged.

Weights are deterministic in (profile, seed, tensor name) and bf16-representable (rounded to
bf16, stored as float32) so fp32 and bf16 runs share them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import (
    DCAE_DIR,
    DIFFUSERS_WEIGHTS,
    TEXT_ENCODER_DIR,
    TRANSFORMER_DIR,
    TRANSFORMERS_WEIGHTS,
    VOCODER_DIR,
)

PROFILES = ("tiny", "parity")

_SSL = {"ssl_encoder_depths": [1, 1], "ssl_latent_dims": [8, 4], "ssl_names": ["mert", "m-hubert"]}

TRANSFORMER_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2, "inner_dim": 32, "mlp_ratio": 2.5,
        "in_channels": 8, "out_channels": 8, "patch_size": [16, 1], "max_height": 16, "max_width": 64,
        "max_position": 4096, "rope_theta": 1000000.0, "speaker_embedding_dim": 512, "text_embedding_dim": 32,
        "lyric_hidden_size": 64, "lyric_encoder_heads": 4, "lyric_encoder_linear_units": 128,
        "lyric_encoder_num_blocks": 6, **_SSL,
    },
    "parity": {
        "num_layers": 20, "attention_head_dim": 16, "num_attention_heads": 2, "inner_dim": 32, "mlp_ratio": 2.5,
        "in_channels": 8, "out_channels": 8, "patch_size": [16, 1], "max_height": 16, "max_width": 64,
        "max_position": 4096, "rope_theta": 1000000.0, "speaker_embedding_dim": 512, "text_embedding_dim": 32,
        "lyric_encoder_vocab_size": 6693, "lyric_hidden_size": 1024, **_SSL,
    },
}

DCAE_TINY_CONFIG: dict[str, Any] = {
    "in_channels": 2, "latent_channels": 8, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [8, 16, 32, 64], "decoder_block_out_channels": [8, 16, 32, 64],
    "encoder_layers_per_block": [1, 1, 1, 2], "decoder_layers_per_block": [1, 1, 1, 2],
    "encoder_qkv_multiscales": [[], [], [5], [5]], "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "scaling_factor": 0.41407,
}

VOCODER_TINY_CONFIG: dict[str, Any] = {
    "input_channels": 128, "depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32], "drop_path_rate": 0.0,
    "kernel_sizes": [7], "upsample_rates": [4, 4, 2, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11, 13], "resblock_dilation_sizes": [[1, 3, 5]] * 4, "num_mels": 32,
    "upsample_initial_channel": 128, "use_template": False, "pre_conv_kernel_size": 13,
    "post_conv_kernel_size": 13, "sampling_rate": 44100, "n_fft": 2048, "win_length": 2048, "hop_length": 512,
    "f_min": 40, "f_max": 16000, "n_mels": 128,
}

VOCODER_CONFIGS: dict[str, dict[str, Any]] = {
    # one MRF block with one conv pair per stage: the CPU spends its time in tiny-channel convs
    # over long signals, so this is ~10x faster than the spec's tiny vocoder and just as real
    "tiny": {**VOCODER_TINY_CONFIG, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]]},
    "parity": VOCODER_TINY_CONFIG,
}

UMT5_TINY_CONFIG: dict[str, Any] = {
    "architectures": ["UMT5EncoderModel"], "model_type": "umt5", "d_model": 32, "d_kv": 16, "d_ff": 64,
    "num_layers": 10, "num_decoder_layers": 10, "num_heads": 2, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-06,
    "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": True,
    "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}

_PROMPT_WORDS = (
    "lo-fi hip hop mellow piano bpm drums bass guitar synth pad ambient pop rock jazz electronic "
    "house techno trap vocal female male loop drum kick snare hat chill upbeat dark bright warm "
    "minor major key tempo 80 90 100 120 128 140 beat groove melody chord strings orchestral"
).split()


def _initial_tensor(name: str, shape: tuple[int, ...], owner: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """Small, O(1)-activation random values; norm weights near 1, everything else near 0."""
    noise = torch.randn(shape, generator=generator)
    leaf = name.rsplit(".", 1)[-1]
    if "Norm" in type(owner).__name__ and leaf == "weight":
        return 1.0 + 0.1 * noise
    if leaf in ("bias", "pos_bias_u", "pos_bias_v"):
        return 0.02 * noise
    if leaf == "gamma":
        return 0.5 + 0.1 * noise
    if leaf == "weight_g":
        return 1.0 + 0.1 * noise
    if leaf == "scale_shift_table":
        return 0.1 * noise
    if isinstance(owner, nn.Embedding):
        return noise
    fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
    return noise / fan_in**0.5


def random_state_dict(module: nn.Module, seed: int, component: str) -> dict[str, torch.Tensor]:
    """Deterministic, bf16-representable random values for every entry of the module's state dict."""
    owners = dict(module.named_modules())
    state: dict[str, torch.Tensor] = {}
    for name, value in module.state_dict().items():
        if not value.is_floating_point():
            state[name] = value.clone()
            continue
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{component}/{name}".encode()))
        owner = owners.get(name.rsplit(".", 1)[0], module) if "." in name else module
        tensor = _initial_tensor(name, tuple(value.shape), owner, generator)
        state[name] = tensor.to(torch.bfloat16).to(torch.float32).contiguous()
    return state


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_prompt_tokenizer(folder: Path) -> int:
    """A small UMT5-style tokenizer (Unigram, Metaspace, `</s>` appended); returns its vocab size."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    characters = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,-'!?:;()&/#"))
    pieces = [("▁", -2.0)] + [(char, -5.0) for char in characters] + [(f"▁{char}", -5.5) for char in characters]
    pieces += [(f"▁{word}", -3.0) for word in _PROMPT_WORDS]
    vocab, seen = [], set()
    for piece, score in specials + pieces:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))
    tokenizer = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    special_map = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    _write_json(folder / "special_tokens_map.json", special_map)
    _write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": "T5TokenizerFast", "extra_ids": 0, "model_max_length": 512, "additional_special_tokens": [], **special_map},
    )
    return len(vocab)


def make_tiny_checkpoint(
    directory: str | Path, profile: str = "tiny", seed: int = 0, transformer_overrides: dict[str, Any] | None = None
) -> Path:
    """Write a random-weight checkpoint in the official four-folder layout and return its path.

    `transformer_overrides` replaces transformer config values (benchmarks use it for mid-size
    configurations)."""
    from transformers import UMT5Config, UMT5EncoderModel

    from .dcae import build_autoencoder_dc
    from .transformer import ACEStepTransformer2DModel
    from .vocoder import ADaMoSHiFiGANV1

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)

    transformer_config = {**TRANSFORMER_CONFIGS[profile], **(transformer_overrides or {})}
    if profile == "tiny":
        from .lyrics import LYRIC_VOCAB_FILENAME, write_tiny_vocab

        transformer_config["lyric_encoder_vocab_size"] = write_tiny_vocab(root / TRANSFORMER_DIR / LYRIC_VOCAB_FILENAME)
    transformer = ACEStepTransformer2DModel(**transformer_config)
    _save_component(root / TRANSFORMER_DIR, DIFFUSERS_WEIGHTS, random_state_dict(transformer, seed, "transformer"),
                    {"_class_name": "ACEStepTransformer2DModel", "_diffusers_version": "0.32.2", **transformer_config})

    dcae = build_autoencoder_dc(DCAE_TINY_CONFIG)
    _save_component(root / DCAE_DIR, DIFFUSERS_WEIGHTS, random_state_dict(dcae, seed, "dcae"),
                    {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.2", **DCAE_TINY_CONFIG})

    vocoder_config = VOCODER_CONFIGS[profile]
    vocoder = ADaMoSHiFiGANV1.from_config(vocoder_config)
    vocoder_state = {k: v for k, v in random_state_dict(vocoder, seed, "vocoder").items() if k not in vocoder.OPTIONAL_STATE_KEYS}
    _save_component(root / VOCODER_DIR, DIFFUSERS_WEIGHTS, vocoder_state,
                    {"_class_name": "ADaMoSHiFiGANV1", "_diffusers_version": "0.32.2", **vocoder_config})

    text_dir = root / TEXT_ENCODER_DIR
    vocab_size = write_prompt_tokenizer(text_dir)
    umt5_config = {**UMT5_TINY_CONFIG, "vocab_size": vocab_size}
    umt5 = UMT5EncoderModel(UMT5Config(**umt5_config))
    umt5_state = {k: v for k, v in random_state_dict(umt5, seed, "umt5").items() if k != "encoder.embed_tokens.weight"}
    _save_component(text_dir, TRANSFORMERS_WEIGHTS, umt5_state, umt5_config)
    return root


def _save_component(folder: Path, filename: str, state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", config)
    tmp = folder / f".{filename}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / filename)
