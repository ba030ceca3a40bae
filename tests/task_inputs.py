"""Inputs for edit-task tests (batch and Serve): source/reference audio files, two LoRA adapters,
a mixed manifest over all six tasks, and single renders to compare job outputs against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class TaskInputs:
    src: Path  # 2 s stereo, 48 kHz, 16-bit WAV
    ref: Path  # 1.5 s mono, 44.1 kHz FLAC
    lora_a: Path
    lora_b: Path


def write_task_inputs(folder: Path, checkpoint: Path) -> TaskInputs:
    from acestep_batch.model.lora import make_tiny_lora
    from acestep_batch.model.pipeline import transformer_skeleton

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(96000) / 48000
    src = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t)),
                    0.25 * np.sin(2 * np.pi * 330 * t + 0.4)], axis=1)
    sf.write(folder / "src.wav", src, 48000, subtype="PCM_16")
    t = np.arange(66150) / 44100
    sf.write(folder / "ref.flac", 0.4 * np.sin(2 * np.pi * 110 * t) * np.exp(-t), 44100)
    skeleton = transformer_skeleton(checkpoint)
    lora_a = make_tiny_lora(folder / "lora-a", skeleton, seed=0).parent
    lora_b = make_tiny_lora(folder / "lora-b", skeleton, seed=1).parent
    return TaskInputs(folder / "src.wav", folder / "ref.flac", lora_a, lora_b)


def mixed_task_rows(inputs: TaskInputs) -> list[dict[str, Any]]:
    """text2music, retake, repaint, extend, edit, audio2audio and two adapters: 9 outputs."""
    src, ref = str(inputs.src), str(inputs.ref)
    common = {"steps": 3, "prompt": "lo-fi hip hop, mellow piano"}
    return [
        {**common, "id": "t2m", "duration": 1.0, "seed": 1},
        {**common, "id": "t2m-lora-a", "duration": 1.0, "seed": 2, "lora": str(inputs.lora_a)},
        {**common, "id": "t2m-lora-b", "duration": 1.5, "seed": 3, "lora": str(inputs.lora_b), "lora_weight": 0.7,
         "variations": 2},
        {**common, "id": "retake", "task": "retake", "duration": 1.0, "seed": 1, "retake_seeds": 5,
         "retake_variance": 0.4},
        {**common, "id": "repaint", "task": "repaint", "src_audio": src, "repaint_start": 0.4, "repaint_end": 1.1,
         "seed": 4, "lyrics": "[verse]\nNeon lights they flicker bright"},
        {**common, "id": "extend", "task": "extend", "src_audio": src, "repaint_start": -0.4, "repaint_end": 2.5,
         "seed": 5},
        {**common, "id": "edit", "task": "edit", "src_audio": src, "edit_target_prompt": "jazz trio, upright bass",
         "edit_n_min": 0.2, "edit_n_max": 0.8, "seed": 6},
        {**common, "id": "a2a", "task": "audio2audio", "ref_audio": ref, "ref_audio_strength": 0.5, "seed": 7,
         "lora": str(inputs.lora_a)},
    ]


def single_renders(checkpoint: Path, manifest: str) -> dict[str, np.ndarray]:
    """Every output of the manifest rendered alone in this process: output id -> (frames, 2) audio."""
    import torch

    from acestep_batch.audio.inputs import load_audio_input
    from acestep_batch.manifest import load_manifest
    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig

    _, specs = load_manifest(manifest)
    pipe = AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(checkpoint), device="cpu", dtype="float32"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        renders = {}
        for spec in specs:
            uris = [uri for uri in (spec.request.src_audio, spec.request.ref_audio) if uri]
            result = pipe.generate([spec.request], inputs={uri: load_audio_input(uri) for uri in uris})[0]
            renders[spec.output_id] = result.audio.numpy().T
        return renders
    finally:
        torch.set_num_threads(previous)
