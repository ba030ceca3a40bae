"""Edit tasks and LoRA on the tiny checkpoint: properties that hold by construction.

Parity with upstream lives in test_parity_tasks.py; these tests pin what each task must do to
the source audio (keep it outside the repainted window, keep it in the middle of an extension,
return it untouched when no edit step runs), limits that fail one request with a clear error,
and the adapter cache (exact on/off switching, LRU loads, wrong adapters rejected).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acestep_batch.model.lora import LoraError, make_tiny_lora
from acestep_batch.model.pipeline import transformer_skeleton
from acestep_batch.model.request import GenerationRequest

pytestmark = pytest.mark.usefixtures("single_thread")

SOURCE_URI = "memory-source.wav"
SR = 48000


def base(**overrides) -> GenerationRequest:
    fields = {"prompt": "lo-fi hip hop, mellow piano", "lyrics": "hello night", "duration": 1.0, "seed": 7,
              "steps": 6}
    fields.update(overrides)
    return GenerationRequest(**fields)


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, int]:
    """2 s of stereo test audio at 48 kHz (resampled to 44.1 kHz inside the engine, like upstream)."""
    t = np.arange(2 * SR, dtype=np.float64) / SR
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    right = 0.25 * np.sin(2 * np.pi * 330 * t + 0.5)
    return np.stack([left, right]).astype(np.float32), SR


@pytest.fixture(scope="module")
def inputs(source) -> dict:
    return {SOURCE_URI: source}


@pytest.fixture(scope="module")
def src_latents(tiny_pipe, source) -> torch.Tensor:
    return tiny_pipe.encode_audio(source)


def latents(pipe, request: GenerationRequest, inputs=None) -> torch.Tensor:
    return pipe.sample_latents([request], inputs=inputs)[0]


# ------------------------------------------------------------------ retake
def test_retake_variance_zero_is_the_original_and_one_is_the_retake_seed(tiny_pipe) -> None:
    original = latents(tiny_pipe, base())
    assert torch.equal(latents(tiny_pipe, base(task="retake", retake_variance=0.0, retake_seeds=99)), original)
    full = latents(tiny_pipe, base(task="retake", retake_variance=1.0, retake_seeds=99))
    assert (full - latents(tiny_pipe, base(seed=99))).abs().max() < 1e-4  # cos(pi/2) is 4e-8, not 0
    partial = latents(tiny_pipe, base(task="retake", retake_variance=0.3, retake_seeds=99))
    assert (partial - original).abs().max() > 1e-3


def test_retake_seed_defaults_to_a_function_of_seed_that_differs_from_it() -> None:
    request = base(task="retake")
    assert request.effective_retake_seed() == base(task="retake").effective_retake_seed()
    assert request.effective_retake_seed() != request.seed
    assert base(task="retake", seed=8).effective_retake_seed() != request.effective_retake_seed()


def test_retake_batch_equals_single_runs(tiny_pipe) -> None:
    requests = [base(task="retake", retake_variance=0.2, retake_seeds=5),
                base(task="retake", retake_variance=0.7, seed=3, duration=1.5, lyrics="")]
    batch = tiny_pipe.sample_latents(requests)
    for request, together in zip(requests, batch):
        assert (together - latents(tiny_pipe, request)).abs().max() < 1e-4


# ------------------------------------------------------------------ repaint / extend
def test_repaint_keeps_the_source_outside_the_window(tiny_pipe, inputs, src_latents) -> None:
    request = base(task="repaint", src_audio=SOURCE_URI, repaint_start=0.5, repaint_end=1.2, retake_variance=0.6)
    out = latents(tiny_pipe, request, inputs)
    start, end = int(0.5 * 44100 / 512 / 8), int(1.2 * 44100 / 512 / 8)
    assert out.shape == src_latents.shape
    assert torch.equal(out[..., :start], src_latents[..., :start])
    assert torch.equal(out[..., end:], src_latents[..., end:])
    assert (out[..., start:end] - src_latents[..., start:end]).abs().max() > 1e-2


def test_extend_keeps_the_source_in_the_middle(tiny_pipe, inputs, src_latents) -> None:
    request = base(task="extend", src_audio=SOURCE_URI, repaint_start=-0.5, repaint_end=2.6)
    out = latents(tiny_pipe, request, inputs)
    left = 5  # int(-0.5 * 44100 / 4096) truncates toward zero
    right = int(2.6 * 44100 / 512 / 8) - src_latents.shape[-1]
    assert out.shape[-1] == left + src_latents.shape[-1] + right
    assert torch.equal(out[..., left : left + src_latents.shape[-1]], src_latents)
    result = tiny_pipe.generate([request], inputs=inputs)[0]
    assert result.audio.shape[-1] == 4096 * out.shape[-1] and result.info["source_frames"] == src_latents.shape[-1]


def test_extend_by_more_than_the_source_length_works(tiny_pipe, inputs, src_latents) -> None:
    request = base(task="extend", src_audio=SOURCE_URI, repaint_start=0.0, repaint_end=6.0)
    out = latents(tiny_pipe, request, inputs)
    assert out.shape[-1] == int(6.0 * 44100 / 512 / 8)
    assert torch.equal(out[..., : src_latents.shape[-1]], src_latents)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "repaint", "repaint_start": 0.5, "repaint_end": 9.0}, "outside the source audio"),
        ({"task": "repaint", "repaint_start": 1.0, "repaint_end": 0.5}, "outside the source audio"),
        ({"task": "extend", "repaint_start": 0.0, "repaint_end": 1.0}, "adds nothing"),
        ({"task": "extend", "repaint_start": -239.0, "repaint_end": 2.0}, "at most 240"),
        ({"task": "repaint", "repaint_start": 0.5, "repaint_end": 1.0, "retake_variance": 0.0}, "no sampler step"),
    ],
)
def test_bad_windows_fail_with_a_clear_error(tiny_pipe, inputs, overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_pipe.generate([base(src_audio=SOURCE_URI, **overrides)], inputs=inputs)


def test_repaint_of_the_whole_source_is_a_retake(tiny_pipe, inputs, src_latents) -> None:
    """Upstream's rule: a window covering every frame needs no pinning (a retake of that length)."""
    seconds = src_latents.shape[-1] * 4096 / 44100 + 1e-3
    whole = latents(tiny_pipe, base(task="repaint", src_audio=SOURCE_URI, repaint_start=0.0, repaint_end=seconds),
                    inputs)
    retake = latents(tiny_pipe, base(task="retake", duration=seconds))
    assert torch.equal(whole, retake)


