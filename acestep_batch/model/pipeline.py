"""The ACE-Step v1 text2music pipeline: load a checkpoint once, render lists of requests.

`AceStepPipeline.generate` takes heterogeneous requests (different prompts, lyrics, durations,
seeds, guidance settings) and batches those that can share a sampler loop; requests with a
different `GenerationRequest.loop_key()` (task, steps, scheduler, oss_steps) run in separate
loops. An item's output does not depend on what else is in its batch (spec 7.2): padding is
masked everywhere, guidance and the omega rescale are per item, and every item draws its noise
from its own generator. A batch of one is the upstream computation.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import guidance as guide
from . import schedulers as sched
from .checkpoint import (
    DCAE_DIR,
    DEFAULT_CHECKPOINT,
    DIFFUSERS_WEIGHTS,
    TEXT_ENCODER_DIR,
    TRANSFORMER_DIR,
    TRANSFORMERS_WEIGHTS,
    VOCODER_DIR,
    CheckpointError,
    ResolvedCheckpoint,
    fingerprint,
    load_into,
    read_config,
    read_tensors,
    resolve_checkpoint,
    weight_files,
)
from .dsp import SAMPLE_RATE, latent_frames_for_duration, resample
from .request import GenerationRequest, GenerationResult

SPEAKER_DIM = 512
ERG_SCALE = 0.01
OUTPUT_SAMPLE_RATES = (44100, 48000)

ProgressCallback = Callable[[int, int], None]


@dataclass
class EngineConfig:
    """How to load the engine. dtype/device None = bf16 on CUDA, float32 on CPU."""

    checkpoint: str = DEFAULT_CHECKPOINT
    revision: str | None = None
    device: str | None = None
    dtype: str | None = None
    lyric_vocab: str | None = None
    cache_dir: str | None = None
    torch_compile: bool = False
    cpu_offload: bool = False
    allow_vocab_download: bool = True


@dataclass
class EngineInfo:
    checkpoint: str
    checkpoint_path: str
    revision: str | None
    fingerprint: str
    device: str
    dtype: str
    load_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}")
    return names[dtype]


def set_upstream_numerics(device: torch.device) -> None:
    """Upstream sets these at import (spec 1.6): TF32 float32 matmuls on Ampere+, deterministic cuDNN."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


# ---------------------------------------------------------------------------------------- loading
def load_transformer(folder: Path, dtype: torch.dtype) -> nn.Module:
    from .transformer import ACEStepTransformer2DModel

    config = read_config(folder)
    with torch.device("meta"):
        model = ACEStepTransformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    load_into(model, TRANSFORMER_DIR, read_tensors(weight_files(folder, DIFFUSERS_WEIGHTS), dtype))
    return model


def load_prompt_encoder(folder: Path, dtype: torch.dtype) -> nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    from .text_encoder import PromptEncoder, load_prompt_tokenizer

    config = {k: v for k, v in read_config(folder).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**config))
    tensors = {
        key: value for key, value in read_tensors(weight_files(folder, TRANSFORMERS_WEIGHTS), dtype).items()
        if not key.startswith(("decoder.", "lm_head."))
    }
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    tensors.pop("encoder.embed_tokens.weight", None)
    load_into(model, TEXT_ENCODER_DIR, tensors, optional=("encoder.embed_tokens.weight",))
    model.encoder.embed_tokens.weight = model.shared.weight
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"missing {folder / 'tokenizer.json'} (the UMT5 fast tokenizer)")
    return PromptEncoder(model, load_prompt_tokenizer(folder), pad_id=int(config.get("pad_token_id", 0)))


def load_music_dcae(dcae_folder: Path, vocoder_folder: Path) -> nn.Module:
    from .dcae import MusicDCAE, build_autoencoder_dc
    from .vocoder import ADaMoSHiFiGANV1

    with torch.device("meta"):
        dcae = build_autoencoder_dc(read_config(dcae_folder))
    load_into(dcae, DCAE_DIR, read_tensors(weight_files(dcae_folder, DIFFUSERS_WEIGHTS), torch.float32))
    vocoder = ADaMoSHiFiGANV1.from_config(read_config(vocoder_folder))
    load_into(vocoder, VOCODER_DIR, read_tensors(weight_files(vocoder_folder, DIFFUSERS_WEIGHTS), torch.float32),
              optional=ADaMoSHiFiGANV1.OPTIONAL_STATE_KEYS)
    return MusicDCAE(dcae, vocoder)


