"""Typed request/result objects of the engine.

These are the contract between the engine (`acestep_batch.model.pipeline`) and its callers
(manifest expansion, the Ray batch job, the Serve app). Defaults are ACE-Step v1's own
`__call__` defaults (spec section 6.1), except `duration` which the product defaults to 30 s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHECKPOINT = "ACE-Step/ACE-Step-v1-3.5B"

SCHEDULERS: tuple[str, ...] = ("euler", "heun", "pingpong")
CFG_TYPES: tuple[str, ...] = ("apg", "cfg", "cfg_star")
TASKS: tuple[str, ...] = ("text2music",)

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

    def loop_key(self) -> tuple[Any, ...]:
        """Requests with equal loop keys can share one sampler loop (one batch).

        Everything else (prompt, lyrics, duration, seed, guidance settings, ERG flags) may
        differ inside a batch: the pipeline masks padding and applies guidance per item.
        """
        return (self.task, self.steps, self.scheduler, self.oss_steps_list())

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
