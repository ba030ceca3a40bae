"""Acceptance 5: `submit --via-serve` renders a manifest through the Serve app's replicas (no
actor pool of its own) while online requests keep succeeding; its outputs equal a plain
`submit`'s, with the same layout, metadata and resume."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile as sf

from acestep_batch.batch.job import JobConfig, JobSummary, run_job
from acestep_batch.serve import ServeConfig

from serve_helpers import ServeCluster, stats

ROWS: list[dict[str, Any]] = [
    {"id": "inst-a", "prompt": "lo-fi hip hop, mellow piano", "duration": 1.0, "seed": 11, "steps": 3, "bpm": 80},
    {"id": "song-en", "prompt": "pop, female vocal", "lyrics": "[verse]\nNeon lights they flicker bright", "duration": 2.0,
     "seed": 12, "steps": 3, "bpm": 120},
    {"id": "song-zh", "prompt": "c-pop ballad", "lyrics": "我走过深夜的街道", "duration": 1.5, "seed": 13, "steps": 3, "bpm": 70},
    {"id": "loop", "prompt": "techno drum loop", "duration": 1.2, "seed": 14, "steps": 3, "variations": 2, "bpm": 128},
    {"id": "heun", "prompt": "ambient pad", "duration": 1.0, "seed": 15, "steps": 2, "scheduler": "heun", "bpm": 60},
    {"id": "long", "prompt": "orchestral", "duration": 3.0, "seed": 16, "steps": 3, "format": "flac", "bpm": 90},
]
OUTPUTS = 7


@pytest.fixture(scope="module")
def base(serve_cluster: ServeCluster, tiny_checkpoint: Path) -> Iterator[str]:
    yield serve_cluster.deploy(ServeConfig(checkpoint=str(tiny_checkpoint), max_batch_size=4, batch_wait_ms=20))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    columns: list[str] = []
    for row in ROWS:
        columns += [key for key in row if key not in columns]
    path = tmp_path_factory.mktemp("manifest") / "m.parquet"
    pq.write_table(pa.table({name: [row.get(name) for row in ROWS] for name in columns}), path)
    return str(path)


def _run(manifest: str, output: Path, checkpoint: Path, **options: Any) -> tuple[JobSummary, list[str]]:
    lines: list[str] = []
    config = JobConfig(manifest=manifest, output=str(output), checkpoint=str(checkpoint), show_progress=False,
                       batch_size=2, **options)
    return run_job(config, echo=lines.append), lines


def _audio(output: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(str(p), always_2d=True, dtype="float32")[0] for p in sorted((output / "audio").iterdir())}


def _metadata(output: Path) -> pa.Table:
    return pq.read_table(str(output / "metadata")).sort_by("output_id")


def test_via_serve_equals_plain_submit_while_online_requests_succeed(
        base: str, manifest: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    before = stats(base)
    online: list[int] = []
    stop = threading.Event()

    def online_traffic() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            body = {"prompt": "online", "duration": 1, "steps": 2, "seed": seed}
            online.append(requests.post(f"{base}/v1/generate", json=body, timeout=120).status_code)
            time.sleep(0.05)

    traffic = threading.Thread(target=online_traffic)
    traffic.start()
    try:
        served, lines = _run(manifest, tmp_path / "served", tiny_checkpoint, via_serve="acestep")
    finally:
        stop.set()
        traffic.join(timeout=120)
    assert (served.generated, served.skipped, served.failed) == (OUTPUTS, 0, 0), lines
    assert any("through Serve app 'acestep'" in line for line in lines), lines
    assert online and set(online) == {200}, online
    after = stats(base)
    assert after["batch_calls"] - before["batch_calls"] == 4  # 7 outputs in planned batches of 2

    plain, _ = _run(manifest, tmp_path / "plain", tiny_checkpoint)
    assert (plain.generated, plain.failed) == (OUTPUTS, 0)
    served_audio, plain_audio = _audio(tmp_path / "served"), _audio(tmp_path / "plain")
    assert sorted(served_audio) == sorted(plain_audio) and len(served_audio) == OUTPUTS
    assert sorted(p.name for p in (tmp_path / "served" / "audio").iterdir()) == \
        sorted(p.name for p in (tmp_path / "plain" / "audio").iterdir())
    for name in plain_audio:
        np.testing.assert_allclose(served_audio[name], plain_audio[name], atol=1e-4, rtol=0)  # 24-bit PCM files

    served_meta, plain_meta = _metadata(tmp_path / "served"), _metadata(tmp_path / "plain")
    assert served_meta.column_names == plain_meta.column_names
    for column in ("output_id", "id", "status", "seed", "prompt", "duration", "num_samples", "format", "bpm",
                   "checkpoint_fingerprint", "batch_size"):
        assert served_meta.column(column).to_pylist() == plain_meta.column(column).to_pylist(), column
    assert (tmp_path / "served" / "run.json").is_file()

    again, lines = _run(manifest, tmp_path / "served", tiny_checkpoint, via_serve="acestep")
    assert (again.generated, again.skipped, again.failed) == (0, OUTPUTS, 0), lines


def test_via_serve_unknown_app_is_refused(base: str, manifest: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Serve app"):
        _run(manifest, tmp_path / "out", tiny_checkpoint, via_serve="no-such-app")
    with pytest.raises(ValueError, match="48000"):
        _run(manifest, tmp_path / "out48", tiny_checkpoint, via_serve="acestep", sample_rate=48000)
    assert not (tmp_path / "out" / "audio").exists()


def test_online_requests_overtake_queued_batch_work(base: str, tiny_checkpoint: Path) -> None:
    """Batch work queued on the replica waits while an online request waits: the online request
    is rendered right after the job batch already on the engine, not after the whole queue."""
    import json

    from ray import serve

    from acestep_batch.batch.plan import spec_to_dict
    from acestep_batch.manifest import expand_manifest

    heavy = expand_manifest(pa.Table.from_pylist(
        [{"id": f"heavy-{i}", "prompt": "slow drone", "duration": 30.0, "seed": i, "steps": 10} for i in range(4)]))
    handle = serve.get_app_handle("acestep")
    before = stats(base)["engine_calls"]
    pending = [handle.render_batch.remote(json.dumps([spec_to_dict(spec, "wav", True)])) for spec in heavy]
    time.sleep(0.5)  # the first batch is on the engine, three more wait in the replica's batch queue
    online = requests.post(f"{base}/v1/generate", json={"prompt": "x", "duration": 1, "steps": 2, "seed": 1}, timeout=120)
    assert online.status_code == 200
    assert all(result.result()["status"] == ["ok"] for result in pending)
    after = stats(base)
    calls = after["recent_calls"][len(after["recent_calls"]) - (after["engine_calls"] - before):]
    assert sorted(calls) == ["batch"] * 4 + ["online"], calls
    assert calls.index("online") <= 1, calls