# ---------------------------------------------------------------------------------------- pipeline
@dataclass
class _Conditions:
    context: torch.Tensor
    mask: torch.Tensor
    rows: list[int]  # batch rows these conditions belong to

    def take(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor([self.rows.index(row) for row in rows], device=self.context.device)
        return self.context.index_select(0, index), self.mask.index_select(0, index)


class AceStepPipeline:
    """One loaded replica of the model. Thread-safe: calls are serialised."""

    def __init__(
        self, transformer: nn.Module, prompt_encoder: nn.Module, music_dcae: nn.Module, lyric_tokenizer: Any,
        device: torch.device, dtype: torch.dtype, info: EngineInfo, cpu_offload: bool = False,
    ) -> None:
        self.transformer, self.prompt_encoder, self.music_dcae = transformer, prompt_encoder, music_dcae
        self.lyric_tokenizer = lyric_tokenizer
        self.device, self.dtype, self.info = device, dtype, info
        self.cpu_offload = cpu_offload
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, config: EngineConfig | None = None) -> AceStepPipeline:
        from .lyrics import LyricTokenizer, resolve_lyric_vocab

        config = config or EngineConfig()
        started = time.perf_counter()
        resolved: ResolvedCheckpoint = resolve_checkpoint(config.checkpoint, config.revision, config.cache_dir)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        set_upstream_numerics(device)
        root = resolved.path
        vocab_path = resolve_lyric_vocab(checkpoint_dir=root, vocab_path=config.lyric_vocab,
                                         allow_download=config.allow_vocab_download)
        lyric_tokenizer = LyricTokenizer.from_file(vocab_path)
        transformer = load_transformer(root / TRANSFORMER_DIR, dtype)
        vocab_limit = transformer.lyric_embs.num_embeddings
        if lyric_tokenizer.vocab_size > vocab_limit:
            raise CheckpointError(
                f"lyric vocabulary {vocab_path} has {lyric_tokenizer.vocab_size} ids but the transformer's "
                f"lyric_encoder_vocab_size is {vocab_limit}: wrong --lyric-vocab for this checkpoint"
            )
        prompt_encoder = load_prompt_encoder(root / TEXT_ENCODER_DIR, dtype)
        music_dcae = load_music_dcae(root / DCAE_DIR, root / VOCODER_DIR)
        placement = torch.device("cpu") if config.cpu_offload else device
        transformer.to(placement).eval()
        prompt_encoder.to(placement).eval()
        music_dcae.to(placement).eval().to(dtype)
        if config.torch_compile:
            transformer.decode = torch.compile(transformer.decode)
        info = EngineInfo(
            checkpoint=resolved.source, checkpoint_path=str(root), revision=resolved.revision,
            fingerprint=fingerprint(root), device=str(device), dtype=str(dtype).replace("torch.", ""),
            load_seconds=time.perf_counter() - started, extra={"lyric_vocab": str(vocab_path), "torch_threads": torch.get_num_threads()},
        )
        return cls(transformer, prompt_encoder, music_dcae, lyric_tokenizer, device, dtype, info, config.cpu_offload)

    # ------------------------------------------------------------------ public API
    def generate(
        self, requests: Sequence[GenerationRequest], sample_rate: int = SAMPLE_RATE,
        progress: ProgressCallback | None = None,
    ) -> list[GenerationResult]:
        """Render every request; results come back in the order of `requests`.

        Requests are grouped by `loop_key()`; each group is one batched sampler loop. `sample_rate`
        44100 is the model's own rate; 48000 resamples like upstream's file output.
        """
        if sample_rate not in OUTPUT_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {OUTPUT_SAMPLE_RATES}, got {sample_rate}")
        for request in requests:
            if request.task != "text2music":
                raise ValueError(f"task {request.task!r} is not supported by this engine yet")
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.loop_key(), []).append(index)
        results: list[GenerationResult | None] = [None] * len(requests)
        with self._lock, torch.inference_mode():
            for indices in groups.values():
                group = [requests[i] for i in indices]
                for index, result in zip(indices, self._generate_group(group, sample_rate, progress)):
                    results[index] = result
        return [result for result in results if result is not None]

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _resident(self, module: nn.Module) -> Iterator[nn.Module]:
        """With CPU offload, keep a component on the accelerator only while it is used."""
        if not self.cpu_offload:
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _lyric_batch(self, requests: Sequence[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        from .text_encoder import right_pad

        encoded = [self.lyric_tokenizer.encode(request.lyrics or "") for request in requests]
        ids, mask = right_pad([row_ids for row_ids, _ in encoded], 0, [row_mask for _, row_mask in encoded])
        return ids.to(self.device), mask.to(self.device)

    def _conditions(self, requests: Sequence[GenerationRequest]) -> tuple[_Conditions, _Conditions | None, _Conditions | None]:
        """Conditional, null (for guided items) and text-only (for double-condition items) encodings."""
        batch = len(requests)
        guided = [i for i, r in enumerate(requests) if r.guidance_scale not in (0.0, 1.0)]
        dual = [i for i in guided if requests[i].guidance_scale_text > 1.0 and requests[i].guidance_scale_lyric > 1.0]
        with self._resident(self.prompt_encoder) as prompt_encoder:
            ids, text_mask = prompt_encoder.tokenize([r.prompt for r in requests], self.device)
            text = prompt_encoder(ids, text_mask)
            text_null = torch.zeros_like(text)
            erg_tag_rows = [i for i in guided if requests[i].use_erg_tag and requests[i].use_erg_lyric]
            if erg_tag_rows:
                rows = torch.tensor(erg_tag_rows, device=self.device)
                text_null[rows] = prompt_encoder(ids[rows], text_mask[rows], erg_tag=True)
        lyric_ids, lyric_mask = self._lyric_batch(requests)
        speaker = torch.zeros((batch, SPEAKER_DIM), dtype=self.dtype, device=self.device)

        def erg_scale(rows: Sequence[int]) -> torch.Tensor:
            values = [ERG_SCALE if requests[i].use_erg_lyric else 1.0 for i in rows]
            return torch.tensor(values, dtype=torch.float32, device=self.device)

        with self._resident(self.transformer) as transformer:
            context, mask = transformer.encode(text, text_mask, speaker, lyric_ids, lyric_mask)
            cond = _Conditions(context, mask, list(range(batch)))
            null = text_only = None
            if guided:
                rows = torch.tensor(guided, device=self.device)
                erg = torch.tensor([requests[i].use_erg_lyric for i in guided], device=self.device)
                null_text = torch.where(erg[:, None, None], text_null[rows], torch.zeros_like(text[rows]))
                null_ids = torch.where(erg[:, None], lyric_ids[rows], torch.zeros_like(lyric_ids[rows]))
                context, mask = transformer.encode(null_text, text_mask[rows], speaker[rows], null_ids,
                                                   lyric_mask[rows], erg_scale(guided))
                null = _Conditions(context, mask, guided)
            if dual:
                rows = torch.tensor(dual, device=self.device)
                erg = torch.tensor([requests[i].use_erg_lyric for i in dual], device=self.device)
                dual_ids = torch.where(erg[:, None], lyric_ids[rows], torch.zeros_like(lyric_ids[rows]))
                context, mask = transformer.encode(text[rows], text_mask[rows], speaker[rows], dual_ids,
                                                   lyric_mask[rows], erg_scale(dual))
                text_only = _Conditions(context, mask, dual)
        return cond, null, text_only

    def _initial_noise(self, requests: Sequence[GenerationRequest], frames: list[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        generators, pieces = [], []
        width = max(frames)
        for request, length in zip(requests, frames):
            generator = torch.Generator(device=self.device).manual_seed(int(request.seed))
            noise = torch.randn((1, 8, 16, length), generator=generator, device=self.device, dtype=self.dtype)
            pieces.append(torch.nn.functional.pad(noise, (0, width - length)))
            generators.append(generator)
        return torch.cat(pieces, dim=0), generators

    def sample_latents(self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None) -> list[torch.Tensor]:
        """Final latents (1, 8, 16, T_i) per request, before decoding; requests must share one
        `loop_key()`. Exposed for parity tests and for tasks that post-process latents."""
        if len({r.loop_key() for r in requests}) != 1:
            raise ValueError("sample_latents needs requests with one loop key; use generate() to mix them")
        with self._lock, torch.inference_mode():
            x, frames = self._sample(requests, progress)
        return [x[row : row + 1, :, :, :length].clone() for row, length in enumerate(frames)]

    def _generate_group(
        self, requests: Sequence[GenerationRequest], sample_rate: int, progress: ProgressCallback | None
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        x, frames = self._sample(requests, progress)
        sampled = time.perf_counter()
        waves = []
        with self._resident(self.music_dcae) as music_dcae:
            for row, length in enumerate(frames):
                wave = music_dcae.decode(x[row : row + 1, :, :, :length])[0]
                wave = wave.to("cpu").float()
                if sample_rate != SAMPLE_RATE:
                    wave = resample(wave, SAMPLE_RATE, sample_rate)
                waves.append(wave)
        decoded = time.perf_counter()
        timings = {"sampling_s": sampled - started, "decode_s": decoded - sampled, "batch_size": float(len(requests))}
        return [
            GenerationResult(request=r, audio=wave, sample_rate=sample_rate, latent_frames=length, timings=dict(timings))
            for r, wave, length in zip(requests, waves, frames)
        ]

    def _sample(self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None) -> tuple[torch.Tensor, list[int]]:
        """Conditioning and the sampler loop for one batch; returns padded latents and lengths."""
        first = requests[0]
        schedule = sched.make_schedule(first.scheduler, first.steps, first.oss_steps_list(), self.dtype)
        frames = [latent_frames_for_duration(r.duration) for r in requests]
        width = max(frames)
        frame_index = torch.arange(width, device=self.device)
        latent_mask = (frame_index[None, :] < torch.tensor(frames, device=self.device)[:, None]).to(self.dtype)
        cond, null, text_only = self._conditions(requests)

        x, generators = self._initial_noise(requests, frames)
        windows = [sched.guidance_window(schedule.num_steps, r.guidance_interval) for r in requests]
        momentum = [guide.MomentumBuffer() for _ in requests]
        heun_states = [sched.HeunState() for _ in requests]
        timesteps = schedule.timesteps.to(self.device)
        sigmas = schedule.sigmas.to(self.device)
        total = len(timesteps)
        with self._resident(self.transformer) as transformer:
            for step, t in enumerate(timesteps):
                t_batch = t.expand(len(requests))
                v_cond = transformer.decode(x, t_batch, cond.context, cond.mask, latent_mask)
                active = [i for i in (null.rows if null else []) if windows[i][0] <= step < windows[i][1]]
                v_null = v_text = None
                if active:
                    rows = torch.tensor(active, device=self.device)
                    context, mask = null.take(active)
                    erg = torch.tensor([ERG_SCALE if requests[i].use_erg_diffusion else 1.0 for i in active],
                                       dtype=torch.float32, device=self.device)
                    v_null = transformer.decode(x[rows], t_batch[rows], context, mask, latent_mask[rows], erg)
                    dual_active = [i for i in active if text_only is not None and i in text_only.rows]
                    if dual_active:
                        rows = torch.tensor(dual_active, device=self.device)
                        context, mask = text_only.take(dual_active)
                        v_text = (transformer.decode(x[rows], t_batch[rows], context, mask, latent_mask[rows]), dual_active)
                x = self._step(requests, frames, schedule, sigmas, step, x, v_cond, active, v_null, v_text,
                               windows, momentum, heun_states, generators)
                if progress is not None:
                    progress(step + 1, total)
        return x, frames

    def _step(
        self, requests, frames, schedule, sigmas, step, x, v_cond, active, v_null, v_text, windows, momentum,
        heun_states, generators,
    ) -> torch.Tensor:
        """Guidance and the scheduler update, item by item on each item's own frames."""
        x_next = torch.zeros_like(x)
        for row, (request, length) in enumerate(zip(requests, frames)):
            v = v_cond[row : row + 1, ..., :length]
            if row in active:
                v_u = v_null[active.index(row) : active.index(row) + 1, ..., :length]
                start, end = windows[row]
                if v_text is not None and row in v_text[1]:
                    position = v_text[1].index(row)
                    v_t = v_text[0][position : position + 1, ..., :length]
                    v = guide.double_condition(v, v_u, v_t, request.guidance_scale_text, request.guidance_scale_lyric)
                else:
                    scale = sched.guidance_scale_at(step, start, end, request.guidance_scale,
                                                    request.min_guidance_scale, request.guidance_interval_decay)
                    if request.cfg_type == "apg":
                        v = guide.apg(v, v_u, scale, momentum[row])
                    elif request.cfg_type == "cfg":
                        v = guide.cfg(v, v_u, scale)
                    elif request.cfg_type == "cfg_star":
                        v = guide.cfg_zero_star(v, v_u, scale, step)
                    else:
                        raise ValueError(f"unknown cfg_type {request.cfg_type!r}")
            sample = x[row : row + 1, ..., :length]
            if schedule.scheduler == "euler":
                updated = sched.euler_step(v, sample, sigmas[step], sigmas[step + 1], request.omega_scale)
            elif schedule.scheduler == "heun":
                updated = sched.heun_step(v, sample, sigmas, step, heun_states[row], request.omega_scale)
            else:
                updated = sched.pingpong_step(v, sample, sigmas[step], sigmas[step + 1], generators[row])
            x_next[row : row + 1, ..., :length] = updated
        return x_next
