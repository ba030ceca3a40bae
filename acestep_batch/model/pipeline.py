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
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from .dsp import LATENT_HOP, SAMPLE_RATE, latent_frames_for_duration, resample
from .lora import SCALE_MODES, ActiveLora, AdapterCache
from .request import MAX_DURATION_S, SOURCE_TASKS, TASKS, GenerationRequest, GenerationResult

SPEAKER_DIM = 512
ERG_SCALE = 0.01
OUTPUT_SAMPLE_RATES = (44100, 48000)
MAX_FRAMES = latent_frames_for_duration(MAX_DURATION_S)  # 2583: the longest render (extend cap)

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
    lora_cache_size: int = 4  # adapters kept loaded per replica (LRU)
    lora_scale_mode: str = "metadata"  # "metadata" (header alpha/rsLoRA when present) or "upstream" (alpha = r)
    lora_cache_dir: str | None = None  # where Hub/URI adapters are downloaded to


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


def transformer_skeleton(checkpoint_dir: str | Path) -> nn.Module:
    """The checkpoint's transformer on the meta device (module tree and shapes, no weights)."""
    from .transformer import ACEStepTransformer2DModel

    config = read_config(Path(checkpoint_dir) / TRANSFORMER_DIR)
    with torch.device("meta"):
        return ACEStepTransformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})


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
        lora_cache_size: int = 4, lora_scale_mode: str = "metadata", lora_cache_dir: str | None = None,
    ) -> None:
        self.transformer, self.prompt_encoder, self.music_dcae = transformer, prompt_encoder, music_dcae
        self.lyric_tokenizer = lyric_tokenizer
        self.device, self.dtype, self.info = device, dtype, info
        self.cpu_offload = cpu_offload
        if lora_scale_mode not in SCALE_MODES:
            raise ValueError(f"lora_scale_mode must be one of {SCALE_MODES}, got {lora_scale_mode!r}")
        self.lora_scale_mode = lora_scale_mode
        self.adapters = AdapterCache(transformer, dtype, device, lora_cache_size, lora_cache_dir)
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
        return cls(transformer, prompt_encoder, music_dcae, lyric_tokenizer, device, dtype, info, config.cpu_offload,
                   config.lora_cache_size, config.lora_scale_mode, config.lora_cache_dir)

    # ------------------------------------------------------------------ public API
    def generate(
        self, requests: Sequence[GenerationRequest], sample_rate: int = SAMPLE_RATE,
        progress: ProgressCallback | None = None, inputs: Mapping[str, Any] | None = None,
    ) -> list[GenerationResult]:
        """Render every request; results come back in the order of `requests`.

        Requests are grouped by `loop_key()`; each group is one batched sampler loop (repaint,
        extend and edit run one item per loop). `sample_rate` 44100 is the model's own rate; 48000
        resamples like upstream's file output. `inputs` maps the `src_audio`/`ref_audio` URIs to
        decoded audio (anything with `.samples` (channels, frames) and `.sample_rate`, or a
        `(samples, sample_rate)` pair); URIs missing from it are read as local files.
        """
        if sample_rate not in OUTPUT_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {OUTPUT_SAMPLE_RATES}, got {sample_rate}")
        for request in requests:
            if request.task not in TASKS:
                raise ValueError(f"unknown task {request.task!r}; expected one of {', '.join(TASKS)}")
        results: list[GenerationResult | None] = [None] * len(requests)
        with self._lock, torch.inference_mode():
            for indices in self._loops(requests):
                group = [requests[i] for i in indices]
                for index, result in zip(indices, self._generate_group(group, sample_rate, progress, inputs)):
                    results[index] = result
        return [result for result in results if result is not None]

    def sample_latents(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Final latents (1, 8, 16, T_i) per request, before decoding; requests must share one
        `loop_key()`. Exposed for parity tests and for tasks that post-process latents."""
        if len({r.loop_key() for r in requests}) != 1 or (len(requests) > 1 and requests[0].solo):
            raise ValueError("sample_latents needs requests with one loop key (and one repaint/extend/edit "
                             "request at a time); use generate() to mix them")
        with self._lock, torch.inference_mode():
            with self._adapter(requests[0]):
                x, frames, _ = self._sample(requests, progress, inputs)
        return [x[row : row + 1, :, :, :length].clone() for row, length in enumerate(frames)]

    def encode_audio(self, audio: Any) -> torch.Tensor:
        """Decoded audio -> latents (1, 8, 16, T) as upstream's `infer_latents` computes them."""
        with self._lock, torch.inference_mode():
            return self._encode(audio)

    def _encode(self, audio: Any) -> torch.Tensor:
        samples, rate = _audio_parts(audio)
        with self._resident(self.music_dcae) as music_dcae:
            return music_dcae.encode(samples[None].to(self.device), rate)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _loops(requests: Sequence[GenerationRequest]) -> list[list[int]]:
        groups: dict[tuple, list[int]] = {}
        loops: list[list[int]] = []
        for index, request in enumerate(requests):
            if request.solo:
                loops.append([index])
            else:
                groups.setdefault(request.loop_key(), []).append(index)
        return list(groups.values()) + loops

    @contextlib.contextmanager
    def _adapter(self, request: GenerationRequest) -> Iterator[dict[str, Any]]:
        """The request's LoRA adapter hooked onto the transformer for one loop (loops share it)."""
        if not request.lora:
            yield {}
            return
        adapter = self.adapters.get(request.lora)
        scale = float(request.lora_weight) * adapter.factor(self.lora_scale_mode)
        with ActiveLora(self.transformer, adapter, scale):
            yield {**adapter.identity, "lora_scale": scale}

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

    def _lyric_batch(self, lyrics: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from .text_encoder import right_pad

        encoded = [self.lyric_tokenizer.encode(text or "") for text in lyrics]
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
        lyric_ids, lyric_mask = self._lyric_batch([r.lyrics for r in requests])
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

    def _noise(self, seeds: Sequence[int], frames: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Per-item draws (1, 8, 16, T_i) from each item's own generator, right-padded to a batch."""
        generators, pieces = [], []
        width = max(frames)
        for seed, length in zip(seeds, frames):
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
            noise = torch.randn((1, 8, 16, length), generator=generator, device=self.device, dtype=self.dtype)
            pieces.append(torch.nn.functional.pad(noise, (0, width - length)))
            generators.append(generator)
        return torch.cat(pieces, dim=0), generators

    def _input_latents(self, requests: Sequence[GenerationRequest], inputs: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
        """Encode each distinct source/reference audio of the group once (model dtype, like upstream)."""
        latents: dict[str, torch.Tensor] = {}
        for request in requests:
            uri = request.input_audio
            if uri and uri not in latents:
                audio = (inputs or {}).get(uri)
                latents[uri] = self._encode(audio if audio is not None else _read_local_audio(uri))
        return latents

    def _generate_group(
        self, requests: Sequence[GenerationRequest], sample_rate: int, progress: ProgressCallback | None,
        inputs: Mapping[str, Any] | None,
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        with self._adapter(requests[0]) as adapter_info:
            x, frames, info = self._sample(requests, progress, inputs)
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
            GenerationResult(request=r, audio=wave, sample_rate=sample_rate, latent_frames=length, timings=dict(timings),
                             info={**adapter_info, **info})
            for r, wave, length in zip(requests, waves, frames)
        ]

    def _sample(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None, inputs: Mapping[str, Any] | None,
    ) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
        """Conditioning and the sampler loop for one batch; returns padded latents, lengths and facts."""
        first = requests[0]
        sources = self._input_latents(requests, inputs)
        info: dict[str, Any] = {}
        if first.task == "edit":
            src = sources[first.src_audio]
            info["source_frames"] = src.shape[-1]
            return self._sample_edit(first, src, progress), [src.shape[-1]], info

        if first.task == "audio2audio":
            sigma_max = 1.0 - first.ref_audio_strength
            oss = first.oss_steps_list()  # upstream keeps only their maximum as the step count here
            steps = max(oss) if oss else first.steps
            schedule = sched.make_schedule(first.scheduler, steps, (), self.dtype, sigma_max=sigma_max)
            references = [sources[r.ref_audio] for r in requests]
            frames = [ref.shape[-1] for ref in references]
        else:
            schedule = sched.make_schedule(first.scheduler, first.steps, first.oss_steps_list(), self.dtype)
            if first.task in SOURCE_TASKS:
                frames = [sources[first.src_audio].shape[-1]]
            else:
                frames = [latent_frames_for_duration(r.duration) for r in requests]
        x, generators = self._noise([r.seed for r in requests], frames)

        repaint = None
        if first.task == "retake":
            x = self._retake_mix(requests, x, frames)
        elif first.task in ("repaint", "extend"):
            x, repaint = self._repaint_setup(first, x, sources[first.src_audio], schedule)
            info["source_frames"] = frames[0]
            frames = [x.shape[-1]]
        elif first.task == "audio2audio":
            shifted_max = sched.sigma_bounds(sigma_max)[0]
            width = x.shape[-1]
            reference = torch.cat([torch.nn.functional.pad(ref, (0, width - ref.shape[-1])) for ref in references])
            x = reference * (1 - shifted_max) + x * shifted_max
        return self._loop(requests, schedule, frames, x, generators, repaint, progress), frames, info

    def _retake_mix(self, requests: Sequence[GenerationRequest], x: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """Retake: rotate the seed noise towards independent retake noise by retake_variance * pi/2."""
        retake, _ = self._noise([r.effective_retake_seed() for r in requests], frames)
        mixed = []
        for row, request in enumerate(requests):
            cos, sin = _rotation(request.retake_variance, self.device, self.dtype)
            mixed.append(cos * x[row : row + 1] + sin * retake[row : row + 1])
        return torch.cat(mixed)

    def _repaint_setup(
        self, request: GenerationRequest, x: torch.Tensor, src: torch.Tensor, schedule: sched.Schedule
    ) -> tuple[torch.Tensor, _Repaint | None]:
        """Repaint/extend (spec 6.6): the region to regenerate, the source latents it is pinned to
        outside that region, and the noise it starts from. A window covering the whole source is a
        plain retake (upstream's rule), which needs no pinning."""
        length = src.shape[-1]
        start = latent_frames_for_duration(request.repaint_start)  # int(s * 44100 / 512 / 8), truncated
        end = latent_frames_for_duration(request.repaint_end)
        retake, _ = self._noise([request.effective_retake_seed()], [length])
        cos, sin = _rotation(request.retake_variance, self.device, self.dtype)
        n_min = int(schedule.infer_steps * (1 - request.retake_variance))
        if n_min >= len(schedule.timesteps):
            raise ValueError(f"retake_variance {request.retake_variance:g} leaves no sampler step to repaint "
                             f"({schedule.infer_steps} steps); use a retake_variance above 0")
        if request.task == "repaint":
            if start < 0 or end > length or end <= start:
                seconds = length * LATENT_HOP / SAMPLE_RATE
                raise ValueError(
                    f"repaint window {request.repaint_start:g}-{request.repaint_end:g} s is outside the source audio "
                    f"({seconds:.2f} s, {request.src_audio}); keep 0 <= repaint_start < repaint_end <= {seconds:.2f}, "
                    "or use task 'extend' to add audio beyond its ends"
                )
            if end - start == length:
                return cos * x + sin * retake, None
            mask = torch.zeros_like(x, dtype=torch.bool)
            mask[..., start:end] = True
            z0 = torch.where(mask, cos * x + sin * retake, x)
            return x, _Repaint(mask, src, z0, n_min)
        # extend: new frames on the left (start < 0) and/or right (end past the source)
        left, right = max(0, -start), max(0, end - length)
        if left == 0 and right == 0:
            raise ValueError(
                f"extend window {request.repaint_start:g}-{request.repaint_end:g} s adds nothing to the "
                f"{length * LATENT_HOP / SAMPLE_RATE:.2f} s source; use a negative repaint_start (seconds added on "
                "the left) or a repaint_end past the source's end"
            )
        if left + length + right > MAX_FRAMES:
            raise ValueError(
                f"extend would make {(left + length + right) * LATENT_HOP / SAMPLE_RATE:.1f} s of audio; ACE-Step "
                f"renders at most {MAX_DURATION_S:g} s: extend less"
            )
        if max(left, right) > length:  # upstream fails here; draw enough retake noise for the new frames
            retake, _ = self._noise([request.effective_retake_seed()], [max(left, right)])
        x0 = torch.nn.functional.pad(src, (left, right))
        pieces = ([retake[..., :left]] if left else []) + [x] + ([retake[..., -right:]] if right else [])
        z0 = torch.cat(pieces, dim=-1)
        mask = torch.zeros_like(x0, dtype=torch.bool)
        mask[..., :left] = True
        if right:
            mask[..., -right:] = True
        return z0, _Repaint(mask, x0, z0, n_min)

    def _loop(
        self, requests: Sequence[GenerationRequest], schedule: sched.Schedule, frames: list[int], x: torch.Tensor,
        generators: list[torch.Generator], repaint: _Repaint | None, progress: ProgressCallback | None,
    ) -> torch.Tensor:
        """The text2music sampler loop (also retake, audio2audio and the repaint/extend variant)."""
        width = max(frames)
        frame_index = torch.arange(width, device=self.device)
        latent_mask = (frame_index[None, :] < torch.tensor(frames, device=self.device)[:, None]).to(self.dtype)
        cond, null, text_only = self._conditions(requests)
        windows = [sched.guidance_window(schedule.num_steps, r.guidance_interval) for r in requests]
        momentum = [guide.MomentumBuffer() for _ in requests]
        heun_states = [sched.HeunState() for _ in requests]
        timesteps = schedule.timesteps.to(self.device)
        sigmas = schedule.sigmas.to(self.device)
        total = len(timesteps)
        with self._resident(self.transformer) as transformer:
            for step, t in enumerate(timesteps):
                if repaint is not None:
                    if step < repaint.n_min:
                        if progress is not None:
                            progress(step + 1, total)
                        continue
                    if step == repaint.n_min:
                        t_i = t / 1000
                        noisy_source = (1 - t_i) * repaint.x0 + t_i * repaint.z0
                        x = repaint.x0.clone() + noisy_source - repaint.x0
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
                velocities = self._guide(requests, frames, step, v_cond, active, v_null, v_text, windows, momentum)
                if repaint is not None:
                    x = self._repaint_step(x, velocities[0], timesteps, step, repaint)
                else:
                    x = self._step(requests, frames, schedule, sigmas, step, x, velocities, heun_states, generators)
                if progress is not None:
                    progress(step + 1, total)
        return x

    @staticmethod
    def _guide(requests, frames, step, v_cond, active, v_null, v_text, windows, momentum) -> list[torch.Tensor]:
        """Each item's guided velocity on its own frames (conditional only outside its interval)."""
        velocities = []
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
                    v = _apply_cfg(request.cfg_type, v, v_u, scale, momentum[row], step)
            velocities.append(v)
        return velocities

    @staticmethod
    def _step(requests, frames, schedule, sigmas, step, x, velocities, heun_states, generators) -> torch.Tensor:
        """The scheduler update, item by item on each item's own frames."""
        x_next = torch.zeros_like(x)
        for row, (request, length, v) in enumerate(zip(requests, frames, velocities)):
            sample = x[row : row + 1, ..., :length]
            if schedule.scheduler == "euler":
                updated = sched.euler_step(v, sample, sigmas[step], sigmas[step + 1], request.omega_scale)
            elif schedule.scheduler == "heun":
                updated = sched.heun_step(v, sample, sigmas, step, heun_states[row], request.omega_scale)
            else:
                updated = sched.pingpong_step(v, sample, sigmas[step], sigmas[step + 1], generators[row])
            x_next[row : row + 1, ..., :length] = updated
        return x_next

    def _repaint_step(self, x: torch.Tensor, v: torch.Tensor, timesteps: torch.Tensor, step: int, repaint: _Repaint) -> torch.Tensor:
        """Plain Euler inside the repaint region (no omega, no scheduler state); outside it the
        latents follow the source's own noising path."""
        t_i = timesteps[step] / 1000
        t_next = timesteps[step + 1] / 1000 if step + 1 < len(timesteps) else torch.zeros_like(t_i)
        updated = (x.float() + (t_next - t_i) * v).to(self.dtype)
        noisy_source = (1 - t_next) * repaint.x0 + t_next * repaint.z0
        return torch.where(repaint.mask, updated, noisy_source)

    # ------------------------------------------------------------------ edit (FlowEdit, spec 6.8)
    def _edit_conditions(self, request: GenerationRequest, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source and target encodings; with guidance each is [cond, null] where the null zeroes the
        text, the lyric ids and the lyric mask (edit's own null, unlike text2music's)."""
        prompts = [request.prompt, request.edit_target_prompt or request.prompt]
        lyrics = [request.lyrics, request.edit_target_lyrics or request.lyrics]
        with self._resident(self.prompt_encoder) as prompt_encoder:
            ids, text_mask = prompt_encoder.tokenize(prompts, self.device)
            text = prompt_encoder(ids, text_mask)
        encoded = []
        with self._resident(self.transformer) as transformer:
            for item in range(2):
                length = int(text_mask[item].sum())
                item_text, item_mask = text[item : item + 1, :length], text_mask[item : item + 1, :length]
                lyric_ids, lyric_mask = self._lyric_batch([lyrics[item]])
                speaker = torch.zeros((1, SPEAKER_DIM), dtype=self.dtype, device=self.device)
                if guided:
                    item_text = torch.cat([item_text, torch.zeros_like(item_text)])
                    item_mask = torch.cat([item_mask, item_mask])
                    speaker = torch.cat([speaker, speaker])
                    lyric_ids = torch.cat([lyric_ids, torch.zeros_like(lyric_ids)])
                    lyric_mask = torch.cat([lyric_mask, torch.zeros_like(lyric_mask)])
                encoded.extend(transformer.encode(item_text, item_mask, speaker, lyric_ids, lyric_mask))
        return tuple(encoded)  # type: ignore[return-value]

    def _sample_edit(self, request: GenerationRequest, src: torch.Tensor, progress: ProgressCallback | None) -> torch.Tensor:
        """FlowEdit: follow the difference between target- and source-conditioned velocities from
        the source latents, then (after edit_n_max) sample the target alone. Always an Euler
        schedule and APG; the PingPong variant keeps upstream's behaviour (see spec 6.8)."""
        guided = request.guidance_scale not in (0.0, 1.0)
        src_context, src_mask, tar_context, tar_mask = self._edit_conditions(request, guided)
        schedule = sched.make_schedule("euler", request.steps, (), self.dtype)
        timesteps = schedule.timesteps.to(self.device)
        sigmas = schedule.sigmas.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(request.effective_retake_seed())
        pingpong = request.scheduler == "pingpong"
        n_min, n_max = int(request.steps * request.edit_n_min), int(request.steps * request.edit_n_max)
        momentum_src, momentum_tar = guide.MomentumBuffer(), guide.MomentumBuffer()
        copies = 2 if guided else 1
        latent_mask = torch.ones((copies, src.shape[-1]), dtype=self.dtype, device=self.device)

        def velocity(transformer: nn.Module, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                     mask: torch.Tensor, momentum: guide.MomentumBuffer | None) -> torch.Tensor:
            v = transformer.decode(z.expand(copies, -1, -1, -1), t.expand(copies), context, mask, latent_mask)
            return guide.apg(v[:1], v[1:], request.guidance_scale, momentum) if guided else v

        def draw() -> torch.Tensor:
            return torch.randn(src.shape, generator=generator, device=self.device, dtype=self.dtype)

        edited, target = src.clone(), None
        total = len(timesteps)
        with self._resident(self.transformer) as transformer:
            for step, t in enumerate(timesteps):
                if step < n_min:
                    if progress is not None:
                        progress(step + 1, total)
                    continue
                t_i = t / 1000
                t_next = timesteps[step + 1] / 1000 if step + 1 < total else torch.zeros_like(t_i)
                if step < n_max:
                    delta = torch.zeros_like(src)
                    for _ in range(request.edit_n_avg):
                        noisy_src = (1 - t_i) * src + t_i * draw()
                        noisy_tar = edited + noisy_src - src
                        v_src = velocity(transformer, noisy_src, t, src_context, src_mask, momentum_src)
                        v_tar = velocity(transformer, noisy_tar, t, tar_context, tar_mask, None)
                        delta += (1 / request.edit_n_avg) * (v_tar - v_src)
                    edited = edited.to(torch.float32)
                    if pingpong:  # upstream draws this noise but never applies the update
                        torch.empty_like(edited).normal_(generator=generator)
                    else:
                        edited = (edited + (t_next - t_i) * delta).to(self.dtype)
                else:
                    if step == n_max:
                        sigma = sigmas[step]
                        noisy_src = sigma * draw() + (1.0 - sigma) * src
                        target = edited + noisy_src - src
                    v_tar = velocity(transformer, target, t, tar_context, tar_mask, momentum_tar)
                    target = target.to(torch.float32)
                    if pingpong:
                        denoised = target - t_i * v_tar
                        noise = torch.empty_like(edited).normal_(generator=generator)
                        target = (1 - t_next) * denoised + t_next * noise
                    else:
                        target = (target + (t_next - t_i) * v_tar).to(self.dtype)
                if progress is not None:
                    progress(step + 1, total)
        return (edited if target is None else target).to(self.dtype)


@dataclass
class _Repaint:
    mask: torch.Tensor  # True where frames are regenerated
    x0: torch.Tensor  # source latents (zero-padded for extend)
    z0: torch.Tensor  # the noise the region starts from
    n_min: int  # loop index where repainting starts (earlier steps are skipped)


def _rotation(variance: float, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of variance * pi/2, computed in the model dtype as upstream does."""
    angle = torch.tensor(variance * math.pi / 2).to(device).to(dtype)
    return torch.cos(angle), torch.sin(angle)


def _apply_cfg(cfg_type: str, v: torch.Tensor, v_u: torch.Tensor, scale: float, momentum: guide.MomentumBuffer,
               step: int) -> torch.Tensor:
    if cfg_type == "apg":
        return guide.apg(v, v_u, scale, momentum)
    if cfg_type == "cfg":
        return guide.cfg(v, v_u, scale)
    if cfg_type == "cfg_star":
        return guide.cfg_zero_star(v, v_u, scale, step)
    raise ValueError(f"unknown cfg_type {cfg_type!r}")


def _audio_parts(audio: Any) -> tuple[torch.Tensor, int]:
    """(samples (2, frames) float32 tensor, sample rate) from an AudioClip-like object or a pair."""
    if hasattr(audio, "samples") and hasattr(audio, "sample_rate"):
        samples, rate = audio.samples, audio.sample_rate
    else:
        samples, rate = audio
    samples = torch.as_tensor(samples, dtype=torch.float32)
    if samples.dim() == 1:
        samples = samples[None]
    if samples.shape[0] == 1:
        samples = samples.repeat(2, 1)
    return samples[:2], int(rate)


def _read_local_audio(uri: str) -> Any:
    from ..audio.inputs import load_audio_input

    return load_audio_input(uri)