# ------------------------------------------------------------------ audio2audio
def test_audio2audio_strength_zero_is_text2music_of_the_reference_length(tiny_pipe, inputs, src_latents) -> None:
    out = latents(tiny_pipe, base(task="audio2audio", ref_audio=SOURCE_URI, ref_audio_strength=0.0), inputs)
    seconds = src_latents.shape[-1] * 4096 / 44100 + 1e-3
    # equal up to float summation order (CPU reductions can vary with tensor alignment)
    assert (out - latents(tiny_pipe, base(duration=seconds))).abs().max() < 1e-4


def test_audio2audio_stays_closer_to_the_reference_with_more_strength(tiny_pipe, inputs, src_latents) -> None:
    weak = latents(tiny_pipe, base(task="audio2audio", ref_audio=SOURCE_URI, ref_audio_strength=0.2), inputs)
    strong = latents(tiny_pipe, base(task="audio2audio", ref_audio=SOURCE_URI, ref_audio_strength=0.8), inputs)
    assert (strong - src_latents).abs().mean() < (weak - src_latents).abs().mean()


# ------------------------------------------------------------------ edit
def test_edit_without_edit_steps_returns_the_source(tiny_pipe, inputs, src_latents) -> None:
    untouched = latents(tiny_pipe, base(task="edit", src_audio=SOURCE_URI, edit_target_prompt="jazz",
                                        edit_n_min=1.0, edit_n_max=1.0), inputs)
    assert torch.equal(untouched, src_latents)
    edited = latents(tiny_pipe, base(task="edit", src_audio=SOURCE_URI, edit_target_prompt="jazz",
                                     edit_n_min=0.2, edit_n_max=0.8, edit_n_avg=2), inputs)
    assert edited.shape == src_latents.shape and torch.isfinite(edited).all()
    assert (edited - src_latents).abs().max() > 1e-3


