"""Fault tolerance on a local cluster (issue 8).

- A replica's worker process is SIGKILLed mid-job: Ray Data restarts the actor and retries its
  batches (its default for actor pools: max_restarts=-1, max_task_retries=-1), so the job ends
  normally with every output written exactly once, bit-identical to a clean run.
- The driver (`python -m acestep_batch submit`, embedded local Ray) is SIGKILLed with its whole
  process group mid-job: rerunning the same command resumes, skipping what was committed.

Every Ray instance here lives in its own temp dir (never /tmp/ray), so these tests neither join
nor stop anybody else's Ray, and every wait is bounded.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import frames_for, run, write_manifest

OUTPUTS = 8
BATCH_SIZE = 2
DURATION = 2.0
# Enough sampler steps that one batch of the tiny model takes a second or more on a 2-core CPU,
# so the job is still rendering when the first batch is committed and the kill lands mid-job.
STEPS = 160
ROWS = [
    {"id": f"ft-{index:02d}", "prompt": "lo-fi hip hop, mellow piano", "duration": DURATION, "seed": 700 + index,
     "steps": STEPS}
    for index in range(OUTPUTS)
]
IDS = sorted(row["id"] for row in ROWS)
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)


def wait_for(condition: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` (a text, or a function
    that describes the state at the timeout) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what if isinstance(what, str) else what()}")
        time.sleep(interval)


def committed_parts(output: Path) -> list[Path]:
    """Metadata part files (each commits one batch); in-flight temp files never end in .parquet."""
    return sorted((output / "metadata").glob("*.parquet"))


def metadata_rows(output: Path) -> list[dict[str, Any]]:
    parts = committed_parts(output)
    if not parts:
        return []
    return [row for part in parts for row in pq.read_table(part, columns=["output_id", "status", "replica"]).to_pylist()]


def ray_processes(marker: str) -> dict[int, str]:
    """pid -> command line of every live process of this test's Ray: its command line names
    `marker` (a Ray temp dir: GCS, raylet, agents and workers name their session dir) or its
    environment carries it (RAY_TMPDIR; job drivers started by a job supervisor)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if (marker in cmdline or marker in environ) and "zombie" not in state:
            found[int(entry.name)] = cmdline.strip()
    return found


def kill_ray_processes(marker: str) -> dict[int, str]:
    """SIGKILL whatever Ray processes under `marker` are still alive; returns what it found."""
    leftovers = ray_processes(marker)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def process_alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


def assert_every_output_exactly_once(output: Path, reference: dict[str, bytes]) -> list[dict[str, Any]]:
    rows = metadata_rows(output)
    counts = collections.Counter(row["output_id"] for row in rows if row["status"] == "ok")
    duplicated = sorted(output_id for output_id, count in counts.items() if count > 1)
    missing = sorted(set(IDS) - set(counts))
    assert not duplicated and not missing, f"duplicated ok rows: {duplicated}; missing: {missing}"
    assert sorted(counts) == IDS and all(row["status"] == "ok" for row in rows), rows
    audio = {path.name: path.read_bytes() for path in (output / "audio").iterdir()}
    assert sorted(audio) == sorted(reference), sorted(audio)  # no temp files or strays left either
    for name, data in audio.items():
        assert data == reference[name], f"{name} differs from the clean run's"
    return rows


@pytest.fixture(scope="module")
def isolated_ray() -> Iterator[str]:
    """An in-process local Ray (address="local": never joins a `ray start` cluster) in its own temp dir."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rft-", dir="/tmp")
    ray.init(address="local", num_cpus=3, num_gpus=0, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        kill_ray_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_manifest(tmp_path_factory.mktemp("ft-manifest") / "m.parquet", ROWS)


@pytest.fixture(scope="module")
def clean_audio(isolated_ray: str, manifest: str, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The audio files of an uninterrupted run of the same plan (file name -> bytes)."""
    output = tmp_path_factory.mktemp("ft-clean") / "out"
    summary, _ = run(manifest, str(output), tiny_checkpoint, batch_size=BATCH_SIZE, replicas=1)
    assert (summary.generated, summary.skipped, summary.failed) == (OUTPUTS, 0, 0)
    audio = {path.name: path.read_bytes() for path in (output / "audio").iterdir()}
    for name, data in audio.items():
        frames = sf.info(output / "audio" / name).frames
        assert frames == frames_for(DURATION), (name, frames)
    return audio


