"""`acestep-batch submit`: a resumable Ray Data job over a manifest.

Shape: validate the whole manifest on the driver (nothing starts on a bad manifest) -> build a
deterministic batch plan -> drop outputs already finished -> `map_batches` over an actor pool of
`AceStepReplica`s (one resident pipeline each, `num_gpus` per actor) -> a CPU actor stage that
checks, encodes and atomically writes audio and commits each batch's metadata Parquet -> the
driver streams the small summary rows into a live progress bar and writes `run.json`.
With `via_serve` the replica stage is replaced by `serve_stage.ServeRenderCaller`, which sends
each planned batch to a running Serve app's replicas; everything else is the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..audio.postprocess import LoopFieldError, LoopFields, LoopOptions, retry_seed
from ..manifest import ManifestError, ManifestProblem, OutputSpec, load_manifest, manifest_sha256
from ..model.pipeline import EngineConfig
from ..model.request import DEFAULT_CHECKPOINT
from ..replica import AceStepReplica, ReplicaConfig
from ..storage import Storage
from .plan import AUDIO_DIR, METADATA_DIR, RUN_FILE, batch_rows, drop_finished, finished_outputs, plan_batches
from .writer import AudioWriter, OutputOptions, audio_name


@dataclass
class JobConfig:
    manifest: str
    output: str
    checkpoint: str = DEFAULT_CHECKPOINT
    revision: str | None = None
    lyric_vocab: str | None = None
    dtype: str | None = None
    address: str | None = None  # None: embedded local Ray; "auto" or "ray://host:10001": a cluster
    replicas: int | None = None  # None: one per GPU (by gpus_per_replica), or 1 without GPUs
    gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0
    batch_size: int = 4
    format: str = "wav"
    sample_rate: int = 44100
    bit_depth: str = "24"
    storage_options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    dry_run: bool = False
    local_num_cpus: int | None = None  # embedded Ray only
    local_num_gpus: int | None = None  # embedded Ray only (logical GPUs are fine for tests)
    ray_progress_bars: bool = False
    dashboard: bool = False
    show_progress: bool = True
    via_serve: str | None = None  # name of a running Serve app whose replicas render (see serve_stage)
    via_serve_concurrency: int = 2  # planned batches in flight to the Serve app at once
    lora_cache_size: int = 4  # LoRA adapters each replica keeps loaded (rows are ordered by adapter)
    loops: LoopOptions | None = None  # post-process outputs as loops (needs bpm/bars columns), QC + retries


@dataclass
class JobSummary:
    total: int
    generated: int
    skipped: int
    failed: int
    audio_seconds: float
    wall_seconds: float
    output: str
    failures: list[tuple[str, str]] = field(default_factory=list)

    rejected: int = 0  # loops set aside after failing QC on every attempt (counted in `failed` too)
    retried: int = 0  # QC re-renders done

    def line(self) -> str:
        line = f"{self.generated} generated, {self.skipped} skipped, {self.failed} failed"
        if self.rejected or self.retried:
            line += f" ({self.rejected} rejected by QC after retries; {self.retried} re-renders)"
        return line


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import ray
    import torch

    return {"acestep_batch": __version__, "torch": torch.__version__, "ray": ray.__version__,
            "python": platform.python_version()}


def _formats(specs: list[OutputSpec], default: str) -> dict[str, str]:
    return {spec.output_id: spec.format or default for spec in specs}


def _remove_previous(storage: Storage, names: dict[str, str]) -> None:
    """--overwrite: forget earlier results of this manifest (only files this job owns)."""
    for name in storage.list(METADATA_DIR, suffix=".parquet"):
        storage.delete(f"{METADATA_DIR}/{name}")
    present = set(storage.list(AUDIO_DIR))
    for name in names.values():
        if name in present:
            storage.delete(f"{AUDIO_DIR}/{name}")


def _start_ray(config: JobConfig, replicas_hint: int) -> bool:
    """Connect to (or start) Ray; returns True when this call started an embedded instance."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {} if config.ray_progress_bars else {"logging_level": logging.WARNING}
    ray.data.DataContext.get_current().enable_progress_bars = config.ray_progress_bars
    if not config.ray_progress_bars:  # our own progress bar and summary replace Ray Data's chatter
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if config.address:
        ray.init(address=config.address, log_to_driver=True, **quiet)
        return True
    cpus = config.local_num_cpus or max(os.cpu_count() or 1, math.ceil(replicas_hint * config.cpus_per_replica) + 1)
    # address="local": never join another Ray instance found on this host (RAY_ADDRESS, `ray start`)
    ray.init(address="local", num_cpus=cpus, num_gpus=config.local_num_gpus, include_dashboard=config.dashboard,
             dashboard_host="127.0.0.1", log_to_driver=True, **quiet)
    return True


