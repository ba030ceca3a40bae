"""Fixtures for the batch-job tests: one tiny checkpoint, an in-process Ray with logical GPUs,
and a helper that writes a manifest and runs a real job on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acestep_batch.batch.job import JobConfig, JobSummary, run_job
from acestep_batch.model.tiny import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("batch-ckpt") / "tiny", profile="tiny", seed=0)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """Real local Ray with 2 logical GPUs (torch sees no CUDA, so replicas run on the CPU)."""
    import ray

    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # start rendering only when every replica is up, so multi-replica tests really spread work
    context.wait_for_min_actors_s = 120
    try:
        yield
    finally:
        ray.shutdown()


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:  # every key of every row (from_pylist would take the first row's keys only)
        columns += [key for key in row if key not in columns]
    pq.write_table(pa.table({name: [row.get(name) for row in rows] for name in columns}), path)
    return str(path)


def run(manifest: str, output: str, checkpoint: Path, **options: Any) -> tuple[JobSummary, list[str]]:
    lines: list[str] = []
    config = JobConfig(manifest=manifest, output=output, checkpoint=str(checkpoint), show_progress=False, **options)
    return run_job(config, echo=lines.append), lines


MIXED_ROWS: list[dict[str, Any]] = [
    {"id": "inst-a", "prompt": "lo-fi hip hop, mellow piano, 80 bpm", "duration": 1.0, "seed": 11, "steps": 3, "bpm": 80},
    {"id": "song-en", "prompt": "pop, female vocal", "lyrics": "[verse]\nNeon lights they flicker bright", "duration": 2.0,
     "seed": 12, "steps": 3, "bpm": 120},
    {"id": "song-zh", "prompt": "c-pop ballad", "lyrics": "我走过深夜的街道", "duration": 1.5, "seed": 13, "steps": 3,
     "bpm": 70},
    {"id": "loop", "prompt": "techno drum loop", "duration": 1.2, "seed": 14, "steps": 3, "variations": 2, "bpm": 128},
    {"id": "heun", "prompt": "ambient pad", "duration": 1.0, "seed": 15, "steps": 2, "scheduler": "heun", "bpm": 60},
]
"""Instrumental and lyric rows (English, Chinese), different durations, variations and two
sampler loops: 6 outputs."""


def frames_for(duration: float) -> int:
    return 4096 * int(duration * 44100 / 512 / 8)


os.environ.setdefault("RAY_AUTH_MODE", "disabled")
