"""The `submit` and `status` commands as a user runs them: bad manifests, and a Ray cluster
started with `ray start --head` reached through `--address auto`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from conftest import MIXED_ROWS, frames_for, write_manifest

CLI = [sys.executable, "-m", "acestep_batch.cli"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def submit(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "submit", *args, "--no-progress"], capture_output=True, text=True, env=env or ENV,
                          timeout=timeout)


GOOD = {"id": "ok-1", "prompt": "lo-fi piano", "duration": 2.0, "seed": 1, "steps": 3}

BAD_MANIFESTS = {
    "no prompt column": ([{"id": "a", "lyrics": "x"}], None, "prompt"),
    "empty prompt": ([GOOD, {"id": "b", "prompt": "  "}], 2, "prompt"),
    "duplicate id": ([GOOD, {**GOOD, "seed": 2}], 2, "id"),
    "duration 0": ([GOOD, {"id": "d", "prompt": "p", "duration": 0.0}], 2, "duration"),
    "duration 1000": ([{"id": "d", "prompt": "p", "duration": 1000.0}, GOOD], 1, "duration"),
    "seed -1": ([GOOD, {"id": "s", "prompt": "p", "seed": -1}], 2, "seed"),
    "wrong type": ([{**GOOD, "steps": "3"}, {"id": "w", "prompt": "p", "steps": "many"}], 2, "steps"),
    "unknown scheduler": ([GOOD, {"id": "u", "prompt": "p", "scheduler": "ddim"}], 2, "scheduler"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_exits_2_names_row_and_column_and_writes_nothing(tmp_path: Path, tiny_checkpoint: Path, case: str) -> None:
    rows, bad_row, column = BAD_MANIFESTS[case]
    manifest = write_manifest(tmp_path / "bad.parquet", rows)
    out = tmp_path / "out"
    result = submit(manifest, "--output", str(out), "--checkpoint", str(tiny_checkpoint))
    assert result.returncode == 2, result.stderr
    assert f"'{column}'" in result.stderr or f"column {column}" in result.stderr, result.stderr
    if bad_row is not None:
        assert f"row {bad_row}" in result.stderr, result.stderr
    assert not out.exists()
    validate = subprocess.run([*CLI, "manifest", "validate", manifest], capture_output=True, text=True, env=ENV)
    assert validate.returncode == 2 and validate.stderr == result.stderr


def test_unreadable_manifest_exits_2(tmp_path: Path, tiny_checkpoint: Path) -> None:
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"definitely not parquet")
    out = tmp_path / "out"
    for manifest in (garbage, tmp_path / "missing.parquet"):
        result = submit(str(manifest), "--output", str(out), "--checkpoint", str(tiny_checkpoint))
        assert result.returncode == 2 and manifest.name in result.stderr, result.stderr
    assert not out.exists()


def test_wrong_checkpoint_exits_2_before_anything_starts(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", [GOOD])
    (tmp_path / "ckpt").mkdir()
    result = submit(manifest, "--output", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "ckpt"))
    assert result.returncode == 2 and "ace_step_transformer" in result.stderr
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_to_a_running_cluster_with_address_auto(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from test_fault_tolerance import kill_ray_processes

    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    # Its own temp dir, so that cleanup kills exactly this cluster (`ray stop` would stop every Ray on the host).
    temp_dir = Path(f"/tmp/ray-cli-{os.getpid()}-{port}")
    start = subprocess.run(
        [str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=3", "--num-gpus=1", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        capture_output=True, text=True, env=ENV, timeout=180,
    )
    assert start.returncode == 0, start.stderr
    try:
        manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS[:2])
        out = tmp_path / "out"
        # "auto" resolves through RAY_ADDRESS (what `ray start` prints for drivers on other shells too)
        result = submit(manifest, "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--address", "auto",
                        env={**ENV, "RAY_ADDRESS": f"127.0.0.1:{port}"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 generated, 0 skipped, 0 failed" in result.stdout
        assert "1 replica(s) x 1 GPU" in result.stdout  # the cluster's GPU was found and used
        data, rate = sf.read(out / "audio" / "song-en.wav")
        assert rate == 44100 and data.shape == (frames_for(2.0), 2)
        status = subprocess.run([*CLI, "status", str(out)], capture_output=True, text=True, env=ENV)
        assert status.returncode == 0 and "2 done, 0 failed, 0 pending" in status.stdout
    finally:
        kill_ray_processes(str(temp_dir))
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)
