"""Checkpoint resolution and strict loading (spec 1.1-1.3): one clear CheckpointError per broken
checkpoint, sharded transformer weights, an offline Hub cache, and `model info` counts (1.4)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_batch.model.checkpoint import CheckpointError, resolve_checkpoint
from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig
from acestep_batch.model.request import GenerationRequest

pytestmark = pytest.mark.usefixtures("single_thread")

COMPONENTS = ("ace_step_transformer", "music_dcae_f8c8", "music_vocoder", "umt5-base")
WEIGHTS = {
    "ace_step_transformer": "diffusion_pytorch_model.safetensors",
    "music_dcae_f8c8": "diffusion_pytorch_model.safetensors",
    "music_vocoder": "diffusion_pytorch_model.safetensors",
    "umt5-base": "model.safetensors",
}
SHORT = GenerationRequest(prompt="lo-fi piano", lyrics="hello night", duration=1.0, seed=5, steps=3)


def assert_same_audio(a: torch.Tensor, b: torch.Tensor) -> None:
    """Same weights, same request: equal up to float rounding. (Not bit-equality: tensors read
    from differently laid-out safetensors files get different memory alignment, which changes
    the SIMD summation order of some CPU kernels in the last bit.)"""
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def _load(path: Path | str) -> AceStepPipeline:
    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(path), device="cpu", dtype="float32"))


def _rewrite(root: Path, component: str, edit) -> Path:
    """Load a component's tensors, let `edit` change the dict, write it back."""
    path = root / component / WEIGHTS[component]
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


# ------------------------------------------------------------------------------------------------
# Corrupted checkpoints
# ------------------------------------------------------------------------------------------------


