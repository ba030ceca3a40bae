"""`ray job submit` of the job entrypoints to a local `ray start --head` cluster (issue 8).

Both entrypoint styles: `python -m acestep_batch submit ... --address auto` (the installed
package) and `python -m jobs.render_manifest ...` (the RayJob entrypoint of cluster/rayjob.yaml,
importable from the checkout on PYTHONPATH as in the image). No working dir is uploaded: the
cluster runs the venv this test runs in. The head node lives in its own temp dir and ports and
is stopped by killing exactly its processes (never `ray stop`, which stops every Ray on the host).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import soundfile as sf

from conftest import frames_for, write_manifest
from test_fault_tolerance import kill_ray_processes, ray_processes, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROWS = [
    {"id": "job-a", "prompt": "lo-fi piano", "duration": 1.0, "seed": 31, "steps": 3},
    {"id": "job-b", "prompt": "ambient pad", "duration": 1.5, "seed": 32, "steps": 3},
]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _start_head(tmp_path: Path, temp_dir: str, extra_ports: int = 0) -> tuple[str, dict[str, str], list[int]]:
    """`ray start --head` with the dashboard (Jobs/Serve REST APIs) on free ports, in `temp_dir`;
    returns the dashboard address, the environment for its CLIs, and `extra_ports` more free ports.
    RAY_TMPDIR marks every process of this cluster (daemons, workers and job drivers inherit it)."""
    gcs, dashboard, client_server, agent_http, agent_grpc, runtime_env_agent, metrics, *extra = _free_ports(7 + extra_ports)
    address = f"http://127.0.0.1:{dashboard}"
    # As from an activated venv: `python` on the cluster is this venv's.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_TMPDIR": temp_dir}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [str(VENV_BIN / "ray"), "start", "--head", "--num-cpus=3", "--num-gpus=0", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client_server}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
         f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    wait_for(lambda: _dashboard_up(address), 90, f"the dashboard at {address}", interval=0.5)
    return address, env, extra


def _stop_head(temp_dir: str) -> tuple[dict[int, str], dict[int, str]]:
    """Kill exactly this head node's processes; returns (found, survivors after 30 s)."""
    leftovers = kill_ray_processes(temp_dir)
    deadline = time.monotonic() + 30
    while ray_processes(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    survivors = kill_ray_processes(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return leftovers, survivors


def test_ray_job_submit_of_both_entrypoints_to_a_local_head_node(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    temp_dir = tempfile.mkdtemp(prefix="rjs-", dir="/tmp")
    manifest = write_manifest(tmp_path / "m.parquet", ROWS)
    leftovers: dict[int, str] = {}
    try:
        address, env, _ = _start_head(tmp_path, temp_dir)

        client = JobSubmissionClient(address)
        # The RayJob-style entrypoint is submitted with --no-wait and runs alongside the other one,
        # which `ray job submit` follows to the end (both ways a user submits; half the wall time).
        jobs = {
            "rayjob": ("python -m jobs.render_manifest", {"PYTHONPATH": str(REPO)}, ["--no-wait"]),  # as cluster/rayjob.yaml
            "module": ("python -m acestep_batch submit --address auto", {}, []),
        }
        submissions = {}
        for name, (program, env_vars, flags) in jobs.items():
            out = tmp_path / f"out-{name}"
            entrypoint = f"{program} {manifest} --output {out} --checkpoint {tiny_checkpoint} --batch-size 2 --no-progress"
            runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **env_vars}}
            submission_id = f"acestep-{name}-{os.getpid()}-{int(time.time())}"
            submitted = subprocess.run(
                [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--submission-id", submission_id,
                 "--runtime-env-json", json.dumps(runtime_env), *flags, "--", *entrypoint.split()],
                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
            )
            assert submitted.returncode == 0, (f"{name}: {submitted.stdout}{submitted.stderr}\n"
                                               f"job logs:\n{client.get_job_logs(submission_id)}")
            submissions[name] = (submission_id, out)

        finished = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        for name, (submission_id, out) in submissions.items():
            status = wait_for(lambda: (s := client.get_job_status(submission_id)) in finished and s, 300,
                              f"job {name} ({submission_id}) to end", interval=1.0)
            logs = client.get_job_logs(submission_id)
            assert status == JobStatus.SUCCEEDED, f"{name}: {status}\n{logs}"
            assert "2 generated, 0 skipped, 0 failed" in logs, logs
            assert "rendering on 1 replica(s)" in logs, logs
            # the driver ran with an address: it joined this cluster instead of starting a Ray of its own
            assert "is a local path but the job runs on a Ray cluster" in logs, logs

            meta = pq.read_table(out / "metadata").to_pylist()
            assert sorted((row["output_id"], row["status"]) for row in meta) == [("job-a", "ok"), ("job-b", "ok")]
            for row in ROWS:
                data, rate = sf.read(out / "audio" / f"{row['id']}.wav")
                assert rate == 44100 and data.shape == (frames_for(row["duration"]), 2)
            assert json.loads((out / "run.json").read_text())["status"] == "finished"
    finally:
        leftovers, survivors = _stop_head(temp_dir)  # this head node's processes only
    assert leftovers, "the cleanup found none of the head node's processes (the RAY_TMPDIR marker is broken)"
    assert not survivors, f"head node processes survived SIGKILL for 30 s: {survivors}"


def test_serve_deploy_of_the_cluster_config_answers(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`serve deploy cluster/serve-config.yaml` (made local: the tiny checkpoint, no GPU, one
    replica, a free HTTP port) on a `ray start --head` node, then a real /v1/generate request."""
    import io

    import requests
    import yaml

    temp_dir = tempfile.mkdtemp(prefix="sdp-", dir="/tmp")
    config = yaml.safe_load((REPO / "cluster" / "serve-config.yaml").read_text())
    app = config["applications"][0]
    app.pop("runtime_env", None)  # the cluster's Hub cache volume does not exist here
    for key in ("autoscale", "api_key_env"):
        app["args"].pop(key, None)
    app["args"].update(checkpoint=str(tiny_checkpoint), dtype="float32", num_gpus=0.0, num_cpus=0.5, replicas=1,
                       output=str(tmp_path / "online"), allow_input_prefixes=[])
    local_config = tmp_path / "serve-config.yaml"
    leftovers: dict[int, str] = {}
    survivors: dict[int, str] = {}
    try:
        address, env, (http,) = _start_head(tmp_path, temp_dir, extra_ports=1)
        config["http_options"] = {"host": "127.0.0.1", "port": http}
        local_config.write_text(yaml.safe_dump(config))
        attempts: list[subprocess.CompletedProcess] = []

        def deploy() -> bool:  # the Serve REST API can answer a little after /api/version does
            attempts.append(subprocess.run([str(VENV_BIN / "serve"), "deploy", str(local_config), "--address", address],
                                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180))
            return attempts[-1].returncode == 0

        wait_for(deploy, 120, lambda: f"serve deploy to be accepted; last try:\n{attempts[-1].stdout}{attempts[-1].stderr}",
                 interval=3.0)
        base = f"http://127.0.0.1:{http}"

        def healthy() -> bool:
            try:
                return requests.get(f"{base}/v1/health", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, 240, f"the deployed app at {base}/v1/health", interval=1.0)
        answer = requests.post(f"{base}/v1/generate", json={"prompt": "lo-fi piano", "duration": 1.0, "steps": 2,
                                                            "seed": 3}, timeout=120)
        assert answer.status_code == 200, answer.text
        wave, rate = sf.read(io.BytesIO(answer.content), always_2d=True)
        assert rate == 44100 and wave.shape == (frames_for(1.0), 2) and answer.headers["X-Seed"] == "3"
        models = requests.get(f"{base}/v1/models", timeout=30).json()
        assert models["checkpoint"] == str(tiny_checkpoint) and models["replicas"]["num_replicas"] == 1
    finally:
        leftovers, survivors = _stop_head(temp_dir)
    assert leftovers and not survivors, survivors
