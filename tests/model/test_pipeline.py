"""End-to-end text2music on the tiny checkpoint (real components, CPU float32).

Acceptance: output geometry (spec 1.5), determinism per seed (6.2), every scheduler x cfg_type,
double-condition guidance and ERG (5.2-5.3, 6.3), and heterogeneous batches equal single runs
(7.2), including a batch whose items need different sampler loops.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from acestep_batch.model.request import GenerationRequest

pytestmark = pytest.mark.usefixtures("single_thread")

BATCH_TOLERANCE = 1e-4


def frames(duration: float) -> int:
    return int(duration * 44100 / 512 / 8)


def peak_dbfs(wave: torch.Tensor) -> float:
    return 20 * math.log10(max(wave.abs().max().item(), 1e-12))


def assert_valid_audio(wave: torch.Tensor) -> None:
    assert wave.dtype == torch.float32 and wave.dim() == 2 and wave.shape[0] == 2
    assert torch.isfinite(wave).all()
    assert peak_dbfs(wave) > -60.0


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def base(**overrides) -> GenerationRequest:
    fields = {"prompt": "lo-fi hip hop, mellow piano, 80 bpm", "lyrics": "hello night\nthe street", "duration": 1.0,
              "seed": 7, "steps": 4}
    fields.update(overrides)
    return GenerationRequest(**fields)


# A heterogeneous batch: instrumental, English and Chinese lyrics, four durations, four seeds,
# different guidance settings (cfg types, scales, intervals, decay, double condition, ERG flags).
MIXED = [
    GenerationRequest(prompt="ambient pad, warm synth", lyrics="", duration=1.0, seed=11, steps=4),
    GenerationRequest(prompt="pop rock, female vocal, 120 bpm",
                      lyrics="[verse]\nwalking down the empty street\nlights are fading out",
                      duration=2.0, seed=22, steps=4, cfg_type="cfg", guidance_scale=7.0, guidance_interval=0.7,
                      omega_scale=5.0),
    GenerationRequest(prompt="chinese pop, piano", lyrics="我走过深夜的街道", duration=1.5, seed=33, steps=4,
                      cfg_type="cfg_star", guidance_interval=1.0, use_erg_lyric=False),
    GenerationRequest(prompt="jazz, bass, drums", lyrics="hello night", duration=2.5, seed=44, steps=4,
                      guidance_scale_text=2.5, guidance_scale_lyric=1.5, use_erg_diffusion=False,
                      guidance_interval_decay=1.0, min_guidance_scale=3.0),
]


@pytest.fixture(scope="module")
def render(tiny_pipe):
    """Single-request generation, memoised per (request, sample_rate) within this module: the
    engine is deterministic (see test_seed_determinism), and decoding dominates the CPU time."""
    cache: dict = {}

    def run(request: GenerationRequest, sample_rate: int = 44100):
        key = (request, sample_rate)
        if key not in cache:
            cache[key] = tiny_pipe.generate([request], sample_rate=sample_rate)[0]
        return cache[key]

    return run


# ------------------------------------------------------------------------------------------------
# Geometry, determinism
# ------------------------------------------------------------------------------------------------


def test_output_at_44k(render) -> None:
    result = render(MIXED[1])  # 2.0 s
    assert result.sample_rate == 44100 and result.latent_frames == frames(2.0) == 21
    assert result.audio.shape == (2, 4096 * 21)
    assert_valid_audio(result.audio)


def test_output_at_48k(render) -> None:
    result = render(base(), 48000)  # 1.0 s
    n44 = 4096 * frames(1.0)
    assert result.sample_rate == 48000
    assert result.audio.shape == (2, math.ceil(160 * n44 / 147))
    assert_valid_audio(result.audio)


def test_unsupported_sample_rate_and_task_raise(tiny_pipe) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        tiny_pipe.generate([base()], sample_rate=22050)
    with pytest.raises(ValueError, match="unknown task"):
        tiny_pipe.generate([base(task="remix")])


def test_seed_determinism(tiny_pipe, render) -> None:
    first = render(base())
    second, other = tiny_pipe.generate([base()])[0], tiny_pipe.generate([base(seed=8)])[0]
    assert torch.equal(first.audio, second.audio)
    assert max_diff(first.audio, other.audio) > 1e-3


# ------------------------------------------------------------------------------------------------
# Schedulers x guidance types
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["euler", "heun", "pingpong"])
def test_every_scheduler_and_cfg_type(tiny_pipe, render, scheduler: str) -> None:
    """One loop per scheduler with the three cfg types batched, same seed, two durations (so the
    Heun state and the per-item PingPong noise run on padded batches); guidance on every step so
    the CFG-Zero* alpha path is reached after its two zero-init steps. Each item is finite and
    audible, the cfg types give different audio, and each item equals its own single run."""
    requests = [base(scheduler=scheduler, cfg_type=cfg_type, steps=3, guidance_interval=1.0, duration=duration)
                for cfg_type, duration in (("apg", 1.0), ("cfg", 1.5), ("cfg_star", 1.0))]
    batch = tiny_pipe.generate(requests)
    for result, request in zip(batch, requests):
        assert result.request == request and result.timings["batch_size"] == 3.0
        assert result.audio.shape == (2, 4096 * frames(request.duration))
        assert_valid_audio(result.audio)
        assert max_diff(result.audio, render(request).audio) <= BATCH_TOLERANCE
    head = 4096 * frames(1.0)
    audio = [result.audio[:, :head] for result in batch]
    assert max_diff(audio[0], audio[1]) > 1e-4
    assert max_diff(audio[1], audio[2]) > 1e-4
    assert max_diff(audio[0], audio[2]) > 1e-4


def test_oss_steps_run(render) -> None:
    oss = render(base(oss_steps="2,5,9", steps=60))
    plain = render(base())
    assert_valid_audio(oss.audio)
    assert max_diff(oss.audio, plain.audio) > 1e-4


# ------------------------------------------------------------------------------------------------
# Double condition and ERG
# ------------------------------------------------------------------------------------------------


def test_double_condition_guidance(render) -> None:
    plain = render(base()).audio
    dual = render(base(guidance_scale_text=2.5, guidance_scale_lyric=1.5)).audio
    assert_valid_audio(dual)
    assert max_diff(plain, dual) > 1e-4
    # The double-condition formula overrides cfg_type (spec 6.5) ...
    dual_cfg = render(base(guidance_scale_text=2.5, guidance_scale_lyric=1.5, cfg_type="cfg")).audio
    assert torch.equal(dual, dual_cfg)
    # ... and is only used when both scales exceed 1.
    assert torch.equal(plain, render(base(guidance_scale_text=2.5, guidance_scale_lyric=1.0)).audio)


def test_erg_tag_and_lyric_flags(render) -> None:
    all_on = render(base()).audio
    tag_off = render(base(use_erg_tag=False)).audio
    lyric_off = render(base(use_erg_lyric=False)).audio
    assert max_diff(all_on, tag_off) > 1e-5
    assert max_diff(all_on, lyric_off) > 1e-5
    assert max_diff(tag_off, lyric_off) > 1e-5
    # Spec 5.2: the ERG-tag null text is only consumed when ERG-lyric is on.
    assert torch.equal(lyric_off, render(base(use_erg_lyric=False, use_erg_tag=False)).audio)


def test_guidance_scale_one_is_unguided(render) -> None:
    """guidance_scale 1.0 disables CFG: only the conditional prediction is used, so the null
    condition's ERG settings cannot matter."""
    plain = render(base(guidance_scale=1.0)).audio
    assert torch.equal(plain, render(base(guidance_scale=1.0, use_erg_tag=False, use_erg_lyric=False)).audio)
    assert max_diff(plain, render(base()).audio) > 1e-4