def _replica_layout(config: JobConfig) -> tuple[int, float]:
    import ray

    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    gpus = config.gpus_per_replica if config.gpus_per_replica is not None else (1.0 if cluster_gpus else 0.0)
    if config.replicas is not None:
        replicas = config.replicas
    elif gpus > 0:
        replicas = max(1, int(cluster_gpus // gpus))
    else:
        replicas = 1
    if gpus * replicas > cluster_gpus + 1e-9:
        explicit = config.replicas is not None and config.gpus_per_replica is not None
        if not (explicit and config.address):  # only a real cluster can grow (autoscaling GPU groups)
            raise ValueError(f"{replicas} replicas x {gpus} GPU need {gpus * replicas:g} GPUs; "
                             f"the cluster has {cluster_gpus:g}")
        logging.getLogger(__name__).warning(
            "%d replicas x %g GPU need %g GPUs and the cluster has %g now: the replicas start as the "
            "autoscaler adds GPU nodes", replicas, gpus, gpus * replicas, cluster_gpus)
    return replicas, gpus


def check_loop_rows(specs: list[OutputSpec], options: LoopOptions, uri: str | None = None) -> None:
    """--loops needs `bpm` and `bars` (optionally `key`, `time_signature`) on every row, and a
    render long enough to cut the loop plus its crossfade from; raises ManifestError otherwise."""
    problems: list[ManifestProblem] = []
    seen: set[int] = set()
    for spec in specs:
        if spec.row in seen:
            continue
        seen.add(spec.row)
        try:
            fields = LoopFields.from_extra(spec.extra)
        except LoopFieldError as error:
            problems.append(ManifestProblem(spec.row, spec.id, error.column, error.value,
                                            f"{error.expected} (needed by --loops)"))
            continue
        needed = fields.loop_seconds() + options.crossfade_s
        if spec.request.task == "text2music" and spec.request.duration < needed + 0.05:
            problems.append(ManifestProblem(
                spec.row, spec.id, "duration", spec.request.duration,
                f"at least {needed + 0.05:.2f} s: {fields.bars} bars of {fields.meter[0]}/{fields.meter[1]} at "
                f"{fields.bpm:g} BPM last {fields.loop_seconds():.2f} s plus a {options.crossfade_s:g} s crossfade "
                "(`acestep-batch manifest expand` adds a render margin)"))
    if problems:
        raise ManifestError(problems, uri=uri)


def run_job(config: JobConfig, echo: Callable[[str], None] = print) -> JobSummary:
    """Run (or resume) a job. Raises ManifestError before anything starts on a bad manifest."""
    started = time.time()
    table, specs = load_manifest(config.manifest, config.storage_options)
    if config.loops is not None:
        check_loop_rows(specs, config.loops, config.manifest)
    storage = Storage(config.output, config.storage_options)
    formats = _formats(specs, config.format)
    names = {spec.output_id: audio_name(spec.output_id, formats[spec.output_id]) for spec in specs}
    if config.overwrite and not config.dry_run:
        _remove_previous(storage, names)
    finished = finished_outputs(storage, names)
    batches = drop_finished(plan_batches(specs, config.batch_size), finished)
    pending = sum(len(batch.pending) for batch in batches)
    skipped = len(specs) - pending
    echo(f"manifest {config.manifest}: {table.num_rows} rows -> {len(specs)} outputs; "
         f"{skipped} already finished, {pending} to render in {len(batches)} batches")
    if config.dry_run or not batches:
        summary = JobSummary(len(specs), 0, skipped, 0, 0.0, time.time() - started, storage.url())
        echo(("dry run: nothing written. " if config.dry_run else "") + summary.line())
        return summary

    run_record: dict[str, Any] = {
        "status": "running", "manifest": config.manifest, "manifest_sha256": manifest_sha256(table),
        "output": storage.url(), "started_at": _now(), "finished_at": None,
        "options": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("storage_options",)},
        "counts": {"outputs": len(specs), "rows": table.num_rows, "skipped": skipped, "pending": pending},
        "versions": _versions(),
    }
    storage.write_text(RUN_FILE, json.dumps(run_record, indent=2))

    if config.address and storage.is_local:
        echo(f"warning: output {storage.url()} is a local path but the job runs on a Ray cluster: each node "
             "writes to its own disk; use shared storage or an object-store URL for multi-node runs")
    started_ray = _start_ray(config, config.replicas or 1)
    try:
        if config.via_serve:
            from .serve_stage import check_serve_app

            check_serve_app(config.via_serve, config.sample_rate)
        summary = _execute(config, storage, batches, formats, pending, skipped, len(specs), started, echo, specs)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    run_record.update(
        status="finished", finished_at=_now(),
        counts={**run_record["counts"], "generated": summary.generated, "failed": summary.failed,
                "rejected": summary.rejected, "qc_rerenders": summary.retried, "audio_seconds": summary.audio_seconds},
    )
    storage.write_text(RUN_FILE, json.dumps(run_record, indent=2))
    return summary


def _execute(config, storage, batches, formats, pending, skipped, total, started, echo, specs=()) -> JobSummary:
    """Render the planned batches; with --loops, outputs that fail QC go round again with new seeds
    (one more Ray Data pass per attempt) until they pass or `max_attempts` is spent."""
    from .progress import JobProgress

    import uuid

    by_id = {spec.output_id: spec for spec in specs}
    run_id = uuid.uuid4().hex[:12]  # names this invocation's metadata parts (a retried writer task overwrites its own)
    tally = _Tally()
    attempts: dict[str, tuple[int, int]] = {}
    with JobProgress(pending, enabled=config.show_progress) as progress:
        while batches:
            retry = []
            for row in _render_pass(config, storage, batches, formats, attempts, echo, run_id).iter_rows():
                if row["status"] == "retry":
                    retry.append(row["output_id"])
                    continue
                tally.add(row)
                progress.advance(float(row["audio_seconds"] or 0.0))
            if not retry:
                break
            retried = []
            for output_id in sorted(retry):
                attempt, base_seed = attempts.get(output_id, (1, by_id[output_id].request.seed))
                spec = by_id[output_id]
                request = dataclasses.replace(spec.request, seed=retry_seed(base_seed, attempt + 1))
                retried.append(dataclasses.replace(spec, request=request))
                attempts[output_id] = (attempt + 1, base_seed)
            tally.retried += len(retried)
            echo(f"{len(retried)} output(s) failed QC; re-rendering with new seeds "
                 f"(attempt {max(a for a, _ in attempts.values())} of {config.loops.max_attempts})")
            batches = plan_batches(retried, config.batch_size)
    return tally.summary(storage, total, skipped, started, echo)


def _render_pass(config, storage, batches, formats, attempts, echo, run_id: str) -> Any:
    import ray

    output_options = OutputOptions(uri=config.output, storage_options=config.storage_options, bit_depth=config.bit_depth,
                                   loops=config.loops, run_id=run_id)
    dataset = ray.data.from_items(batch_rows(batches, formats, attempts), override_num_blocks=len(batches))
    if config.via_serve:
        from .serve_stage import ServeRenderCaller

        echo(f"rendering through Serve app {config.via_serve!r}, batch size {config.batch_size}; output {storage.url()}")
        dataset = dataset.map_batches(
            ServeRenderCaller, fn_constructor_kwargs={"app_name": config.via_serve}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(config.via_serve_concurrency, len(batches)))),
            num_cpus=0.1,
        )
    else:
        dataset = _replica_stage(config, dataset, len(batches), storage, echo)
    dataset = dataset.map_batches(
        AudioWriter, fn_constructor_kwargs={"options": output_options}, batch_size=None,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=0.25,
    )
    return dataset


