"""The Ray Serve app: a FastAPI ingress around one resident `AceStepReplica` per Serve replica.

Request flow inside a replica: an endpoint validates the JSON body exactly like a manifest row
(`expand_manifest` on a one-row table, so fields, defaults and messages are the manifest's),
then puts the request on the replica's `RenderScheduler`. The scheduler runs one engine call at
a time in a worker thread. Online requests are gathered for at most `batch_wait_ms` (up to
`max_batch_size`) into one heterogeneous `AceStepReplica.render` call; batch-job work
(`render_batch`, called through a DeploymentHandle by `submit --via-serve`) runs only while no
online request waits, so online traffic takes priority. The online queue is bounded: when it
is full the endpoint answers 503 with Retry-After instead of queueing without bound. A queued
request whose client went away (or whose timeout passed) is dropped before it reaches the engine.

A custom scheduler is used instead of `@serve.batch` because `@serve.batch` has no notion of
priority between online requests and batch-job work, nor of a bounded queue with 503s.
"""

# No `from __future__ import annotations`: Serve's ingress re-wraps the endpoints and FastAPI
# could not resolve string annotations such as "Request" any more.
import asyncio
import dataclasses
import hmac
import json
import os
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from fastapi.responses import JSONResponse, Response

from ..model.pipeline import EngineConfig
from ..model.request import DEFAULT_CHECKPOINT, GenerationRequest