def test_killed_replica_is_restarted_and_every_output_is_written_once(
    isolated_ray: str, manifest: str, clean_audio: dict[str, bytes], tiny_checkpoint: Path, tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    outcome: dict[str, Any] = {}

    def driver() -> None:
        try:
            outcome["summary"] = run(manifest, str(output), tiny_checkpoint, batch_size=BATCH_SIZE, replicas=1)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    job = threading.Thread(target=driver, name="ft-driver", daemon=True)
    job.start()
    # The first committed batch names the replica that rendered it ("host:pid"): kill that process.
    first = wait_for(lambda: committed_parts(output) or outcome, 240, "the first committed batch")
    assert "error" not in outcome, outcome.get("error")
    assert "summary" not in outcome, "the job finished before the replica could be killed; make batches slower"
    replica = pq.read_table(first[0], columns=["replica"]).column("replica")[0].as_py()
    pid = int(replica.rsplit(":", 1)[1])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "AceStepReplica" in cmdline, f"pid {pid} is not the replica worker: {cmdline!r}"
    os.kill(pid, signal.SIGKILL)
    committed_at_kill = len(metadata_rows(output))

    job.join(timeout=300)
    assert not job.is_alive(), "the job did not finish within 300 s after its replica was killed"
    assert "error" not in outcome, f"the job failed after its replica was killed: {outcome.get('error')!r}"
    summary, lines = outcome["summary"]
    assert (summary.generated, summary.skipped, summary.failed) == (OUTPUTS, 0, 0), lines
    assert committed_at_kill < OUTPUTS, "every batch was already committed when the replica died"
    assert not process_alive(pid)

    rows = assert_every_output_exactly_once(output, clean_audio)
    by_replica = collections.Counter(row["replica"] for row in rows)
    # The killed process rendered the first batch(es); a restarted actor (a new process) the rest.
    assert 1 <= by_replica[replica] < OUTPUTS and len(by_replica) >= 2, by_replica


def test_killed_driver_resumes_when_submit_is_rerun(
    manifest: str, clean_audio: dict[str, bytes], tiny_checkpoint: Path, tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    ray_temp = tempfile.mkdtemp(prefix="rfd-", dir="/tmp")  # the embedded Ray's session lives here
    env = {**ENV, "RAY_TMPDIR": ray_temp}
    command = [sys.executable, "-m", "acestep_batch", "submit", manifest, "--output", str(output),
               "--checkpoint", str(tiny_checkpoint), "--batch-size", str(BATCH_SIZE), "--replicas", "1",
               "--num-cpus", "2", "--num-gpus", "0", "--no-progress"]
    first_log = tmp_path / "first.log"
    try:
        with first_log.open("wb") as log:
            first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_for(lambda: committed_parts(output) or first.poll() is not None, 240,
                     "the first committed batch of the first submit")
            assert first.poll() is None, f"submit ended before it was killed:\n{first_log.read_text()}"
            assert ray_processes(ray_temp), "the embedded Ray runs under RAY_TMPDIR"
            os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        # Nothing of the killed run's Ray (GCS, raylet, workers) outlives it.
        wait_for(lambda: not ray_processes(ray_temp), 30,
                 lambda: f"the killed driver's Ray processes to exit: {ray_processes(ray_temp)}", interval=0.5)

        before = metadata_rows(output)
        finished = {row["output_id"] for row in before if row["status"] == "ok"}
        assert 0 < len(finished) < OUTPUTS, f"{len(finished)} outputs committed when the driver was killed"
        status = subprocess.run([*command[:3], "status", str(output)], capture_output=True, text=True, env=env,
                                timeout=120)
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout  # the killed run never finished its run record
        assert f"{len(finished)} done, 0 failed, {OUTPUTS - len(finished)} pending" in status.stdout, status.stdout

        rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, start_new_session=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        left = OUTPUTS - len(finished)
        assert f"{len(finished)} already finished, {left} to render" in rerun.stdout, rerun.stdout
        assert f"{left} generated, {len(finished)} skipped, 0 failed" in rerun.stdout, rerun.stdout
        # ray.shutdown() at the end of submit stops the embedded Ray; give its processes a moment.
        wait_for(lambda: not ray_processes(ray_temp), 30,
                 lambda: f"the finished submit's Ray processes to exit: {ray_processes(ray_temp)}", interval=0.5)
    finally:
        kill_ray_processes(ray_temp)
        shutil.rmtree(ray_temp, ignore_errors=True)

    assert_every_output_exactly_once(output, clean_audio)
    status = subprocess.run([*command[:3], "status", str(output)], capture_output=True, text=True, env=ENV, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "finished" in status.stdout and f"{OUTPUTS} done, 0 failed, 0 pending" in status.stdout, status.stdout
