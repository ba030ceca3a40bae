"""The job's custom metrics reach Ray's Prometheus endpoint (what the dashboard charts)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MIXED_ROWS, run, write_manifest

EXPECTED = ("acestep_outputs_total", "acestep_audio_seconds_total", "acestep_generate_latency_seconds",
            "acestep_realtime_factor", "acestep_pending_outputs")


@pytest.fixture(scope="module")
def ray_with_fast_metrics() -> Iterator[int]:
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 500})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield int(ray.nodes()[0]["MetricsExportPort"])
    finally:
        ray.shutdown()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_custom_metrics_are_exported(tmp_path: Path, tiny_checkpoint: Path, ray_with_fast_metrics: int) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", MIXED_ROWS[:2])
    summary, _ = run(manifest, str(tmp_path / "out"), tiny_checkpoint)
    assert summary.generated == 2
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = _scrape(ray_with_fast_metrics)
        if all(f"ray_{name}" in text for name in EXPECTED):
            break
        time.sleep(1)
    missing = [name for name in EXPECTED if f"ray_{name}" not in text]
    assert not missing, f"metrics not exported: {missing}"
    ok = re.search(r'^ray_acestep_outputs_total\{[^}]*status="ok"[^}]*\} ([0-9.]+)$', text, re.M)
    assert ok and float(ok.group(1)) == 2.0
    audio = re.search(r"^ray_acestep_audio_seconds_total\{[^}]*\} ([0-9.]+)$", text, re.M)
    assert audio and abs(float(audio.group(1)) - summary.audio_seconds) < 1e-3
