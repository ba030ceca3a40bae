"""Helpers of the Serve tests (a uniquely named module: `conftest` is ambiguous across test folders)."""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests
import soundfile as sf

from acestep_batch.serve import ServeConfig, build_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServeCluster:
    port: int

    def url(self, prefix: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def deploy(self, config: ServeConfig, name: str = "acestep", prefix: str = "/") -> str:
        """Deploy an app, wait until it answers /v1/health, return its base URL."""
        from ray import serve

        serve.run(build_app(config), name=name, route_prefix=prefix)
        base = self.url("" if prefix == "/" else prefix)
        wait_healthy(base)
        return base


def wait_healthy(base: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/v1/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} did not become healthy")


def decode(data: bytes) -> tuple[np.ndarray, int]:
    wave, rate = sf.read(io.BytesIO(data), always_2d=True, dtype="float32")
    return wave.T, rate


def stats(base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return requests.get(f"{base}/v1/models", headers=headers or {}, timeout=30).json()["stats"]