@pytest.fixture(scope="module")
def deep_pipe(tmp_path_factory, tiny_ckpt):
    """The tiny checkpoint with a 20-block transformer: ERG-diffusion addresses blocks 15-19
    (spec 5.3, 10.2), which the 2-block tiny profile does not have. Blocks 0-1 keep their weights
    (the generated values depend only on the tensor name); blocks 2-19 are new random weights."""
    import json
    import shutil

    from safetensors.torch import save_file

    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig
    from acestep_batch.model.tiny import random_state_dict
    from acestep_batch.model.transformer import ACEStepTransformer2DModel

    root = Path(shutil.copytree(tiny_ckpt, tmp_path_factory.mktemp("deep") / "ckpt"))
    folder = root / "ace_step_transformer"
    config = json.loads((folder / "config.json").read_text())
    config["num_layers"] = 20
    (folder / "config.json").write_text(json.dumps(config))
    model = ACEStepTransformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    save_file(random_state_dict(model, 0, "transformer"), str(folder / "diffusion_pytorch_model.safetensors"))
    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(root), device="cpu", dtype="float32"))


def test_erg_diffusion_flag_per_item_in_a_batch(deep_pipe) -> None:
    on, off = base(seed=9), base(seed=9, use_erg_diffusion=False)
    single_on, single_off = deep_pipe.generate([on])[0].audio, deep_pipe.generate([off])[0].audio
    assert_valid_audio(single_on)
    assert max_diff(single_on, single_off) > 1e-4
    batch = deep_pipe.generate([on, off])
    assert batch[0].timings["batch_size"] == 2.0
    assert max_diff(batch[0].audio, single_on) <= BATCH_TOLERANCE
    assert max_diff(batch[1].audio, single_off) <= BATCH_TOLERANCE


# ------------------------------------------------------------------------------------------------
# Heterogeneous batches equal single runs (the key acceptance test)
# ------------------------------------------------------------------------------------------------


def _assert_matches_singles(render, requests, batch_results) -> None:
    assert [r.request for r in batch_results] == list(requests)
    for request, result in zip(requests, batch_results):
        single = render(request)
        assert result.latent_frames == frames(request.duration)
        assert result.audio.shape == single.audio.shape == (2, 4096 * frames(request.duration))
        assert_valid_audio(result.audio)
        diff = max_diff(result.audio, single.audio)
        assert diff <= BATCH_TOLERANCE, (request, diff)


def test_mixed_batch_equals_single_runs(tiny_pipe, render) -> None:
    assert len({r.loop_key() for r in MIXED}) == 1
    results = tiny_pipe.generate(MIXED)
    assert all(r.timings["batch_size"] == 4.0 for r in results)  # really one batched loop
    _assert_matches_singles(render, MIXED, results)
    # Sanity: the items are genuinely different outputs.
    assert max_diff(results[0].audio, results[1].audio[:, : results[0].audio.shape[1]]) > 1e-3


def test_mixed_steps_split_into_loops_and_equal_single_runs(tiny_pipe, render) -> None:
    """Items needing different sampler loops (steps 4 and 3), interleaved: two loops of two."""
    requests = [MIXED[0], replace(MIXED[2], steps=3), MIXED[1], replace(MIXED[0], steps=3, seed=12)]
    results = tiny_pipe.generate(requests)
    assert [r.timings["batch_size"] for r in results] == [2.0, 2.0, 2.0, 2.0]
    _assert_matches_singles(render, requests, results)
    assert max_diff(results[0].audio, results[3].audio) > 1e-3
