"""Parameter counts and bf16 memory per component, built on the meta device (no weights, no RAM)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import DCAE_DIR, TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR, read_config

# The official 3.5B configuration (spec 1.1) and google/umt5-base's encoder (spec 1.4).
FULL_TRANSFORMER_CONFIG: dict[str, Any] = {
    "attention_head_dim": 128, "in_channels": 8, "inner_dim": 2560, "lyric_encoder_vocab_size": 6693,
    "lyric_hidden_size": 1024, "max_height": 16, "max_position": 32768, "max_width": 32768, "mlp_ratio": 2.5,
    "num_attention_heads": 20, "num_layers": 24, "out_channels": 8, "patch_size": [16, 1],
    "rope_theta": 1000000.0, "speaker_embedding_dim": 512, "ssl_encoder_depths": [8, 8],
    "ssl_latent_dims": [1024, 768], "ssl_names": ["mert", "m-hubert"], "text_embedding_dim": 768,
}
FULL_UMT5_CONFIG: dict[str, Any] = {
    "model_type": "umt5", "vocab_size": 256384, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12,
    "num_heads": 12, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class ComponentInfo:
    name: str
    parameters: int
    detail: dict[str, int]

    @property
    def bf16_gib(self) -> float:
        return self.parameters * 2 / 2**30


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def component_infos(checkpoint_dir: str | Path | None = None) -> list[ComponentInfo]:
    """Counts for the checkpoint's own configs, or for the full-size configuration when None."""
    from transformers import UMT5Config, UMT5EncoderModel

    from .dcae import DCAE_DEFAULT_CONFIG, build_autoencoder_dc
    from .transformer import ACEStepTransformer2DModel
    from .vocoder import ADaMoSHiFiGANV1

    root = Path(checkpoint_dir) if checkpoint_dir else None

    def config(folder: str, default: dict[str, Any]) -> dict[str, Any]:
        raw = read_config(root / folder) if root else default
        return {k: v for k, v in raw.items() if not k.startswith("_")}

    with torch.device("meta"):
        transformer = ACEStepTransformer2DModel(**config(TRANSFORMER_DIR, FULL_TRANSFORMER_CONFIG))
        umt5 = UMT5EncoderModel(UMT5Config(**config(TEXT_ENCODER_DIR, FULL_UMT5_CONFIG)))
        dcae = build_autoencoder_dc(config(DCAE_DIR, DCAE_DEFAULT_CONFIG))
        vocoder = ADaMoSHiFiGANV1.from_config(config(VOCODER_DIR, {}))
    return [
        ComponentInfo("transformer", _count(transformer), {
            "transformer_blocks": _count(transformer.transformer_blocks), "lyric_encoder": _count(transformer.lyric_encoder),
            "projectors (training only)": _count(transformer.projectors),
        }),
        ComponentInfo("umt5 encoder", _count(umt5), {"shared embedding": _count(umt5.shared)}),
        ComponentInfo("music dcae", _count(dcae), {"encoder": _count(dcae.encoder), "decoder": _count(dcae.decoder)}),
        ComponentInfo("vocoder", _count(vocoder), {"backbone": _count(vocoder.backbone), "head": _count(vocoder.head)}),
    ]
