"""`acestep-batch model make-tiny` + `acestep-batch generate` through the installed console
script (separate processes, as a user runs them): file geometry (spec 1.5), audible and finite
audio, the 48 kHz path, and a bad checkpoint folder rejected with exit code 2."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_batch.model.request import GenerationRequest

pytestmark = pytest.mark.usefixtures("single_thread")

SCRIPT = Path(sys.executable).parent / "acestep-batch"
COMPONENTS = ("ace_step_transformer", "music_dcae_f8c8", "music_vocoder", "umt5-base")
LYRICS_ARG = "hello night\\nthe street"  # the CLI turns a literal backslash-n into a newline


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # One OpenMP thread: see the `single_thread` fixture (tests/model/conftest.py).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cli_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path) -> Path:
    assert SCRIPT.is_file(), f"console script not installed at {SCRIPT}"
    directory = tmp_path_factory.mktemp("cli") / "tiny"
    result = run_cli("model", "make-tiny", str(directory))
    assert result.returncode == 0, result.stderr
    assert "wrote tiny checkpoint" in result.stdout
    assert all((directory / name / "config.json").is_file() for name in COMPONENTS)
    # Weights are a deterministic function of (profile, seed): same bytes as the session checkpoint.
    for name, weights in (("ace_step_transformer", "diffusion_pytorch_model.safetensors"),
                          ("umt5-base", "model.safetensors")):
        assert (directory / name / weights).read_bytes() == (tiny_ckpt / name / weights).read_bytes()
    return directory


def _read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), always_2d=True, dtype="float32")
    return data.T, rate  # (channels, samples)


def _assert_audible(wave: np.ndarray) -> None:
    assert wave.shape[0] == 2
    assert np.isfinite(wave).all()
    assert 20 * math.log10(float(np.abs(wave).max())) > -60.0


def test_generate_wav_44k(cli_ckpt: Path, tmp_path: Path, tiny_pipe) -> None:
    out = tmp_path / "song.wav"
    result = run_cli("generate", "--prompt", "lo-fi piano, mellow", "--lyrics", LYRICS_ARG, "--duration", "2",
                     "--seed", "3", "--steps", "4", "--checkpoint", str(cli_ckpt), "--out", str(out))
    assert result.returncode == 0, result.stderr
    wave, rate = _read(out)
    assert rate == 44100
    assert wave.shape == (2, 4096 * 21)  # int(2 * 44100 / 512 / 8) = 21 latent frames
    _assert_audible(wave)
    # The CLI renders exactly the request its flags describe (24-bit PCM: quantisation 2^-23).
    request = GenerationRequest(prompt="lo-fi piano, mellow", lyrics="hello night\nthe street", duration=2.0,
                                seed=3, steps=4)
    expected = tiny_pipe.generate([request])[0].audio.numpy()
    assert np.abs(wave - expected).max() < 1e-5


def test_generate_wav_48k(cli_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "song48.wav"
    result = run_cli("generate", "--prompt", "jazz, bass", "--duration", "1", "--seed", "4", "--steps", "3",
                     "--sample-rate", "48000", "--checkpoint", str(cli_ckpt), "--out", str(out))
    assert result.returncode == 0, result.stderr
    wave, rate = _read(out)
    assert rate == 48000
    assert wave.shape == (2, math.ceil(160 * 4096 * 10 / 147))
    _assert_audible(wave)


def test_generate_bad_checkpoint_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "not_a_checkpoint"
    (bad / "ace_step_transformer").mkdir(parents=True)
    out = tmp_path / "never.wav"
    result = run_cli("generate", "--prompt", "x", "--duration", "1", "--steps", "1", "--checkpoint", str(bad),
                     "--out", str(out))
    assert result.returncode == 2, (result.stdout, result.stderr)
    for name in ("music_dcae_f8c8", "music_vocoder", "umt5-base"):
        assert name in result.stderr
    assert not out.exists()