APP_NAME = "acestep"
DEPLOYMENT_NAME = "AceStepServe"
CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
TASKS_DIR = "tasks"
SERVE_AUDIO_DIR = "audio"
_TASK_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ServeConfig:
    """Everything the Serve app needs; `build_app(config)` turns it into a bound application."""

    checkpoint: str = DEFAULT_CHECKPOINT
    revision: str | None = None
    lyric_vocab: str | None = None
    dtype: str | None = None
    device: str | None = None
    sample_rate: int = 44100
    format: str = "wav"  # default audio format; a request's `format` field overrides
    bit_depth: str = "24"
    output: str | None = None  # where `?store=true` and /v1/tasks write; None: those answer 400
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    api_key_env: str | None = None  # name of the env var holding the bearer key; None: no auth
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; overrides `replicas`
    num_cpus: float = 0.5  # fractional, so Ray Data stages of a --via-serve job still get CPUs
    num_gpus: float = 0.0
    max_batch_size: int = 4
    batch_wait_ms: float = 50.0
    max_queued: int = 16  # online requests waiting per replica before 503
    max_duration: float = 240.0
    max_steps: int = 200
    max_body_bytes: int = 256 * 1024  # JSON body without inline audio uploads
    max_upload_bytes: int = 32 * 2**20  # per inline upload (src_audio/ref_audio as a data: URI), decoded
    allow_input_prefixes: tuple[str, ...] = ()  # src_audio/ref_audio/lora URIs the server may read; none by default
    allow_hub_lora: bool = False  # may a request name a Hugging Face Hub repo id as its LoRA?
    lora_cache_size: int = 4
    request_timeout_s: float = 600.0
    retry_after_s: int = 2

    def engine(self) -> EngineConfig:
        return EngineConfig(checkpoint=self.checkpoint, revision=self.revision, dtype=self.dtype,
                            device=self.device, lyric_vocab=self.lyric_vocab, lora_cache_size=self.lora_cache_size)

    def body_limit(self) -> int:
        """Largest accepted body: the JSON plus up to two base64 uploads."""
        return self.max_body_bytes + 2 * (4 * self.max_upload_bytes // 3 + 64)


class QueueFull(Exception):
    """The replica's online queue is at its bound."""


class RequestProblem(Exception):
    """A request that cannot be rendered: answered 422 with the offending field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(p["message"] for p in problems))


@dataclass
class _Online:
    request: GenerationRequest
    future: asyncio.Future
    enqueued: float
    inputs: dict[str, Any] = field(default_factory=dict)  # uploaded audio, by its "upload:<sha256>" name


@dataclass
class _BatchWork:
    specs_json: str
    future: asyncio.Future


class ServeMetrics:
    """Prometheus metrics (Ray dashboard) plus plain counters for /v1/models; never raises."""

    def __init__(self, deployment: str) -> None:
        self.engine_calls = 0
        self.online_rendered = 0
        self.batch_calls = 0
        self.max_online_batch = 0
        self.recent_calls: deque[str] = deque(maxlen=1000)  # kinds of the last engine calls, in order
        self.enabled = False
        try:
            from ray.util import metrics

            self.requests = metrics.Counter("acestep_serve_requests_total", "HTTP requests by endpoint and status",
                                            tag_keys=("endpoint", "status"))
            self.latency = metrics.Histogram("acestep_serve_latency_seconds", "Request latency",
                                             boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
                                             tag_keys=("endpoint",))
            self.queue_depth = metrics.Gauge("acestep_serve_queue_depth", "Requests waiting for the engine",
                                             tag_keys=("kind",))
            self.batch_sizes = metrics.Histogram("acestep_serve_batch_size", "Requests per engine call",
                                                 boundaries=[1, 2, 4, 8, 16, 32, 64], tag_keys=("kind",))
            self.enabled = True
        except Exception:
            self.enabled = False

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        if self.enabled:
            self.requests.inc(1, tags={"endpoint": endpoint, "status": str(status)})
            self.latency.observe(seconds, tags={"endpoint": endpoint})

    def queue(self, online: int, batch: int) -> None:
        if self.enabled:
            self.queue_depth.set(online, tags={"kind": "online"})
            self.queue_depth.set(batch, tags={"kind": "batch"})

    def engine_call(self, kind: str, size: int) -> None:
        self.engine_calls += 1
        self.recent_calls.append(kind)
        if kind == "online":
            self.online_rendered += size
            self.max_online_batch = max(self.max_online_batch, size)
        else:
            self.batch_calls += 1
        if self.enabled:
            self.batch_sizes.observe(size, tags={"kind": kind})

    def stats(self) -> dict[str, Any]:
        return {"engine_calls": self.engine_calls, "online_rendered": self.online_rendered,
                "batch_calls": self.batch_calls, "max_online_batch": self.max_online_batch,
                "recent_calls": list(self.recent_calls)}


class RenderScheduler:
    """One engine call at a time; online requests first (gathered into batches), then batch work."""

    def __init__(self, replica: Any, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.replica = replica
        self.config = config
        self.metrics = metrics
        self.online: deque[_Online] = deque()
        self.batch: deque[_BatchWork] = deque()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    def _ensure_running(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def _live_online(self) -> int:
        return sum(1 for item in self.online if not item.future.done())

    async def render_online(self, request: GenerationRequest, inputs: dict[str, Any] | None = None) -> Any:
        """Returns the `RenderOutcome`; raises QueueFull when the online queue is at its bound."""
        self._ensure_running()
        if self._live_online() >= self.config.max_queued:
            raise QueueFull()
        future = asyncio.get_running_loop().create_future()
        self.online.append(_Online(request, future, time.perf_counter(), dict(inputs or {})))
        self._changed()
        return await future  # cancelled (client gone / timeout): the loop skips it

    async def render_batch(self, specs_json: str) -> dict[str, list[Any]]:
        self._ensure_running()
        future = asyncio.get_running_loop().create_future()
        self.batch.append(_BatchWork(specs_json, future))
        self._changed()
        return await future

    def _changed(self) -> None:
        self.metrics.queue(self._live_online(), len(self.batch))
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._drop_cancelled()
            if not self.online and not self.batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.online:
                await self._gather_online()
                items = []
                while self.online and len(items) < self.config.max_batch_size:
                    item = self.online.popleft()
                    if not item.future.done():
                        items.append(item)
                self.metrics.queue(self._live_online(), len(self.batch))
                if items:
                    await self._render_online(items)
                continue
            work = self.batch.popleft()
            self.metrics.queue(self._live_online(), len(self.batch))
            if work.future.done():
                continue
            try:
                columns = await asyncio.to_thread(self.replica, {"specs": [work.specs_json]})
                self.metrics.engine_call("batch", len(columns["spec"]))
                if not work.future.done():
                    work.future.set_result(columns)
            except Exception as error:  # pragma: no cover - the replica isolates failures itself
                if not work.future.done():
                    work.future.set_exception(error)

    def _drop_cancelled(self) -> None:
        self.online = deque(item for item in self.online if not item.future.done())
        self.batch = deque(work for work in self.batch if not work.future.done())

    async def _gather_online(self) -> None:
        """Wait (bounded) for more online requests so they share one engine call."""
        deadline = time.perf_counter() + self.config.batch_wait_ms / 1000.0
        while self._live_online() < self.config.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=left)
            except asyncio.TimeoutError:
                return

    async def _render_online(self, items: list[_Online]) -> None:
        started = time.perf_counter()
        try:
            inputs = {name: clip for item in items for name, clip in item.inputs.items()}
            outcomes = await asyncio.to_thread(self.replica.render, [item.request for item in items], None, inputs)
        except Exception as error:  # pragma: no cover - render isolates failures itself
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self.metrics.engine_call("online", len(items))
        for item, outcome in zip(items, outcomes):
            if not item.future.done():
                item.future.set_result((outcome, started - item.enqueued))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- validation
def parse_body(raw: bytes, config: ServeConfig, allow_variations: bool = False) -> tuple[Any, str, dict[str, Any]]:
    """JSON body -> (OutputSpec, format, uploaded audio), validated exactly like one manifest row.

    `src_audio`/`ref_audio` are either URIs under the server's allowed input prefixes or inline
    uploads as `data:<type>;base64,<bytes>` URIs; uploads are decoded here and renamed
    `upload:<sha256>` so that the request (and its task record) never carries the audio itself.
    """
    import pyarrow as pa

    from ..audio.encode import AUDIO_FORMATS
    from ..manifest import ManifestError, expand_manifest

    if len(raw) > config.body_limit():
        raise RequestProblem([{"field": "body", "message": f"body is {len(raw)} bytes; the limit is {config.body_limit()} "
                                                           f"(uploads at most {config.max_upload_bytes} bytes each)"}])
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestProblem([{"field": "body", "message": f"body is not valid JSON: {error}"}]) from None
    if not isinstance(body, dict):
        raise RequestProblem([{"field": "body", "message": "body must be a JSON object with at least a 'prompt' field"}])
    upload_chars = sum(len(body[name]) for name in ("src_audio", "ref_audio")
                       if isinstance(body.get(name), str) and body[name].startswith("data:"))
    if len(raw) - upload_chars > config.max_body_bytes:
        raise RequestProblem([{"field": "body", "message": f"body is {len(raw)} bytes without uploads; the limit "
                                                           f"is {config.max_body_bytes}"}])
    inputs = _take_uploads(body, config)
    try:
        table = pa.Table.from_pylist([body])
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise RequestProblem([{"field": "body", "message": f"body has values that are not scalars: {error}"}]) from None
    try:
        specs = expand_manifest(table)
    except ManifestError as error:
        raise RequestProblem([{"field": p.column or "body", "message": _field_message(str(p))} for p in error.problems]) from None
    problems = []
    spec = specs[0]
    if len(specs) != 1 and not allow_variations:
        problems.append({"field": "variations", "message": "variations must be 1 for a single request"})
    if spec.request.duration > config.max_duration:
        problems.append({"field": "duration", "message": f"duration {spec.request.duration:g} s is over this server's limit of {config.max_duration:g} s"})
    if spec.request.steps > config.max_steps:
        problems.append({"field": "steps", "message": f"steps {spec.request.steps} is over this server's limit of {config.max_steps}"})
    problems.extend(_input_problems(spec.request, config, inputs))
    fmt = spec.format or config.format
    if fmt not in AUDIO_FORMATS:  # pragma: no cover - the manifest validates 'format'
        problems.append({"field": "format", "message": f"format must be one of {AUDIO_FORMATS}"})
    if problems:
        raise RequestProblem(problems)
    return spec, fmt, inputs


def _take_uploads(body: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    """Decode `data:` URIs in src_audio/ref_audio in place; returns {"upload:<sha256>": AudioClip}."""
    import base64
    import binascii

    from ..audio.inputs import AudioInputError, decode_audio_bytes

    inputs: dict[str, Any] = {}
    for name in ("src_audio", "ref_audio"):
        value = body.get(name)
        if not isinstance(value, str) or not value.startswith("data:"):
            continue
        header, comma, payload = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise RequestProblem([{"field": name, "message": f"{name} upload must be a base64 data URI: "
                                                             "'data:audio/wav;base64,<bytes>'"}])
        if len(payload) > 4 * config.max_upload_bytes // 3 + 4:
            raise RequestProblem([{"field": name, "message": f"{name} upload is over this server's limit of "
                                                             f"{config.max_upload_bytes} bytes"}])
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestProblem([{"field": name, "message": f"{name} upload is not valid base64: {error}"}]) from None
        if len(data) > config.max_upload_bytes:
            raise RequestProblem([{"field": name, "message": f"{name} upload is {len(data)} bytes; this server's limit "
                                                             f"is {config.max_upload_bytes}"}])
        try:
            clip = decode_audio_bytes(data, f"{name} upload", max_seconds=config.max_duration)
        except AudioInputError as error:
            raise RequestProblem([{"field": name, "message": str(error)}]) from None
        key = f"upload:{clip.sha256}"
        inputs[key] = clip
        body[name] = key
    return inputs


def _input_problems(request: GenerationRequest, config: ServeConfig, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """URIs a request asks the server to read must lie under the operator's allowed prefixes."""
    from ..audio.inputs import input_uri_allowed

    problems = []
    allowed = ", ".join(config.allow_input_prefixes) or "none configured"
    for name in ("src_audio", "ref_audio"):
        uri = getattr(request, name)
        if uri and uri not in inputs and not input_uri_allowed(uri, config.allow_input_prefixes):
            problems.append({"field": name, "message": (
                f"this server does not read {name} from {uri!r} (allowed prefixes: {allowed}; the operator sets them "
                "with --allow-input-prefix); upload the audio instead as 'data:audio/wav;base64,...'")})
    lora = request.lora
    if lora:
        from pathlib import Path

        is_local_or_uri = "://" in lora or Path(lora).expanduser().exists() or lora.startswith((".", "/", "~"))
        if is_local_or_uri and not input_uri_allowed(lora, config.allow_input_prefixes):
            problems.append({"field": "lora", "message": (
                f"this server does not read LoRA adapters from {lora!r} (allowed prefixes: {allowed}; "
                "--allow-input-prefix)")})
        elif not is_local_or_uri and not config.allow_hub_lora:
            problems.append({"field": "lora", "message": (
                f"this server does not download Hub adapters such as {lora!r}; the operator enables that with "
                "--allow-hub-lora, or lists a folder of adapters with --allow-input-prefix")})
    return problems


def _field_message(text: str) -> str:
    return text.replace("row 1, ", "", 1) if text.startswith("row 1") else text


# ---------------------------------------------------------------------------------- deployment

api = FastAPI(title="acestep-batch", description="ACE-Step v1 music generation (online).")
body_schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["prompt"],
    "description": "The same fields as a manifest row (see manifests/README.md).",
    "properties": {"prompt": {"type": "string"}, "lyrics": {"type": "string"}, "duration": {"type": "number"},
                   "seed": {"type": "integer"}, "steps": {"type": "integer"}, "format": {"type": "string"}},
}}}}}

