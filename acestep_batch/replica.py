"""One resident ACE-Step pipeline, shared by the Ray Data batch job and the Ray Serve app.

`AceStepReplica.__init__` loads the model once; `render` turns a list of requests into
per-item outcomes, isolating failures: an out-of-memory batch is split in halves and retried,
and when a batch fails for another reason each item is retried alone so one bad row cannot
take its neighbours down. `__call__` is the Ray Data `map_batches` entry point.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model.pipeline import AceStepPipeline, EngineConfig
from .model.request import GenerationRequest, GenerationResult


@dataclass
class ReplicaConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    sample_rate: int = 44100
    # fsspec options for reading src_audio/ref_audio URIs (the job passes its --storage-options)
    input_storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RenderOutcome:
    request: GenerationRequest
    result: GenerationResult | None
    error: str | None
    batch_size: int  # size of the sampler batch that produced it (after any OOM split)
    seconds: float


def is_out_of_memory(error: BaseException) -> bool:
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # pragma: no cover - torch without CUDA bits
        pass
    return isinstance(error, (MemoryError, RuntimeError)) and "out of memory" in str(error).lower()


def _short_error(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip()[:2000]


class ReplicaMetrics:
    """Custom metrics shown in the Ray dashboard (Prometheus); no-ops outside a Ray worker."""

    def __init__(self) -> None:
        self.enabled = False
        try:
            import ray
            from ray.util import metrics

            if not ray.is_initialized():
                return
            self.outputs = metrics.Counter("acestep_outputs_total", "Outputs rendered, by status", tag_keys=("status",))
            self.audio_seconds = metrics.Counter("acestep_audio_seconds_total", "Seconds of audio generated")
            self.latency = metrics.Histogram(
                "acestep_generate_latency_seconds", "Wall time of one sampler batch",
                boundaries=[0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
            )
            self.realtime_factor = metrics.Gauge("acestep_realtime_factor", "Audio seconds per wall second, last batch")
            self.lora_loads = metrics.Counter("acestep_lora_loads_total", "LoRA adapters loaded from storage (cache misses)")
            self._lora_loads_seen = 0
            self.enabled = True
        except Exception:  # metrics must never break generation
            self.enabled = False

    def record(self, outcomes: list[RenderOutcome], seconds: float, lora_loads: int = 0) -> None:
        if not self.enabled:
            return
        if lora_loads > self._lora_loads_seen:
            self.lora_loads.inc(lora_loads - self._lora_loads_seen)
            self._lora_loads_seen = lora_loads
        audio = 0.0
        for outcome in outcomes:
            self.outputs.inc(1, tags={"status": "ok" if outcome.error is None else "failed"})
            if outcome.result is not None:
                audio += outcome.result.audio.shape[-1] / outcome.result.sample_rate
        if audio:
            self.audio_seconds.inc(audio)
        self.latency.observe(seconds)
        if seconds > 0:
            self.realtime_factor.set(audio / seconds)


class AceStepReplica:
    """Holds one loaded `AceStepPipeline` (on the GPU Ray assigned, or the CPU)."""

    def __init__(self, config: ReplicaConfig | None = None) -> None:
        self.config = config or ReplicaConfig()
        self.pipeline = AceStepPipeline.from_checkpoint(self.config.engine)
        self.metrics = ReplicaMetrics()
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def info(self) -> dict[str, Any]:
        info = dict(vars(self.pipeline.info))
        info["replica"] = self.replica_id
        return info

    def render(
        self, requests: list[GenerationRequest], sample_rate: int | None = None, inputs: dict[str, Any] | None = None,
    ) -> list[RenderOutcome]:
        """Render `requests`; outcomes come back in order. Source/reference audio not in `inputs`
        is read here; a row whose audio cannot be read fails alone, with the reason."""
        started = time.perf_counter()
        inputs = dict(inputs or {})
        failed = self._load_inputs(requests, inputs)
        renderable = [r for i, r in enumerate(requests) if i not in failed]
        rendered = iter(self._render(renderable, sample_rate or self.config.sample_rate, inputs))
        outcomes = [
            RenderOutcome(request, None, failed[i], 0, 0.0) if i in failed else next(rendered)
            for i, request in enumerate(requests)
        ]
        for outcome in outcomes:
            if outcome.result is not None:
                outcome.result.info["replica_lora_loads"] = self.pipeline.adapters.loads
                for column in ("src_audio", "ref_audio"):
                    clip = inputs.get(getattr(outcome.request, column))
                    if getattr(clip, "sha256", None):
                        outcome.result.info[f"{column}_sha256"] = clip.sha256
                        outcome.result.info[f"{column}_seconds"] = round(float(clip.seconds), 6)
        self.metrics.record(outcomes, time.perf_counter() - started, self.pipeline.adapters.loads)
        return outcomes

    def _load_inputs(self, requests: list[GenerationRequest], inputs: dict[str, Any]) -> dict[int, str]:
        from .audio.inputs import AudioInputError, load_audio_input

        errors: dict[str, str] = {}
        failed: dict[int, str] = {}
        for index, request in enumerate(requests):
            for column, uri in (("src_audio", request.src_audio), ("ref_audio", request.ref_audio)):
                if not uri or uri in inputs:
                    continue
                if uri not in errors:
                    try:
                        inputs[uri] = load_audio_input(uri, self.config.input_storage_options)
                        continue
                    except AudioInputError as error:
                        errors[uri] = f"{column}: {error}"
                failed[index] = errors[uri]
        return failed

    def _render(self, requests: list[GenerationRequest], sample_rate: int, inputs: dict[str, Any]) -> list[RenderOutcome]:
        if not requests:
            return []
        started = time.perf_counter()
        try:
            results = self.pipeline.generate(requests, sample_rate=sample_rate, inputs=inputs)
        except Exception as error:
            if is_out_of_memory(error) and len(requests) > 1:
                self._release_memory()
                middle = len(requests) // 2
                return (self._render(requests[:middle], sample_rate, inputs)
                        + self._render(requests[middle:], sample_rate, inputs))
            if len(requests) > 1:
                return [outcome for request in requests for outcome in self._render([request], sample_rate, inputs)]
            return [RenderOutcome(requests[0], None, _short_error(error), 1, time.perf_counter() - started)]
        seconds = time.perf_counter() - started
        return [RenderOutcome(r.request, r, None, len(requests), seconds) for r in results]

    @staticmethod
    def _release_memory() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ Ray Data entry point
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """Input rows are planned batches (`specs`: JSON list of output specs); output rows are
        the rendered outputs with raw float32 audio for the encode/write stage."""
        specs = [spec for text in batch["specs"] for spec in json.loads(text)]
        requests = [GenerationRequest(**spec["request"]) for spec in specs]
        outcomes = self.render(requests)
        info = json.dumps(self.info)
        columns: dict[str, list[Any]] = {
            "spec": [], "status": [], "error": [], "audio": [], "channels": [], "frames": [],
            "sample_rate": [], "generate_s": [], "batch_size": [], "engine": [], "info": [],
        }
        for spec, outcome in zip(specs, outcomes):
            result = outcome.result
            audio = None if result is None else result.audio.numpy().astype(np.float32)
            columns["spec"].append(json.dumps(spec))
            columns["status"].append("ok" if outcome.error is None else "failed")
            columns["error"].append(outcome.error or "")
            columns["audio"].append(b"" if audio is None else audio.tobytes())
            columns["channels"].append(0 if audio is None else audio.shape[0])
            columns["frames"].append(0 if audio is None else audio.shape[1])
            columns["sample_rate"].append(self.config.sample_rate)
            columns["generate_s"].append(outcome.seconds)
            columns["batch_size"].append(outcome.batch_size)
            columns["engine"].append(info)
            columns["info"].append(json.dumps(_render_facts(outcome)))
        return columns


def _render_facts(outcome: RenderOutcome) -> dict[str, Any]:
    """Per-output facts for the metadata beyond the request: adapter identity, input audio facts."""
    if outcome.result is None:
        return {}
    facts = dict(outcome.result.info)
    facts["latent_frames"] = outcome.result.latent_frames
    return facts