def test_missing_key(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    key = "transformer_blocks.1.cross_attn.add_k_proj.weight"  # unused in forward, still required
    _rewrite(root, "ace_step_transformer", lambda t: t.pop(key))
    with pytest.raises(CheckpointError) as info:
        _load(root)
    message = str(info.value)
    assert key in message and "missing" in message and "ace_step_transformer" in message


def test_wrong_shape(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    key = "decoder.conv_in.weight"

    def widen(tensors: dict) -> None:
        original = tensors[key]
        tensors[key] = torch.zeros(original.shape[0] + 1, *original.shape[1:])

    shape = tuple(load_file(str(root / "music_dcae_f8c8" / WEIGHTS["music_dcae_f8c8"]))[key].shape)
    _rewrite(root, "music_dcae_f8c8", widen)
    with pytest.raises(CheckpointError) as info:
        _load(root)
    message = str(info.value)
    assert key in message and "shape" in message and "music_dcae_f8c8" in message
    assert str((shape[0] + 1, *shape[1:])) in message and str(shape) in message


def test_truncated_file_is_named(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    path = root / "music_vocoder" / WEIGHTS["music_vocoder"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        _load(root)
    assert str(path) in str(info.value)


def test_empty_folder_names_the_missing_components(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path)
    message = str(info.value)
    assert all(name in message for name in COMPONENTS)


def test_partial_folder_names_only_the_missing_components(tmp_path: Path) -> None:
    (tmp_path / "ace_step_transformer").mkdir()
    (tmp_path / "umt5-base").mkdir()
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(tmp_path)
    clause = re.search(r"missing (.*?) \(", str(info.value))
    assert clause is not None, str(info.value)
    named = {name.strip().rstrip("/") for name in clause.group(1).split(",")}
    assert named == {"music_dcae_f8c8", "music_vocoder"}


def test_unexpected_key(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    key = "encoder.block.0.layer.0.SelfAttention.extra_proj.weight"
    _rewrite(root, "umt5-base", lambda t: t.__setitem__(key, torch.zeros(4, 4)))
    with pytest.raises(CheckpointError) as info:
        _load(root)
    message = str(info.value)
    assert key in message and "unexpected" in message and "umt5-base" in message


def test_all_problems_of_a_component_in_one_error(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    missing, wrong, extra = "lyric_proj.bias", "final_layer.linear.weight", "transformer_blocks.0.attn.norm_q.weight"

    def edit(tensors: dict) -> None:
        tensors.pop(missing)
        tensors[wrong] = torch.zeros(3, 3)
        tensors[extra] = torch.zeros(16)

    _rewrite(root, "ace_step_transformer", edit)
    with pytest.raises(CheckpointError) as info:
        _load(root)
    message = str(info.value)
    for word, key in (("missing", missing), ("wrong shape", wrong), ("unexpected", extra)):
        assert word in message and key in message


def test_umt5_decoder_and_lm_head_keys_are_ignored(copy_tiny_checkpoint, tiny_pipe) -> None:
    """Spec 5.1: a full encoder-decoder UMT5 file may carry decoder.* / lm_head.*: ignore them."""
    root = copy_tiny_checkpoint()

    def add(tensors: dict) -> None:
        tensors["decoder.final_layer_norm.weight"] = torch.ones(32)
        tensors["lm_head.weight"] = torch.zeros(8, 32)

    _rewrite(root, "umt5-base", add)
    pipeline = _load(root)
    assert_same_audio(pipeline.generate([SHORT])[0].audio, tiny_pipe.generate([SHORT])[0].audio)


def test_optional_vocoder_buffers_present_or_absent(copy_tiny_checkpoint, tiny_pipe) -> None:
    """Spec 1.3: the vocoder's Hann window and mel filterbank may or may not be stored."""
    root = copy_tiny_checkpoint()
    stored = {"mel_transform.spectrogram.window": torch.hann_window(2048, periodic=True)}
    computed = dict(tiny_pipe.music_dcae.vocoder.state_dict())
    stored["mel_transform.mel_scale.fb"] = computed["mel_transform.mel_scale.fb"].clone()
    assert torch.equal(computed["mel_transform.spectrogram.window"], stored["mel_transform.spectrogram.window"])
    _rewrite(root, "music_vocoder", lambda t: t.update(stored))
    pipeline = _load(root)
    loaded = pipeline.music_dcae.vocoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stored.items())
    assert_same_audio(pipeline.generate([SHORT])[0].audio, tiny_pipe.generate([SHORT])[0].audio)


# ------------------------------------------------------------------------------------------------
# Sharded transformer weights
# ------------------------------------------------------------------------------------------------


def _shard_transformer(root: Path) -> list[str]:
    folder = root / "ace_step_transformer"
    single = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(single))
    keys = sorted(tensors)
    names = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map = {}
    for name, part in zip(names, halves):
        save_file({k: tensors[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    single.unlink()
    return names


def test_sharded_transformer_loads_and_matches_single_file(copy_tiny_checkpoint, tiny_pipe) -> None:
    root = copy_tiny_checkpoint()
    _shard_transformer(root)
    sharded = _load(root)
    reference = tiny_pipe.transformer.state_dict()
    loaded = sharded.transformer.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert_same_audio(sharded.generate([SHORT])[0].audio, tiny_pipe.generate([SHORT])[0].audio)


def test_shard_index_naming_a_missing_shard(copy_tiny_checkpoint) -> None:
    root = copy_tiny_checkpoint()
    names = _shard_transformer(root)
    (root / "ace_step_transformer" / names[1]).unlink()
    with pytest.raises(CheckpointError) as info:
        _load(root)
    assert names[1] in str(info.value)


# ------------------------------------------------------------------------------------------------
# Offline Hugging Face cache
# ------------------------------------------------------------------------------------------------

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_home(tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<HF_HOME>/hub/models--acme--tiny-acestep/{snapshots/<rev>/..., refs/main}`, offline env."""
    repo = tmp_path / "hf_home" / "hub" / "models--acme--tiny-acestep"
    shutil.copytree(tiny_ckpt, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "ACESTEP_LYRIC_VOCAB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo / "snapshots" / REVISION


def test_hub_repo_id_resolves_to_cached_snapshot(hub_home: Path, tiny_pipe) -> None:
    resolved = resolve_checkpoint("acme/tiny-acestep")
    assert resolved.path.resolve() == hub_home.resolve()
    assert resolved.revision == REVISION and resolved.source == "acme/tiny-acestep"
    pipeline = _load("acme/tiny-acestep")
    assert pipeline.info.revision == REVISION and pipeline.info.checkpoint == "acme/tiny-acestep"
    assert_same_audio(pipeline.generate([SHORT])[0].audio, tiny_pipe.generate([SHORT])[0].audio)


def test_uncached_repo_id_offline_raises(hub_home: Path) -> None:
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        resolve_checkpoint("acme/not-cached")


def test_neither_folder_nor_repo_id(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither an existing folder nor a Hugging Face repo id"):
        resolve_checkpoint(str(tmp_path / "no" / "such" / "dir"))


# ------------------------------------------------------------------------------------------------
# `model info` (spec 1.4 counts)
# ------------------------------------------------------------------------------------------------


def _parse_info(output: str) -> tuple[dict[str, int], dict[str, int]]:
    components, details = {}, {}
    for line in output.splitlines():
        top = re.match(r"^(\S.*?)\s+([\d,]+)\s+[\d.]+$", line)
        sub = re.match(r"^  (\S.*?)\s+([\d,]+)$", line)
        if top:
            components[top.group(1)] = int(top.group(2).replace(",", ""))
        elif sub:
            details[sub.group(1)] = int(sub.group(2).replace(",", ""))
    return components, details


def test_model_info_full_size_counts() -> None:
    from typer.testing import CliRunner

    from acestep_batch.cli import app

    result = CliRunner().invoke(app, ["model", "info"])
    assert result.exit_code == 0, result.output
    components, details = _parse_info(result.output)
    assert components["transformer"] == 3_305_659_264
    assert components["music dcae"] == 156_812_426
    assert details["encoder"] == 77_668_232 and details["decoder"] == 79_144_194
    assert components["vocoder"] == 103_005_138
    assert abs(components["umt5 encoder"] - 281.9e6) < 0.05e6
    assert details["transformer_blocks"] == 3_069_726_720 and details["lyric_encoder"] == 82_934_784
    assert components["total"] == sum(v for k, v in components.items() if k != "total")


def test_model_info_on_tiny_checkpoint_counts_its_files(tiny_ckpt: Path) -> None:
    from acestep_batch.model.info import component_infos

    infos = {info.name: info.parameters for info in component_infos(tiny_ckpt)}
    for name, component in (("transformer", "ace_step_transformer"), ("music dcae", "music_dcae_f8c8"),
                            ("umt5 encoder", "umt5-base")):
        stored = load_file(str(tiny_ckpt / component / WEIGHTS[component]))
        assert infos[name] == sum(t.numel() for t in stored.values()), name