@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class AceStepServe:
    def __init__(self, config: ServeConfig) -> None:
        from ..replica import AceStepReplica, ReplicaConfig
        from ..storage import Storage

        self.config = config
        self.replica = AceStepReplica(ReplicaConfig(engine=config.engine(), sample_rate=config.sample_rate,
                                                    input_storage_options=config.storage_options))
        self.metrics = ServeMetrics(DEPLOYMENT_NAME)
        self.scheduler = RenderScheduler(self.replica, config, self.metrics)
        self.storage = Storage(config.output, config.storage_options) if config.output else None
        self.api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self.tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ helpers
    def _auth(self, request: Request) -> JSONResponse | None:
        if self.config.api_key_env is None:
            return None
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not self.api_key or not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    def _finish(self, endpoint: str, started: float, response: Response) -> Response:
        self.metrics.request(endpoint, response.status_code, time.perf_counter() - started)
        return response

    def _busy(self) -> JSONResponse:
        return JSONResponse({"error": "server busy: the request queue is full; retry later"}, status_code=503,
                            headers={"Retry-After": str(self.config.retry_after_s)})

    async def _render(self, spec: Any, fmt: str, inputs: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
        """Render and encode one request; raises QueueFull, asyncio.TimeoutError, RuntimeError."""
        from ..audio.encode import encode_audio
        from ..audio.qc import check_audio

        outcome, queued_s = await asyncio.wait_for(self.scheduler.render_online(spec.request, inputs),
                                                   timeout=self.config.request_timeout_s)
        if outcome.error is not None:
            raise RuntimeError(outcome.error)
        result = outcome.result
        wave = result.audio.numpy()
        report = check_audio(wave)
        if not report.ok:
            raise RuntimeError("quality check failed: " + "; ".join(report.problems))
        started = time.perf_counter()
        # FLAC has no float samples: a float server still answers FLAC requests, in 24-bit.
        bit_depth = "24" if fmt == "flac" and self.config.bit_depth == "float" else self.config.bit_depth
        try:
            data = await asyncio.to_thread(encode_audio, wave, result.sample_rate, fmt, bit_depth)
        except Exception as error:
            raise RuntimeError(f"encoding {fmt} failed: {type(error).__name__}: {error}") from None
        headers = {
            "X-Seed": str(spec.request.seed), "X-Duration": f"{wave.shape[1] / result.sample_rate:.6f}",
            "X-Sample-Rate": str(result.sample_rate), "X-Batch-Size": str(outcome.batch_size),
            "X-Queue-Seconds": f"{queued_s:.4f}", "X-Generate-Seconds": f"{outcome.seconds:.4f}",
            "X-Encode-Seconds": f"{time.perf_counter() - started:.4f}", "X-Replica": self.replica.replica_id,
        }
        return data, headers

    def _store(self, name: str, data: bytes) -> str:
        assert self.storage is not None
        self.storage.write_bytes(f"{SERVE_AUDIO_DIR}/{name}", data)
        return self.storage.url(f"{SERVE_AUDIO_DIR}/{name}")

    def _write_task(self, task_id: str, record: dict[str, Any]) -> None:
        assert self.storage is not None
        self.storage.write_text(f"{TASKS_DIR}/{task_id}.json", json.dumps(record))

    # ------------------------------------------------------------ endpoints
    @api.post("/v1/generate", openapi_extra=body_schema,
              responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()}}})
    async def generate(self, request: Request, store: bool = False) -> Response:
        started = time.perf_counter()
        denied = self._auth(request)
        if denied is not None:
            return self._finish("generate", started, denied)
        try:
            spec, fmt, inputs = parse_body(await request.body(), self.config)
        except RequestProblem as problem:
            return self._finish("generate", started, JSONResponse({"detail": problem.problems}, status_code=422))
        if store and self.storage is None:
            return self._finish("generate", started, JSONResponse(
                {"detail": [{"field": "store", "message": "this server was started without --output"}]}, status_code=400))
        try:
            data, headers = await self._render(spec, fmt, inputs)
        except QueueFull:
            return self._finish("generate", started, self._busy())
        except asyncio.TimeoutError:
            return self._finish("generate", started, JSONResponse({"error": "timed out"}, status_code=504))
        except RuntimeError as error:
            return self._finish("generate", started, JSONResponse({"error": str(error)}, status_code=500))
        headers["X-Total-Seconds"] = f"{time.perf_counter() - started:.4f}"
        if store:
            name = f"{uuid.uuid4().hex}.{fmt}"
            uri = await asyncio.to_thread(self._store, name, data)
            body = {"uri": uri, "seed": spec.request.seed, "format": fmt, "request": spec.request.to_dict(),
                    "headers": headers}
            return self._finish("generate", started, JSONResponse(body, headers=headers))
        return self._finish("generate", started, Response(data, media_type=CONTENT_TYPES[fmt], headers=headers))

    @api.post("/v1/tasks", status_code=202, openapi_extra=body_schema)
    async def create_task(self, request: Request) -> Response:
        started = time.perf_counter()
        denied = self._auth(request)
        if denied is not None:
            return self._finish("tasks", started, denied)
        try:
            spec, fmt, inputs = parse_body(await request.body(), self.config)
        except RequestProblem as problem:
            return self._finish("tasks", started, JSONResponse({"detail": problem.problems}, status_code=422))
        if self.storage is None:
            return self._finish("tasks", started, JSONResponse(
                {"error": "this server was started without --output; tasks need somewhere to store audio"}, status_code=400))
        if self.scheduler._live_online() >= self.config.max_queued:
            return self._finish("tasks", started, self._busy())
        task_id = uuid.uuid4().hex
        record = {"id": task_id, "status": "queued", "created_at": _now(), "request": spec.request.to_dict(),
                  "format": fmt, "uri": None, "error": None}
        await asyncio.to_thread(self._write_task, task_id, record)
        task = asyncio.get_running_loop().create_task(self._run_task(task_id, record, spec, fmt, inputs))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return self._finish("tasks", started, JSONResponse({"id": task_id, "status": "queued"}, status_code=202))

    async def _run_task(self, task_id: str, record: dict[str, Any], spec: Any, fmt: str, inputs: dict[str, Any]) -> None:
        try:
            data, headers = await self._render(spec, fmt, inputs)
            uri = await asyncio.to_thread(self._store, f"{task_id}.{fmt}", data)
            record.update(status="done", uri=uri, seed=spec.request.seed, timings=headers)
        except QueueFull:
            record.update(status="failed", error="queue full")
        except asyncio.TimeoutError:
            record.update(status="failed", error="timed out")
        except Exception as error:
            record.update(status="failed", error=str(error))
        record["finished_at"] = _now()
        await asyncio.to_thread(self._write_task, task_id, record)

    @api.get("/v1/tasks/{task_id}")
    async def get_task(self, task_id: str, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        if not _TASK_ID.match(task_id) or self.storage is None:
            return JSONResponse({"error": f"no task {task_id!r}"}, status_code=404)
        name = f"{TASKS_DIR}/{task_id}.json"
        if not await asyncio.to_thread(self.storage.exists, name):
            return JSONResponse({"error": f"no task {task_id!r}"}, status_code=404)
        return JSONResponse(json.loads(await asyncio.to_thread(self.storage.read_text, name)))

    @api.get("/v1/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "replica": self.replica.replica_id,
                "queued_online": self.scheduler._live_online(), "queued_batch": len(self.scheduler.batch)}

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        return JSONResponse(self.describe())

    # ------------------------------------------------------------ handle methods
    def describe(self) -> dict[str, Any]:
        info = self.replica.info
        try:
            from ray import serve as _serve

            replicas = _serve.get_replica_context().replica_id.unique_id
        except Exception:
            replicas = None
        return {
            "checkpoint": info.get("checkpoint"), "revision": info.get("revision"),
            "fingerprint": info.get("fingerprint"), "dtype": info.get("dtype"), "device": info.get("device"),
            "sample_rate": self.config.sample_rate, "replica": info.get("replica"), "replica_id": replicas,
            "replicas": {"autoscale": list(self.config.autoscale) if self.config.autoscale else None,
                         "num_replicas": None if self.config.autoscale else self.config.replicas},
            "limits": {"max_duration": self.config.max_duration, "max_steps": self.config.max_steps,
                       "max_body_bytes": self.config.max_body_bytes, "max_upload_bytes": self.config.max_upload_bytes,
                       "max_queued": self.config.max_queued,
                       "max_batch_size": self.config.max_batch_size, "batch_wait_ms": self.config.batch_wait_ms},
            "stats": self.metrics.stats(),
            "lora": {"loaded": self.replica.pipeline.adapters.loaded, "loads": self.replica.pipeline.adapters.loads,
                     "cache_size": self.config.lora_cache_size, "hub_allowed": self.config.allow_hub_lora},
            "inputs": {"allowed_prefixes": list(self.config.allow_input_prefixes),
                       "max_upload_bytes": self.config.max_upload_bytes},
        }

    async def render_batch(self, specs_json: str) -> dict[str, list[Any]]:
        """One planned batch of a `submit --via-serve` job, at batch priority; returns the
        columns of `AceStepReplica.__call__` (the writer stage's input)."""
        return await self.scheduler.render_batch(specs_json)



def deployment_options(config: ServeConfig) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus}
    if config.api_key_env and os.environ.get(config.api_key_env) is not None:
        # The key travels to the replicas in their environment, not in the (logged) config.
        actor["runtime_env"] = {"env_vars": {config.api_key_env: os.environ[config.api_key_env]}}
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        # Requests must reach the replica so its own bounded queue answers 503 + Retry-After;
        # the engine itself runs one call at a time.
        "max_ongoing_requests": config.max_queued + config.max_batch_size + 64,
        "health_check_timeout_s": 60,
    }
    if config.autoscale:
        low, high = config.autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": max(1, config.max_batch_size)}
    else:
        options["num_replicas"] = config.replicas
    return options


