"""Fixtures for the Serve tests: one tiny checkpoint, and per module a real local Ray with Serve's
HTTP proxy on 127.0.0.1 at a free port; apps are deployed with `ServeCluster.deploy(...)`.
Everything talks real HTTP; Serve and Ray are always shut down at the end of the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from acestep_batch.model.tiny import make_tiny_checkpoint
from serve_helpers import ServeCluster, free_port


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve-ckpt") / "tiny", profile="tiny", seed=0)


@pytest.fixture(scope="module")
def serve_cluster() -> Iterator[ServeCluster]:
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield ServeCluster(port)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
