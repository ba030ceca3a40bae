"""Acceptance 1, 2 and 4 over real HTTP: /v1/generate equals `acestep-batch generate`, tasks
round-trip, health/models/docs answer, concurrent requests share engine calls and each equals its
single run, bad requests get 422 naming the field, and auth answers 401."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig
from acestep_batch.model.request import GenerationRequest
from acestep_batch.serve import ServeConfig

from serve_helpers import ServeCluster, decode, stats

SCRIPT = Path(sys.executable).parent / "acestep-batch"
KEY_ENV = "ACESTEP_TEST_SERVE_KEY"
KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def apps(serve_cluster: ServeCluster, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    output = tmp_path_factory.mktemp("serve-out")
    common = dict(checkpoint=str(tiny_checkpoint), output=str(output), bit_depth="float", max_duration=20.0, max_steps=50,
                  max_body_bytes=4096)
    main = serve_cluster.deploy(ServeConfig(**common, max_batch_size=8, batch_wait_ms=500), name="acestep", prefix="/")
    os.environ[KEY_ENV] = KEY
    try:
        secure = serve_cluster.deploy(ServeConfig(**common, api_key_env=KEY_ENV), name="secure", prefix="/secure")
    finally:
        del os.environ[KEY_ENV]
    yield {"main": main, "secure": secure, "output": str(output)}


@pytest.fixture(scope="module")
def local_pipe(tiny_checkpoint: Path) -> AceStepPipeline:
    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(tiny_checkpoint)))


def test_health_models_and_docs(apps: dict[str, str], tiny_checkpoint: Path) -> None:
    health = requests.get(f"{apps['main']}/v1/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = requests.get(f"{apps['main']}/v1/models", timeout=30).json()
    assert models["checkpoint"] == str(tiny_checkpoint)
    assert models["dtype"] == "float32" and models["device"] == "cpu"
    assert models["replicas"]["num_replicas"] == 1 and "revision" in models
    assert requests.get(f"{apps['main']}/docs", timeout=30).status_code == 200
    paths = requests.get(f"{apps['main']}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/generate", "/v1/tasks", "/v1/tasks/{task_id}", "/v1/health", "/v1/models"} <= set(paths)


def test_generate_equals_cli_generate(apps: dict[str, str], tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.wav"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cli = subprocess.run(
        [str(SCRIPT), "generate", "--prompt", "lo-fi piano, mellow", "--lyrics", "hello night\\nthe street",
         "--duration", "2", "--seed", "7", "--steps", "3", "--bit-depth", "float", "--checkpoint", str(tiny_checkpoint),
         "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stderr
    response = requests.post(f"{apps['main']}/v1/generate", timeout=120, json={
        "prompt": "lo-fi piano, mellow", "lyrics": "hello night\nthe street", "duration": 2, "seed": 7, "steps": 3})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["X-Seed"] == "7"
    served, rate = decode(response.content)
    expected, expected_rate = decode(out.read_bytes())
    assert rate == expected_rate == 44100 and served.shape == expected.shape and served.shape[0] == 2
    assert float(response.headers["X-Duration"]) == pytest.approx(served.shape[1] / rate)
    assert float(response.headers["X-Generate-Seconds"]) > 0 and "X-Queue-Seconds" in response.headers
    assert np.abs(served).max() > 1e-3
    np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)


def test_store_and_other_formats(apps: dict[str, str]) -> None:
    body = {"prompt": "jazz, bass", "duration": 1.5, "seed": 3, "steps": 3}
    plain = requests.post(f"{apps['main']}/v1/generate", json=body, timeout=120)
    stored = requests.post(f"{apps['main']}/v1/generate", params={"store": "true"}, json=body, timeout=120)
    assert plain.status_code == stored.status_code == 200, stored.text
    record = stored.json()
    assert record["seed"] == 3 and record["format"] == "wav"
    uri = Path(record["uri"])
    assert uri.is_file() and str(uri).startswith(apps["output"])
    np.testing.assert_array_equal(decode(uri.read_bytes())[0], decode(plain.content)[0])
    flac = requests.post(f"{apps['main']}/v1/generate", json={**body, "format": "flac"}, timeout=120)
    assert flac.status_code == 200 and flac.headers["Content-Type"] == "audio/flac"
    assert decode(flac.content)[0].shape == decode(plain.content)[0].shape


def test_tasks_round_trip(apps: dict[str, str]) -> None:
    created = requests.post(f"{apps['main']}/v1/tasks", json={"prompt": "ambient pad", "duration": 2, "seed": 9, "steps": 3},
                            timeout=60)
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        record = requests.get(f"{apps['main']}/v1/tasks/{task_id}", timeout=30).json()
        if record["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert record["status"] == "done", record
    wave, rate = decode(Path(record["uri"]).read_bytes())
    assert rate == 44100 and wave.shape[0] == 2 and np.abs(wave).max() > 1e-3
    direct = requests.post(f"{apps['main']}/v1/generate", json={"prompt": "ambient pad", "duration": 2, "seed": 9, "steps": 3},
                           timeout=120)
    np.testing.assert_array_equal(wave, decode(direct.content)[0])
    assert requests.get(f"{apps['main']}/v1/tasks/{'0' * 32}", timeout=30).status_code == 404
    assert requests.get(f"{apps['main']}/v1/tasks/..%2Frun", timeout=30).status_code == 404


def test_concurrent_requests_share_engine_calls(apps: dict[str, str], local_pipe: AceStepPipeline) -> None:
    bodies = [{"prompt": f"style {i}", "lyrics": "la la la" if i % 2 else "", "duration": 1.0 + 0.25 * (i % 3),
               "seed": 100 + i, "steps": 3, "guidance_scale": 10.0 + i} for i in range(8)]
    before = stats(apps["main"])
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: requests.post(f"{apps['main']}/v1/generate", json=b, timeout=300), bodies))
    after = stats(apps["main"])
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert after["online_rendered"] - before["online_rendered"] == 8
    engine_calls = after["engine_calls"] - before["engine_calls"]
    assert 1 <= engine_calls < 8, (before, after)
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1
    for body, response in zip(bodies, responses):
        single = local_pipe.generate([GenerationRequest(**body)])[0].audio.numpy()
        np.testing.assert_allclose(decode(response.content)[0], single, atol=1e-4, rtol=0)


BAD_REQUESTS = {
    "bad json": (b'{"prompt": "x", duration: 2', "body"),
    "not an object": (b'["prompt"]', "body"),
    "missing prompt": (b'{"duration": 2}', "prompt"),
    "empty prompt": (b'{"prompt": "   "}', "prompt"),
    "duration out of range": (b'{"prompt": "x", "duration": 1000}', "duration"),
    "duration over server limit": (b'{"prompt": "x", "duration": 30}', "duration"),
    "steps over server limit": (b'{"prompt": "x", "steps": 500}', "steps"),
    "wrong type": (b'{"prompt": "x", "steps": "many"}', "steps"),
    "unknown scheduler": (b'{"prompt": "x", "scheduler": "ddim"}', "scheduler"),
    "variations": (b'{"prompt": "x", "variations": 3}', "variations"),
    "body too large": (b'{"prompt": "' + b"x" * 5000 + b'"}', "body"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_answer_422_naming_the_field(apps: dict[str, str], case: str) -> None:
    data, field = BAD_REQUESTS[case]
    before = stats(apps["main"])["engine_calls"]
    for path in ("/v1/generate", "/v1/tasks"):
        response = requests.post(f"{apps['main']}{path}", data=data, headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 422, response.text
        fields = [problem["field"] for problem in response.json()["detail"]]
        assert field in fields, response.text
        assert all(problem["message"] for problem in response.json()["detail"])
    assert stats(apps["main"])["engine_calls"] == before


def test_auth(apps: dict[str, str]) -> None:
    body = {"prompt": "x", "duration": 1, "seed": 1, "steps": 2}
    url = f"{apps['secure']}/v1/generate"
    missing = requests.post(url, json=body, timeout=60)
    wrong = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=60)
    not_bearer = requests.post(url, json=body, headers={"Authorization": KEY}, timeout=60)
    assert missing.status_code == wrong.status_code == not_bearer.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{apps['secure']}/v1/models", timeout=30).status_code == 401
    assert requests.post(f"{apps['secure']}/v1/tasks", json=body, timeout=30).status_code == 401
    good = requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert good.status_code == 200 and good.headers["Content-Type"] == "audio/wav"
    assert requests.get(f"{apps['secure']}/v1/health", timeout=30).status_code == 200  # probes stay open
    # the unauthenticated app is unaffected
    assert requests.post(f"{apps['main']}/v1/generate", json=body, timeout=120).status_code == 200