def build_app(config: ServeConfig) -> Any:
    """The bound Serve application for `serve.run(app, name=APP_NAME, route_prefix="/")`."""
    if config.autoscale is None and config.replicas < 1:
        raise ValueError("replicas must be at least 1")
    if config.max_queued < 1 or config.max_batch_size < 1:
        raise ValueError("max_queued and max_batch_size must be at least 1")
    return AceStepServe.options(**deployment_options(config)).bind(config)


def app_builder(args: dict[str, Any]) -> Any:
    """`serve build` / `serve deploy` entry point: `import_path: acestep_batch.serve.app:app_builder`;
    `args` are `ServeConfig` fields."""
    known = {f.name for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown ServeConfig fields {unknown}; known: {sorted(known)}")
    values = dict(args)
    if values.get("autoscale") is not None:
        values["autoscale"] = tuple(values["autoscale"])
    if values.get("allow_input_prefixes") is not None:
        values["allow_input_prefixes"] = tuple(values["allow_input_prefixes"])
    return build_app(ServeConfig(**values))


# ---------------------------------------------------------------------------------- running it
@dataclass
class ServeRunOptions:
    """How `acestep-batch serve` runs the app (not part of the app itself)."""

    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None  # None: embedded local Ray
    app_name: str = APP_NAME
    num_cpus: int | None = None  # embedded Ray only
    num_gpus: int | None = None  # embedded Ray only
    ready_file: str | None = None
    startup_timeout_s: float = 600.0


def wait_healthy(url: str, timeout_s: float) -> bool:
    """Poll GET {url}/v1/health until it answers 200."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def run_server(config: ServeConfig, options: ServeRunOptions, echo: Any = print) -> int:
    """Start (or join) Ray, deploy the app, announce it, and block until SIGINT/SIGTERM.

    On exit the app is deleted; an embedded Ray (and its Serve) is shut down. Returns an exit code.
    """
    import logging
    import signal
    import threading

    import ray

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    embedded = options.address is None
    if embedded:
        cpus = options.num_cpus or max(os.cpu_count() or 1, 2)
        ray.init(num_cpus=cpus, num_gpus=options.num_gpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=options.address, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(build_app(config), name=options.app_name, route_prefix="/", blocking=False)
        url = f"http://{options.host}:{options.port}"
        if not wait_healthy(url, options.startup_timeout_s):
            echo(f"the app did not become healthy at {url} within {options.startup_timeout_s:g} s")
            return 1
        if options.ready_file:
            with open(options.ready_file + ".tmp", "w") as handle:
                handle.write(url + "\n")
            os.replace(options.ready_file + ".tmp", options.ready_file)
        echo(f"serving on {url} (app {options.app_name!r}; OpenAPI at {url}/docs); Ctrl-C to stop")
        while not stop.wait(0.5):
            pass
        echo("stopping")
        return 0
    finally:
        try:
            if embedded:
                serve.shutdown()
            else:
                serve.delete(options.app_name)
        finally:
            ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
