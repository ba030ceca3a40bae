"""Engine benchmarks on the CPU (issue: ACE-Step v1 engine, acceptance 7).

For the tiny and a mid-size random configuration: seconds per sampler step (one guided step =
cond + uncond transformer passes) and peak resident memory; and a heterogeneous batch of 8
requests against the same 8 rendered one by one, as a ratio measured side by side in one run
(`--repeats` pairs, interleaved with alternating order; the median ratio is reported).

    .venv/bin/python benchmarks/engine_cpu.py [--threads 1] [--json results.json]

`--threads` sets torch's intra-op threads (default 1: on a small shared VM two OpenMP threads
spin-wait on each other while other processes hold the cores, and a step can take 10x longer).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "tiny": {},
    # a mid-size transformer: 8 blocks of width 512 (8 heads x 64), lyric encoder width 256
    "mid": {"num_layers": 8, "num_attention_heads": 8, "attention_head_dim": 64, "inner_dim": 512,
            "lyric_hidden_size": 256, "lyric_encoder_heads": 4, "lyric_encoder_linear_units": 1024},
}


def _requests(count: int, duration: float, steps: int):
    from acestep_batch.model.request import GenerationRequest

    prompts = ["lo-fi hip hop, mellow piano", "techno drum loop, 128 bpm", "ambient pad, warm", "rock, guitar"]
    lyrics = ["", "[verse]\nNeon lights they flicker bright", "我走过深夜的街道", ""]
    return [
        GenerationRequest(prompt=prompts[i % 4], lyrics=lyrics[i % 4], duration=duration + 0.5 * (i % 3), seed=i, steps=steps)
        for i in range(count)
    ]


def measure(name: str, duration: float, steps: int, threads: int = 0, repeats: int = 3) -> dict:
    """Runs inside a fresh process so peak RSS belongs to this configuration alone."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig
    from acestep_batch.model.tiny import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = make_tiny_checkpoint(Path(tmp) / name, "tiny", 0, CONFIGS[name])
        pipeline = AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(root), device="cpu"))
    params = sum(p.numel() for p in pipeline.transformer.parameters())
    single = _requests(1, duration, steps)
    pipeline.generate(single)  # warm-up
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_step(_done: int, _total: int) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    last[0] = time.perf_counter()
    pipeline.sample_latents(single, progress=on_step)
    batch = _requests(8, duration, steps)
    batched_all, singles_all, ratios = [], [], []
    for repeat in range(repeats):  # interleaved, the order alternating, so slow spells hit both
        timings = {}
        for kind in (("batch", "singles") if repeat % 2 == 0 else ("singles", "batch")):
            started = time.perf_counter()
            if kind == "batch":
                pipeline.generate(batch)
            else:
                for request in batch:
                    pipeline.generate([request])
            timings[kind] = time.perf_counter() - started
        batched_all.append(timings["batch"])
        singles_all.append(timings["singles"])
        ratios.append(timings["singles"] / timings["batch"])
    batched, singles = statistics.median(batched_all), statistics.median(singles_all)
    audio_seconds = sum(r.duration for r in batch)
    return {
        "config": name, "transformer_parameters": params, "duration_s": duration, "steps": steps,
        "threads": torch.get_num_threads(), "seconds_per_step_mean": sum(step_times) / len(step_times),
        "seconds_per_step_max": max(step_times), "batch8_s": batched, "singles8_s": singles,
        "batch8_s_all": batched_all, "singles8_s_all": singles_all, "repeats": repeats,
        "batch8_speedup_vs_singles": statistics.median(ratios), "batch8_speedup_all": ratios, "audio_seconds_per_s_batch8": audio_seconds / batched,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default, one per core)")
    parser.add_argument("--repeats", type=int, default=3, help="batch/singles pairs, interleaved; medians reported")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=sorted(CONFIGS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.duration, args.steps, args.threads, args.repeats)))
        return
    results = []
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--duration", str(args.duration),
                              "--steps", str(args.steps), "--threads", str(args.threads),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['config']:>5}: {r['transformer_parameters']:>11,} transformer params | "
              f"{r['seconds_per_step_mean'] * 1000:7.1f} ms/step ({r['duration_s']:.0f} s audio) | "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB | {r['threads']} thread(s) | batch of 8 vs 8 singles: {r['batch8_speedup_vs_singles']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
