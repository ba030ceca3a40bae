"""Issue 6 over Serve: the mixed-task manifest through `submit --via-serve` equals single renders;
over real HTTP an edit task takes its source audio as an inline upload or as a URI under an
allowed prefix, and everything else the server would have to fetch (other paths, traversal, Hub
adapters, oversized or undecodable uploads) is refused with 422 naming the field."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile as sf

from acestep_batch.batch.job import JobConfig, run_job
from acestep_batch.model.request import GenerationRequest
from acestep_batch.serve import ServeConfig

from serve_helpers import ServeCluster, decode
from task_inputs import TaskInputs, mixed_task_rows, single_renders, write_task_inputs

TOLERANCE = 1e-4
MAX_UPLOAD = 150_000


@pytest.fixture(scope="module")
def task_inputs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> TaskInputs:
    return write_task_inputs(tmp_path_factory.mktemp("serve-task-inputs"), tiny_checkpoint)


@pytest.fixture(scope="module")
def base(serve_cluster: ServeCluster, tiny_checkpoint: Path, task_inputs: TaskInputs) -> Iterator[str]:
    config = ServeConfig(checkpoint=str(tiny_checkpoint), bit_depth="float", max_batch_size=4, batch_wait_ms=20,
                         allow_input_prefixes=(str(task_inputs.src.parent),), max_upload_bytes=MAX_UPLOAD)
    yield serve_cluster.deploy(config)


@pytest.fixture(scope="module")
def local_pipe(tiny_checkpoint: Path):
    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig

    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(tiny_checkpoint)))


def _data_uri(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def _short_wav(folder: Path) -> Path:
    """1.2 s mono 16-bit: small enough for the test server's upload limit."""
    t = np.arange(52920) / 44100
    path = folder / "short.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 262 * t), 44100, subtype="PCM_16")
    return path


def _single(local_pipe, request: GenerationRequest, audio_path: Path) -> np.ndarray:
    from acestep_batch.audio.inputs import load_audio_input

    inputs = {uri: load_audio_input(str(audio_path)) for uri in (request.src_audio, request.ref_audio) if uri}
    return local_pipe.generate([request], inputs=inputs)[0].audio.numpy()


def test_via_serve_mixed_tasks_equal_single_renders(base: str, task_inputs: TaskInputs, tiny_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    rows = mixed_task_rows(task_inputs)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    manifest = tmp_path / "tasks.parquet"
    pq.write_table(pa.table({name: [row.get(name) for row in rows] for name in columns}), manifest)
    config = JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), checkpoint=str(tiny_checkpoint),
                       show_progress=False, batch_size=4, via_serve="acestep")
    lines: list[str] = []
    summary = run_job(config, echo=lines.append)
    assert (summary.generated, summary.failed) == (9, 0), lines
    for output_id, reference in single_renders(tiny_checkpoint, str(manifest)).items():
        audio, _ = sf.read(str(tmp_path / "out" / "audio" / f"{output_id}.wav"), dtype="float32", always_2d=True)
        assert audio.shape == reference.shape and np.abs(audio - reference).max() < TOLERANCE, output_id


def test_upload_and_allowed_uri_give_the_single_render(base: str, task_inputs: TaskInputs, local_pipe,
                                                       tmp_path: Path) -> None:
    short = _short_wav(tmp_path)
    body: dict[str, Any] = {"prompt": "piano", "task": "repaint", "repaint_start": 0.2, "repaint_end": 0.9,
                            "steps": 3, "seed": 5}
    uploaded = requests.post(f"{base}/v1/generate", json={**body, "src_audio": _data_uri(short)}, timeout=120)
    assert uploaded.status_code == 200, uploaded.text
    expected = _single(local_pipe, GenerationRequest(**{**body, "src_audio": "upload"}), short)
    wave, _ = decode(uploaded.content)
    assert wave.shape == expected.shape and np.abs(wave - expected).max() < TOLERANCE

    by_uri = requests.post(f"{base}/v1/generate", json={**body, "src_audio": str(task_inputs.src)}, timeout=120)
    assert by_uri.status_code == 200, by_uri.text
    expected = _single(local_pipe, GenerationRequest(**{**body, "src_audio": str(task_inputs.src)}), task_inputs.src)
    wave, _ = decode(by_uri.content)
    assert np.abs(wave - expected).max() < TOLERANCE


def test_lora_under_an_allowed_prefix(base: str, task_inputs: TaskInputs, local_pipe) -> None:
    body = {"prompt": "piano", "duration": 1.0, "steps": 3, "seed": 9}
    plain = requests.post(f"{base}/v1/generate", json=body, timeout=120)
    adapted = requests.post(f"{base}/v1/generate", json={**body, "lora": str(task_inputs.lora_b)}, timeout=120)
    assert plain.status_code == adapted.status_code == 200, adapted.text
    wave, _ = decode(adapted.content)
    expected = local_pipe.generate([GenerationRequest(**body, lora=str(task_inputs.lora_b))])[0].audio.numpy()
    assert np.abs(wave - expected).max() < TOLERANCE
    assert np.abs(wave - decode(plain.content)[0]).max() > 1e-3


def _problem(base: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{base}/v1/generate", json=body, timeout=60)
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]


def test_inputs_the_server_must_not_fetch_are_refused(base: str, task_inputs: TaskInputs,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("not-allowed")
    sf.write(elsewhere / "x.wav", np.zeros(44100), 44100)
    repaint = {"prompt": "piano", "task": "repaint", "repaint_start": 0.2, "repaint_end": 0.9, "steps": 2}
    cases = {
        "outside": {**repaint, "src_audio": str(elsewhere / "x.wav")},
        "traversal": {**repaint, "src_audio": f"{task_inputs.src.parent}/../{elsewhere.name}/x.wav"},
        "url": {**repaint, "src_audio": "http://169.254.169.254/latest/meta-data"},
        "a2a": {"prompt": "piano", "task": "audio2audio", "ref_audio": "s3://other-bucket/ref.wav", "steps": 2},
    }
    for name, body in cases.items():
        problem = _problem(base, body)
        assert problem["field"] in ("src_audio", "ref_audio") and "--allow-input-prefix" in problem["message"], name
    hub = _problem(base, {"prompt": "piano", "lora": "ACE-Step/ACE-Step-v1-chinese-rap-LoRA"})
    assert hub["field"] == "lora" and "--allow-hub-lora" in hub["message"]
    local = _problem(base, {"prompt": "piano", "lora": str(elsewhere)})
    assert local["field"] == "lora"


def test_bad_uploads_are_refused(base: str, task_inputs: TaskInputs) -> None:
    repaint = {"prompt": "piano", "task": "repaint", "repaint_start": 0.2, "repaint_end": 0.9, "steps": 2}
    too_big = _problem(base, {**repaint, "src_audio": _data_uri(task_inputs.src)})  # 384 kB > 150 kB
    assert too_big["field"] == "src_audio" and str(MAX_UPLOAD) in too_big["message"]
    garbage = "data:audio/wav;base64," + base64.b64encode(b"not audio at all" * 10).decode()
    assert _problem(base, {**repaint, "src_audio": garbage})["field"] == "src_audio"
    assert _problem(base, {**repaint, "src_audio": "data:audio/wav;base64,@@@"})["field"] == "src_audio"
    plain = io.BytesIO()
    sf.write(plain, np.zeros(100), 44100, format="WAV")
    not_base64 = "data:audio/wav," + plain.getvalue()[:50].hex()
    assert "base64" in _problem(base, {**repaint, "src_audio": not_base64})["message"]
