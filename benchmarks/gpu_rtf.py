"""Real-time factor of the full-size model on a GPU, bf16, random weights (issue: engine, item 7).

Builds the full 3.5B configuration (transformer, UMT5-base encoder, music DCAE, vocoder) with
random weights directly on the GPU - no checkpoint download needed - and times text2music at 27
and 60 steps, batch 1, 4 and 8 (60 s renders, one seed per output; warm-up run first).
RTF = audio seconds rendered / wall seconds (for a batch: all its outputs' audio). Peak GPU memory
per (batch, steps). Upstream publishes 27.27x (A100) and 34.48x (RTX 4090) at 27 steps, batch 1.

    python benchmarks/gpu_rtf.py [--duration 60] [--steps 27 60] [--batch 1 4 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def build_pipeline(device: torch.device, dtype: torch.dtype):
    from transformers import UMT5Config, UMT5EncoderModel

    from acestep_batch.model.dcae import (
        DCAE_DEFAULT_CONFIG,
        MusicDCAE,
        build_autoencoder_dc,
    )
    from acestep_batch.model.info import FULL_TRANSFORMER_CONFIG, FULL_UMT5_CONFIG
    from acestep_batch.model.lyrics import LyricTokenizer, write_tiny_vocab
    from acestep_batch.model.pipeline import AceStepPipeline, EngineInfo
    from acestep_batch.model.text_encoder import PromptEncoder, load_prompt_tokenizer
    from acestep_batch.model.tiny import write_prompt_tokenizer
    from acestep_batch.model.transformer import ACEStepTransformer2DModel
    from acestep_batch.model.vocoder import ADaMoSHiFiGANV1

    def randomize(module: torch.nn.Module) -> torch.nn.Module:
        module.to_empty(device=device)
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.normal_(0, 0.02 if param.dim() > 1 else 0.01)
                if name.endswith(("norm.weight", "weight_g")):
                    param.fill_(1.0)
        return module.to(dtype).eval()

    with torch.device("meta"):
        transformer = ACEStepTransformer2DModel(**FULL_TRANSFORMER_CONFIG)
        umt5 = UMT5EncoderModel(UMT5Config(**{**FULL_UMT5_CONFIG, "vocab_size": 512}))
        dcae = build_autoencoder_dc(DCAE_DEFAULT_CONFIG)
    vocoder = ADaMoSHiFiGANV1().to(device)
    tmp = Path(tempfile.mkdtemp())
    write_prompt_tokenizer(tmp / "umt5")
    write_tiny_vocab(tmp / "vocab.json")
    music_dcae = MusicDCAE(randomize(dcae), vocoder).to(device).eval().to(dtype)
    prompt_encoder = PromptEncoder(randomize(umt5), load_prompt_tokenizer(tmp / "umt5"))
    info = EngineInfo("random-full-size", str(tmp), None, "random", str(device), str(dtype), 0.0)
    return AceStepPipeline(randomize(transformer), prompt_encoder, music_dcae,
                           LyricTokenizer.from_file(tmp / "vocab.json"), device, dtype, info)


def main() -> None:
    from acestep_batch.model.request import GenerationRequest

    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[27, 60])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8], help="requests per sampler batch")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test of the script)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_rtf.py needs a CUDA GPU (use --device cpu only to smoke-test the script)")
    device, dtype = torch.device(args.device), torch.bfloat16
    cuda = device.type == "cuda"
    pipeline = build_pipeline(device, dtype)
    lyrics = "[verse]\nneon lights they flicker bright\ncity never sleeps tonight\n[chorus]\nwe are young"
    results = []
    for batch in args.batch:
        for steps in args.steps:
            requests = [GenerationRequest(prompt="pop, synth, female vocal, 120 bpm", lyrics=lyrics,
                                          duration=args.duration, seed=seed, steps=steps) for seed in range(batch)]
            pipeline.generate(requests)  # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            outputs = pipeline.generate(requests)
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
            audio = sum(r.audio.shape[-1] / r.sample_rate for r in outputs)
            results.append({"batch": batch, "steps": steps, "audio_s": audio, "wall_s": wall, "rtf": audio / wall,
                            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
                            "device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype),
                            "timings": outputs[0].timings, "finite": all(bool(torch.isfinite(r.audio).all()) for r in outputs)})
            print(f"batch {batch}, {steps} steps: {audio:.1f} s audio in {wall:.2f} s -> RTF {audio / wall:.2f}x, "
                  f"peak {results[-1]['peak_gib']:.1f} GiB on {results[-1]['device']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
