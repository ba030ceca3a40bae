"""`acestep-batch serve` as a user runs it (a separate process with its own embedded Ray):
it announces itself once healthy, renders over HTTP, serves a `submit --via-serve` job from
another process, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from serve_helpers import decode, free_port

SCRIPT = Path(sys.executable).parent / "acestep-batch"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("cli-serve")
    ready = folder / "ready"
    port = free_port()
    log = open(folder / "serve.log", "w")
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port), "--output", str(folder / "out"),
         "--num-cpus", "4", "--ready-file", str(ready), "--max-batch-size", "4", "--batch-wait-ms", "20"],
        stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert ready.exists(), (folder / "serve.log").read_text()[-3000:]
        yield ready.read_text().strip(), folder
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, (folder / "serve.log").read_text()[-3000:]
        text = (folder / "serve.log").read_text()
        assert f"serving on http://127.0.0.1:{port}" in text and "stopping" in text
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        log.close()


def test_serve_cli_generates(server: tuple[str, Path]) -> None:
    url, _ = server
    assert requests.get(f"{url}/v1/health", timeout=30).json()["status"] == "ok"
    response = requests.post(f"{url}/v1/generate", json={"prompt": "lo-fi", "duration": 1, "seed": 2, "steps": 2}, timeout=120)
    assert response.status_code == 200 and response.headers["X-Seed"] == "2"
    wave, rate = decode(response.content)
    assert rate == 44100 and wave.shape[0] == 2


def test_submit_via_serve_cli(server: tuple[str, Path]) -> None:
    url, folder = server
    manifest = folder / "m.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "prompt": ["x", "y", "z"], "duration": [1.0, 1.5, 1.0],
                             "steps": [2, 2, 2]}), manifest)
    out = folder / "job"
    result = subprocess.run([str(SCRIPT), "submit", str(manifest), "--output", str(out), "--via-serve", "--no-progress"],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 generated, 0 skipped, 0 failed" in result.stdout
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["a.wav", "b.wav", "c.wav"]
    assert requests.get(f"{url}/v1/models", timeout=30).json()["stats"]["batch_calls"] >= 1
