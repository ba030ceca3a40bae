"""Typed request/result objects of the engine.

These are the contract between the engine (`acestep_batch.model.pipeline`) and its callers
(manifest expansion, the Ray batch job, the Serve app). Defaults are ACE-Step v1's own
`__call__` defaults (spec section 6.1), except `duration` which the product defaults to 30 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHECKPOINT = "ACE-Step/ACE-Step-v1-3.5B"

SCHEDULERS: tuple[str, ...] = ("euler", "heun", "pingpong")
CFG_TYPES: tuple[str, ...] = ("apg", "cfg", "cfg_star")
TASKS: tuple[str, ...] = ("text2music", "retake", "repaint", "extend", "edit", "audio2audio")
SOURCE_TASKS: tuple[str, ...] = ("repaint", "extend", "edit")  # need `src_audio`
SOLO_TASKS: tuple[str, ...] = ("repaint", "extend", "edit")  # one item per sampler loop (spec 7.2)

MIN_DURATION_S = 1.0
MAX_DURATION_S = 240.0
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One output to render. Every field maps 1:1 to a manifest column of the same name."""

    prompt: str
    lyrics: str = ""
    duration: float = 30.0
    seed: int = 0
    task: str = "text2music"
    steps: int = 60
    scheduler: str = "euler"
    cfg_type: str = "apg"
    guidance_scale: float = 15.0
    omega_scale: float = 10.0
    guidance_interval: float = 0.5
    guidance_interval_decay: float = 0.0
    min_guidance_scale: float = 3.0
    guidance_scale_text: float = 0.0
    guidance_scale_lyric: float = 0.0
    use_erg_tag: bool = True
    use_erg_lyric: bool = True
    use_erg_diffusion: bool = True
    oss_steps: str = ""  # comma-separated step indices, e.g. "16,29,52"; empty = the normal schedule
    # --- edit tasks (spec 6.6-6.8); ignored by text2music ---------------------------------------
    retake_seeds: int | None = None  # retake/repaint/extend/edit noise; None = derived from `seed`
    retake_variance: float = 0.5
    repaint_start: float = 0.0  # seconds; < 0 extends on the left (task extend)
    repaint_end: float = 0.0  # seconds; past the source's end extends on the right (task extend)
    src_audio: str = ""  # URI of the source audio (repaint, extend, edit)
    ref_audio: str = ""  # URI of the reference audio (audio2audio)
    ref_audio_strength: float = 0.5
    edit_target_prompt: str = ""  # empty = the source prompt
    edit_target_lyrics: str = ""  # empty = the source lyrics
    edit_n_min: float = 0.0
    edit_n_max: float = 1.0
    edit_n_avg: int = 1
    # --- LoRA adapter (spec 6.9) ------------------------------------------------------------------
    lora: str = ""  # local path, fsspec URI or Hub repo id; empty = the base model
    lora_weight: float = 1.0

    def loop_key(self) -> tuple[Any, ...]:
        """Requests with equal loop keys can share one sampler loop (one batch).

        Everything else (prompt, lyrics, duration, seed, guidance settings, ERG flags) may
        differ inside a batch: the pipeline masks padding and applies guidance per item. The
        adapter comes first so that sorting keys groups rows by adapter (fewer adapter loads).
        Audio-to-audio items share a loop only with the same strength (it sets the schedule).
        """
        strength = self.ref_audio_strength if self.task == "audio2audio" else None
        return (self.lora, self.lora_weight if self.lora else None, self.task, self.steps, self.scheduler,
                self.oss_steps_list(), strength)

    @property
    def solo(self) -> bool:
        """repaint/extend/edit carry per-item masks and source latents: one item per loop."""
        return self.task in SOLO_TASKS

    @property
    def input_audio(self) -> str:
        """The audio this request starts from: `ref_audio` for audio2audio, `src_audio` for
        repaint/extend/edit, "" otherwise."""
        if self.task == "audio2audio":
            return self.ref_audio
        return self.src_audio if self.task in SOURCE_TASKS else ""

    def effective_retake_seed(self) -> int:
        """The retake noise seed; when not given, a fixed function of `seed` that differs from it
        (equal seeds would draw the retake noise identical to the initial noise)."""
        if self.retake_seeds is not None:
            return int(self.retake_seeds)
        digest = hashlib.sha256(f"retake:{int(self.seed)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)

    def oss_steps_list(self) -> tuple[int, ...]:
        text = self.oss_steps.strip()
        if not text:
            return ()
        return tuple(int(part) for part in text.split(","))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


GENERATION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GenerationRequest))


@dataclass
class GenerationResult:
    """What the engine returns per request: the waveform plus the facts about how it was made."""

    request: GenerationRequest
    audio: Any  # torch.Tensor (channels, samples), float32 on CPU
    sample_rate: int
    latent_frames: int
    timings: dict[str, float] = field(default_factory=dict)
    # what else went into the render: adapter identity/SHA-256, source/reference audio facts
    info: dict[str, Any] = field(default_factory=dict)
