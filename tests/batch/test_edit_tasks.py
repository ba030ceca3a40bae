"""Issue 6 acceptance through `submit`: a mixed manifest of all six tasks and two LoRA adapters
renders outputs equal to single renders; rows are grouped by adapter so a replica loads each
adapter about once; bad task inputs fail only their own rows, with the reason in the metadata
and the summary. Real Ray (local), real files, the real engine on the tiny checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import run, write_manifest
from task_inputs import TaskInputs, mixed_task_rows, single_renders, write_task_inputs

pytestmark = pytest.mark.usefixtures("local_ray")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def task_inputs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> TaskInputs:
    return write_task_inputs(tmp_path_factory.mktemp("task-inputs"), tiny_checkpoint)


def _metadata(output: Path) -> dict[str, dict]:
    table = pq.read_table(str(output / "metadata"))
    return {row["output_id"]: row for row in table.to_pylist()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mixed_tasks_and_adapters_equal_single_renders(task_inputs: TaskInputs, tiny_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "tasks.parquet", mixed_task_rows(task_inputs))
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, batch_size=4)
    assert (summary.generated, summary.failed) == (9, 0), lines
    expected = single_renders(tiny_checkpoint, manifest)
    metadata = _metadata(tmp_path / "out")
    assert set(metadata) == set(expected)
    for output_id, reference in expected.items():
        audio, rate = sf.read(str(tmp_path / "out" / "audio" / f"{output_id}.wav"), dtype="float32", always_2d=True)
        assert rate == 44100 and audio.shape == reference.shape, output_id
        assert np.abs(audio - reference).max() < TOLERANCE, output_id
    src_frames = int(np.ceil(2.0 * 44100 / 4096))
    assert metadata["repaint"]["latent_frames"] == src_frames
    assert metadata["extend"]["latent_frames"] == 4 + src_frames + (int(2.5 * 44100 / 4096) - src_frames)
    assert metadata["extend"]["audio_seconds"] == pytest.approx(metadata["extend"]["latent_frames"] * 4096 / 44100)
    assert metadata["edit"]["src_audio_sha256"] == _sha256(task_inputs.src)
    assert metadata["a2a"]["ref_audio_sha256"] == _sha256(task_inputs.ref)
    assert metadata["a2a"]["ref_audio_seconds"] == pytest.approx(1.5)
    lora_a = _sha256(task_inputs.lora_a / "pytorch_lora_weights.safetensors")
    assert metadata["t2m-lora-a"]["lora_sha256"] == metadata["a2a"]["lora_sha256"] == lora_a
    assert metadata["t2m-lora-b-1"]["lora_sha256"] == _sha256(task_inputs.lora_b / "pytorch_lora_weights.safetensors")
    assert metadata["t2m"]["lora_sha256"] is None
    assert metadata["t2m-lora-b-0"]["lora_scale"] == pytest.approx(0.7)
    assert metadata["retake"]["retake_seeds"] == 5 and metadata["repaint"]["repaint_end"] == pytest.approx(1.1)


def test_rows_are_grouped_by_adapter(task_inputs: TaskInputs, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """12 rows alternating between two adapters, one replica caching ONE adapter: 2 loads, not 12."""
    adapters = [task_inputs.lora_a, task_inputs.lora_b]
    rows = [{"id": f"r{i:02d}", "prompt": "drum loop", "duration": 1.0, "steps": 2, "seed": i,
             "lora": str(adapters[i % 2])} for i in range(12)]
    manifest = write_manifest(tmp_path / "adapters.parquet", rows)
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, batch_size=2,
                         lora_cache_size=1)
    assert summary.generated == 12, lines
    loads = [row["replica_lora_loads"] for row in _metadata(tmp_path / "out").values()]
    assert max(loads) == 2


def test_bad_task_inputs_fail_only_their_rows(task_inputs: TaskInputs, tiny_checkpoint: Path, tmp_path: Path) -> None:
    common = {"prompt": "piano", "steps": 2, "seed": 1}
    rows = [
        {**common, "id": "ok", "duration": 1.0},
        {**common, "id": "ok-repaint", "task": "repaint", "src_audio": str(task_inputs.src), "repaint_start": 0.2,
         "repaint_end": 0.9},
        {**common, "id": "missing-src", "task": "repaint", "src_audio": str(tmp_path / "nope.wav"),
         "repaint_start": 0.2, "repaint_end": 0.9},
        {**common, "id": "outside", "task": "repaint", "src_audio": str(task_inputs.src), "repaint_start": 1.0,
         "repaint_end": 9.0},
        {**common, "id": "no-adapter", "duration": 1.0, "lora": str(tmp_path / "no-such-adapter")},
    ]
    manifest = write_manifest(tmp_path / "bad.parquet", rows)
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, batch_size=4)
    assert (summary.generated, summary.failed) == (2, 3), lines
    metadata = _metadata(tmp_path / "out")
    assert metadata["ok"]["status"] == metadata["ok-repaint"]["status"] == "ok"
    assert "src_audio" in metadata["missing-src"]["error"] and "nope.wav" in metadata["missing-src"]["error"]
    assert "outside the source audio" in metadata["outside"]["error"]
    assert "no-such-adapter" in metadata["no-adapter"]["error"]
    for output_id in ("missing-src", "outside", "no-adapter"):
        assert metadata[output_id]["status"] == "failed" and metadata[output_id]["audio_uri"] is None
        assert any(line.startswith(f"failed {output_id}:") for line in lines), lines
        assert not (tmp_path / "out" / "audio" / f"{output_id}.wav").exists()
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, batch_size=4)
    assert summary.skipped == 2  # a rerun keeps the good outputs and retries only the failed rows
