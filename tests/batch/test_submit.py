"""End-to-end `submit` runs on real local Ray with the real engine on a tiny checkpoint."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from acestep_batch.batch.status import summarize_run
from acestep_batch.storage import Storage

from conftest import MIXED_ROWS, frames_for, run, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")

EXPECTED_IDS = {"inst-a", "song-en", "song-zh", "loop-0", "loop-1", "heun"}


def _metadata(output: Path):
    return pq.read_table(output / "metadata").to_pandas().set_index("output_id")


def test_mixed_manifest_writes_every_output(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS)
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, batch_size=4)
    assert (summary.generated, summary.skipped, summary.failed) == (6, 0, 0)
    assert any("6 generated, 0 skipped, 0 failed" in line for line in lines)

    out = tmp_path / "out"
    assert {p.stem for p in (out / "audio").iterdir()} == EXPECTED_IDS
    durations = {row["id"]: row["duration"] for row in MIXED_ROWS}
    meta = _metadata(out)
    for output_id in EXPECTED_IDS:
        data, rate = sf.read(out / "audio" / f"{output_id}.wav", dtype="float32", always_2d=True)
        info = sf.info(out / "audio" / f"{output_id}.wav")
        row = meta.loc[output_id]
        assert rate == 44100 and data.shape[1] == 2 and info.subtype == "PCM_24"
        assert data.shape[0] == frames_for(durations[row["id"]]) == row["num_samples"]
        assert np.isfinite(data).all() and np.abs(data).max() > 1e-3
        assert row["status"] == "ok" and row["audio_uri"].endswith(f"{output_id}.wav")
        assert row["bpm"] == next(r["bpm"] for r in MIXED_ROWS if r["id"] == row["id"])  # user column carried
    assert meta.loc["loop-1", "seed"] == meta.loc["loop-0", "seed"] + 1 == 15
    assert meta.loc["heun", "scheduler"] == "heun" and meta.loc["song-zh", "lyrics"] == "我走过深夜的街道"
    assert meta.loc["song-en", "checkpoint_fingerprint"] and meta.loc["song-en", "package_version"]
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["status"] == "finished" and run_record["counts"]["generated"] == 6
    status = summarize_run(str(out))
    assert (status.done, status.failed, status.pending) == (6, 0, 0)


def test_rerun_skips_and_regenerates_exactly_the_missing_output(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS)
    out = tmp_path / "out"
    run(manifest, str(out), tiny_checkpoint, batch_size=4)
    first = {p.name: p.read_bytes() for p in (out / "audio").iterdir()}

    summary, lines = run(manifest, str(out), tiny_checkpoint, batch_size=4)
    assert (summary.generated, summary.skipped, summary.failed) == (0, 6, 0)
    assert any("0 generated, 6 skipped, 0 failed" in line for line in lines)

    victim = out / "audio" / "song-zh.wav"
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    summary, _ = run(manifest, str(out), tiny_checkpoint, batch_size=4)
    assert (summary.generated, summary.skipped, summary.failed) == (1, 5, 0)
    assert victim.read_bytes() == first["song-zh.wav"]  # bit-identical regeneration
    after = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir() if p.name != "song-zh.wav"}
    assert after == before  # nothing else was rewritten


def _samples(output: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(p, dtype="float32")[0] for p in sorted((output / "audio").iterdir())}


def test_output_does_not_depend_on_batching_or_sharding(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS)
    runs = {
        "b1": dict(batch_size=1),
        "b4": dict(batch_size=4),
        "r2": dict(batch_size=1, replicas=2, gpus_per_replica=1.0),
    }
    audio = {}
    for name, options in runs.items():
        summary, _ = run(manifest, str(tmp_path / name), tiny_checkpoint, bit_depth="float", **options)
        assert summary.generated == 6
        audio[name] = _samples(tmp_path / name)
    replicas_seen = set(_metadata(tmp_path / "r2")["replica"])
    assert len(replicas_seen) == 2  # both replicas really rendered
    for name in ("b4", "r2"):
        for output_id, reference in audio["b1"].items():
            np.testing.assert_allclose(audio[name][output_id], reference, atol=1e-4, rtol=0)


def test_s3_output_and_manifest(tmp_path: Path, tiny_checkpoint: Path, s3_bucket: str, s3_storage_options: dict) -> None:
    storage = Storage(f"{s3_bucket}/manifests", s3_storage_options)
    local_manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS[:3])
    storage.write_bytes("m.parquet", Path(local_manifest).read_bytes())
    output = f"{s3_bucket}/runs/run1"
    summary, _ = run(f"{s3_bucket}/manifests/m.parquet", output, tiny_checkpoint, storage_options=s3_storage_options,
                     format="flac", bit_depth="16")
    assert summary.generated == 3 and summary.failed == 0

    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    bucket = s3_bucket.removeprefix("s3://")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/runs/run1/audio"))
    assert names == ["inst-a.flac", "song-en.flac", "song-zh.flac"]
    data, rate = sf.read(io.BytesIO(fs.cat(f"{bucket}/runs/run1/audio/song-en.flac")), dtype="float32")
    assert rate == 44100 and data.shape == (frames_for(2.0), 2) and np.abs(data).max() > 1e-3
    table = Storage(output, s3_storage_options).read_parquet_dir("metadata")
    assert sorted(table.column("output_id").to_pylist()) == ["inst-a", "song-en", "song-zh"]
    assert all(uri.startswith(f"{s3_bucket}/runs/run1/audio/") for uri in table.column("audio_uri").to_pylist())
    assert json.loads(fs.cat(f"{bucket}/runs/run1/run.json"))["status"] == "finished"
    again, _ = run(f"{s3_bucket}/manifests/m.parquet", output, tiny_checkpoint, storage_options=s3_storage_options,
                   format="flac", bit_depth="16")
    assert (again.generated, again.skipped) == (0, 3)


def test_failing_row_is_recorded_and_the_job_goes_on(tmp_path: Path, tiny_checkpoint: Path) -> None:
    pytest.importorskip("acestep_batch.model.lyrics")
    try:
        import cutlet  # noqa: F401

        pytest.skip("the Japanese extra is installed, so Japanese lyrics do not fail")
    except ImportError:
        pass
    rows = [MIXED_ROWS[0], {"id": "ja", "prompt": "j-pop", "lyrics": "こんにちは世界", "duration": 1.0, "seed": 3, "steps": 3}]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    summary, lines = run(manifest, str(out), tiny_checkpoint, batch_size=2)
    assert (summary.generated, summary.failed) == (1, 1)
    meta = _metadata(out)
    assert meta.loc["ja", "status"] == "failed" and "acestep-batch[ja]" in meta.loc["ja", "error"]
    assert meta.loc["inst-a", "status"] == "ok" and (out / "audio" / "inst-a.wav").exists()
    assert not (out / "audio" / "ja.wav").exists()
    status = summarize_run(str(out))
    assert (status.done, status.failed) == (1, 1)
    # a rerun retries the failed output only
    again, _ = run(manifest, str(out), tiny_checkpoint, batch_size=2)
    assert (again.skipped, again.failed) == (1, 1)


def test_overwrite_and_dry_run(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS[:2])
    out = tmp_path / "out"
    dry, lines = run(manifest, str(out), tiny_checkpoint, dry_run=True)
    assert dry.generated == 0 and not out.exists()
    run(manifest, str(out), tiny_checkpoint)
    summary, _ = run(manifest, str(out), tiny_checkpoint, overwrite=True)
    assert (summary.generated, summary.skipped) == (2, 0)
    assert len(list((out / "metadata").iterdir())) >= 1
    shutil.rmtree(out)


def test_output_failing_the_quality_check_is_recorded_and_not_written(tmp_path: Path, tiny_checkpoint: Path) -> None:
    blown_up = {"id": "nan", "prompt": "noise", "duration": 1.0, "seed": 4, "steps": 3, "cfg_type": "cfg",
                "guidance_scale": 1e30, "guidance_interval": 1.0}  # overflows to inf, then NaN audio
    manifest = write_manifest(tmp_path / "m.parquet", [MIXED_ROWS[0], blown_up])
    out = tmp_path / "out"
    summary, lines = run(manifest, str(out), tiny_checkpoint, batch_size=2)
    assert (summary.generated, summary.failed) == (1, 1)
    assert any(line.startswith("failed nan:") for line in lines)
    meta = _metadata(out)
    assert meta.loc["nan", "status"] == "failed" and "quality check failed" in meta.loc["nan", "error"]
    assert pd.isna(meta.loc["nan", "audio_uri"])
    assert not (out / "audio" / "nan.wav").exists()
    assert meta.loc["inst-a", "status"] == "ok" and (out / "audio" / "inst-a.wav").exists()