def test_edit_toward_the_same_conditions_changes_nothing(tiny_pipe, inputs, src_latents) -> None:
    """Target = source conditions, no guidance: FlowEdit's velocity difference is zero at every step.
    (With APG the two branches differ: upstream gives only the source branch a momentum buffer.)"""
    same = latents(tiny_pipe, base(task="edit", src_audio=SOURCE_URI, edit_n_min=0.0, edit_n_max=1.0,
                                   guidance_scale=1.0), inputs)
    assert (same - src_latents).abs().max() < 1e-5


# ------------------------------------------------------------------ LoRA
@pytest.fixture(scope="module")
def adapters(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    skeleton = transformer_skeleton(tiny_ckpt)
    return {
        "a": make_tiny_lora(root / "a", skeleton, seed=0).parent,
        "b": make_tiny_lora(root / "b", skeleton, seed=1).parent,
        "meta": make_tiny_lora(root / "meta", skeleton, seed=0, with_metadata=True, alpha=8.0).parent,
    }


def test_lora_weight_zero_and_unloading_are_exact(tiny_pipe, adapters) -> None:
    plain = latents(tiny_pipe, base())
    assert torch.equal(latents(tiny_pipe, base(lora=str(adapters["a"]), lora_weight=0.0)), plain)
    with_lora = latents(tiny_pipe, base(lora=str(adapters["a"]), lora_weight=1.0))
    assert (with_lora - plain).abs().max() > 1e-3
    assert torch.equal(latents(tiny_pipe, base()), plain)  # hooks removed after the loop
    half = latents(tiny_pipe, base(lora=str(adapters["a"]), lora_weight=0.5))
    assert 0 < (half - plain).abs().max() < (with_lora - plain).abs().max()


def test_lora_metadata_scale(tiny_pipe, adapters) -> None:
    """alpha 8 / r 4 in the header doubles the scale, unless the upstream (diffusers 0.33) mode is on."""
    doubled = latents(tiny_pipe, base(lora=str(adapters["meta"]), lora_weight=0.5))
    assert torch.allclose(doubled, latents(tiny_pipe, base(lora=str(adapters["a"]), lora_weight=1.0)), atol=1e-6)
    tiny_pipe.lora_scale_mode = "upstream"
    try:
        upstream = latents(tiny_pipe, base(lora=str(adapters["meta"]), lora_weight=0.5))
    finally:
        tiny_pipe.lora_scale_mode = "metadata"
    assert torch.allclose(upstream, latents(tiny_pipe, base(lora=str(adapters["a"]), lora_weight=0.5)), atol=1e-6)


def test_results_name_the_adapter_and_its_hash(tiny_pipe, adapters) -> None:
    import hashlib

    result = tiny_pipe.generate([base(lora=str(adapters["b"]), lora_weight=0.8)])[0]
    weights = adapters["b"] / "pytorch_lora_weights.safetensors"
    assert result.info["lora_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert result.info["lora_resolved"] == str(weights) and math.isclose(result.info["lora_scale"], 0.8)


def test_adapter_cache_is_lru(tiny_ckpt, adapters) -> None:
    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig

    pipe = AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(tiny_ckpt), device="cpu", dtype="float32",
                                                        lora_cache_size=1))
    for name in ("a", "a", "b", "b", "a"):
        pipe.adapters.get(str(adapters[name]))
    assert (pipe.adapters.loads, pipe.adapters.hits) == (3, 2)
    assert pipe.adapters.loaded == [str(adapters["a"])]


def test_wrong_adapters_are_rejected(tiny_pipe, adapters, tmp_path) -> None:
    with pytest.raises(LoraError, match="no such file"):
        tiny_pipe.generate([base(lora=str(tmp_path / "missing"))])
    with pytest.raises(LoraError, match="does not fit"):
        tiny_pipe.generate([base(lora=str(reshaped_adapter(adapters["a"], tmp_path)))])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoraError, match="no pytorch_lora_weights"):
        tiny_pipe.generate([base(lora=str(empty))])


def reshaped_adapter(adapter: Path, tmp_path: Path) -> Path:
    """The same adapter with one module's A matrix one column too wide (an adapter for another model)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter / "pytorch_lora_weights.safetensors"))
    key = next(k for k in sorted(tensors) if k.endswith("lora_A.weight"))
    tensors[key] = torch.cat([tensors[key], tensors[key][:, :1]], dim=1)
    (tmp_path / "wrong").mkdir()
    save_file(tensors, str(tmp_path / "wrong" / "pytorch_lora_weights.safetensors"))
    return tmp_path / "wrong"
