"""Engine fixtures: ONE tiny random-weight checkpoint and ONE loaded CPU pipeline per session.

The checkpoint is written by the real `make_tiny_checkpoint` in the official four-folder layout
(it carries its own lyric vocabulary, so nothing is downloaded). Tests that need to corrupt or
re-shard it copy it first (`copy_tiny_checkpoint`); the session copy is never modified.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the session's tiny checkpoint (profile "tiny", seed 0). Read-only by convention."""
    from acestep_batch.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_ckpt: Path):
    """The real pipeline loaded from the tiny checkpoint on CPU in float32."""
    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig

    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(tiny_ckpt), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def parity_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `parity` profile checkpoint the upstream fixtures were recorded on (hash-checked)."""
    import hashlib
    import json

    from acestep_batch.model.tiny import make_tiny_checkpoint

    recorded = json.loads((FIXTURES / "text2music_tiny.json").read_text())["checkpoint_sha256"]
    root = make_tiny_checkpoint(tmp_path_factory.mktemp("parity") / "ckpt", profile="parity", seed=0)
    drift = [name for name, digest in recorded.items()
             if hashlib.sha256((root / name).read_bytes()).hexdigest() != digest]
    assert not drift, f"make-tiny --profile parity changed since the fixtures were recorded: {drift}"
    return root


@pytest.fixture(scope="session")
def parity_pipeline(parity_checkpoint: Path, shared_dir: Path):
    """The real pipeline on the parity checkpoint with the real lyric vocabulary (fp32 CPU);
    tests run single-threaded like the fixture recordings (see `single_thread`)."""
    from acestep_batch.model.pipeline import AceStepPipeline, EngineConfig

    vocab = shared_dir / "data" / "acestep-v1-lyric-vocab.json"
    if not vocab.is_file():
        pytest.fail(f"lyric vocabulary missing at {vocab} (set ACESTEP_SHARED_DIR)")
    return AceStepPipeline.from_checkpoint(EngineConfig(checkpoint=str(parity_checkpoint), lyric_vocab=str(vocab),
                                                        device="cpu"))


@pytest.fixture
def copy_tiny_checkpoint(tiny_ckpt: Path, tmp_path: Path) -> Callable[[str], Path]:
    """Copy the session checkpoint to `tmp_path/<name>` (for tests that modify files)."""

    def copy(name: str = "ckpt") -> Path:
        return Path(shutil.copytree(tiny_ckpt, tmp_path / name))

    return copy


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread for every engine test module, restored afterwards.

    The tiny models run many small kernels; on a 2-core machine shared with other processes
    (Ray workers, parallel jobs) two OpenMP threads spin-wait for each other and a 0.1 s
    generation can take 10 s. Results compared within a test are computed under the same setting.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