def _replica_stage(config: JobConfig, dataset: Any, batch_count: int, storage: Storage, echo: Callable[[str], None]) -> Any:
    import ray

    replicas, gpus = _replica_layout(config)
    replicas = min(replicas, batch_count)
    engine = EngineConfig(checkpoint=config.checkpoint, revision=config.revision, dtype=config.dtype,
                          lyric_vocab=config.lyric_vocab, lora_cache_size=config.lora_cache_size)
    replica_config = ReplicaConfig(engine=engine, sample_rate=config.sample_rate,
                                   input_storage_options=config.storage_options)
    echo(f"rendering on {replicas} replica(s) x {gpus:g} GPU, batch size {config.batch_size}; output {storage.url()}")
    return dataset.map_batches(
        AceStepReplica, fn_constructor_kwargs={"config": replica_config}, batch_size=1,
        # one planned batch in flight per replica: batches are seconds long, and a second queued
        # batch would leave other replicas idle at the end of a job (measured in benchmarks/scaling.py)
        compute=ray.data.ActorPoolStrategy(size=replicas, max_tasks_in_flight_per_actor=1), num_gpus=gpus,
        num_cpus=config.cpus_per_replica,
    )


@dataclass
class _Tally:
    generated: int = 0
    failed: int = 0
    rejected: int = 0
    retried: int = 0
    audio_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if row["status"] == "ok":
            self.generated += 1
            self.audio_seconds += float(row["audio_seconds"])
            return
        self.failed += 1
        self.rejected += row["status"] == "rejected"
        self.failures.append((row["output_id"], row["error"] or ""))

    def summary(self, storage: Storage, total: int, skipped: int, started: float, echo: Callable[[str], None]) -> JobSummary:
        summary = JobSummary(total, self.generated, skipped, self.failed, self.audio_seconds, time.time() - started,
                             storage.url(), self.failures, self.rejected, self.retried)
        for output_id, error in self.failures[:10]:
            echo(f"failed {output_id}: {error.splitlines()[-1] if error else 'unknown error'}")
        echo(f"{summary.line()}; {self.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s")
        echo(f"audio: {storage.url(AUDIO_DIR)}  metadata: {storage.url(METADATA_DIR)}  run record: {storage.url(RUN_FILE)}")
        return summary
