"""Audio inputs of the edit tasks: reading from paths/URLs/uploads, decoding, limits, prefixes."""

from __future__ import annotations

import hashlib
import io
import pickle
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import soundfile as sf
from fsspec.spec import AbstractFileSystem

from acestep_batch.audio import inputs
from acestep_batch.audio import (
    AudioClip,
    AudioInputError,
    decode_audio_bytes,
    input_uri_allowed,
    load_audio_input,
)

PCM16_STEP = 1 / 32768


def noise(frames: int, channels: int, seed: int = 0, level: float = 0.5) -> np.ndarray:
    """(frames, channels) float32, as soundfile writes it."""
    return np.random.default_rng(seed).uniform(-level, level, (frames, channels)).astype(np.float32)


def sine(frames: int, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(frames) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[:, None]


def encoded(wave: np.ndarray, sample_rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def failure(uri: str, **options: Any) -> str:
    with pytest.raises(AudioInputError) as caught:
        load_audio_input(uri, **options)
    assert caught.value.uri == uri
    message = str(caught.value)
    assert message.startswith(f"audio input {uri!r}: ")
    return message


# --- decoding real files -------------------------------------------------------------------


def test_wav_16_bit_stereo_48k(tmp_path: Path) -> None:
    written = noise(4800, 2)
    path = tmp_path / "song.wav"
    sf.write(path, written, 48000, subtype="PCM_16")
    clip = load_audio_input(str(path))
    assert isinstance(clip, AudioClip)
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (2, 4800)
    assert clip.sample_rate == 48000 and clip.seconds == pytest.approx(0.1)
    np.testing.assert_allclose(clip.samples, written.T, atol=PCM16_STEP)
    assert not np.array_equal(clip.samples[0], clip.samples[1])  # channels kept apart, in order
    assert clip.uri == str(path)
    assert clip.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (clip.source_channels, clip.source_format) == (2, "WAV")
    assert clip.info() == {
        "uri": str(path),
        "sha256": clip.sha256,
        "sample_rate": 48000,
        "frames": 4800,
        "seconds": pytest.approx(0.1),
        "source_channels": 2,
        "source_format": "WAV",
    }
    # file:// URLs read the same file.
    again = load_audio_input(path.as_uri())
    assert np.array_equal(again.samples, clip.samples) and again.uri == path.as_uri()


def test_flac_mono_is_duplicated_and_not_resampled(tmp_path: Path) -> None:
    written = noise(2205, 1, seed=1)
    path = tmp_path / "mono.flac"
    sf.write(path, written, 22050, subtype="PCM_16")
    clip = load_audio_input(str(path))
    assert clip.samples.shape == (2, 2205) and clip.sample_rate == 22050
    assert np.array_equal(clip.samples[0], clip.samples[1])
    np.testing.assert_allclose(clip.samples[0], written[:, 0], atol=PCM16_STEP)
    assert (clip.source_channels, clip.source_format) == (1, "FLAC")


def test_more_than_two_channels_keep_the_first_two(tmp_path: Path) -> None:
    written = noise(1000, 4, seed=2)
    path = tmp_path / "quad.wav"
    sf.write(path, written, 44100, subtype="FLOAT")
    clip = load_audio_input(str(path))
    assert clip.samples.shape == (2, 1000) and clip.source_channels == 4
    assert np.array_equal(clip.samples, written[:, :2].T)


def test_ogg_vorbis(tmp_path: Path) -> None:
    written = sine(44100, 44100)
    path = tmp_path / "take.ogg"
    path.write_bytes(encoded(written, 44100, "OGG", "VORBIS"))
    clip = load_audio_input(str(path))
    assert clip.samples.shape == (2, 44100) and clip.sample_rate == 44100
    assert clip.source_format == "OGG"
    # Lossy: the waveform is close, not equal.
    assert np.corrcoef(clip.samples[0], written[:, 0])[0, 1] > 0.99
    assert np.max(np.abs(clip.samples[0])) == pytest.approx(0.5, abs=0.05)


@pytest.mark.skipif(
    "MP3" not in sf.available_formats(),
    reason=f"libsndfile {sf.__libsndfile_version__} has no MP3 support (needs >= 1.1)",
)
def test_mp3(tmp_path: Path) -> None:
    written = sine(44100, 44100, hz=220.0)
    path = tmp_path / "take.mp3"
    path.write_bytes(encoded(written, 44100, "MP3"))
    clip = load_audio_input(str(path))
    assert clip.sample_rate == 44100 and clip.source_format == "MP3"
    assert clip.samples.shape[0] == 2 and abs(clip.frames - 44100) <= 2304  # codec padding
    assert np.max(np.abs(clip.samples)) == pytest.approx(0.5, abs=0.05)
    assert np.sqrt(np.mean(clip.samples[0] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_memory_url() -> None:
    written = noise(800, 2, seed=3)
    uri = f"memory://audio-inputs-{uuid.uuid4().hex}/ref.wav"
    with fsspec.open(uri, "wb") as handle:
        handle.write(encoded(written, 16000, "WAV", "FLOAT"))
    clip = load_audio_input(uri)
    assert clip.uri == uri and clip.sample_rate == 16000
    assert np.array_equal(clip.samples, written.T)


def test_storage_options_reach_the_filesystem(
    s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    written = noise(480, 2, seed=4)
    uri = f"{s3_bucket}/in/song.wav"
    with fsspec.open(uri, "wb", **s3_storage_options) as handle:
        handle.write(encoded(written, 48000, "WAV", "FLOAT"))
    clip = load_audio_input(uri, storage_options=s3_storage_options)
    assert np.array_equal(clip.samples, written.T)
    assert "file not found" in failure(f"{s3_bucket}/in/nope.wav",
                                       storage_options=s3_storage_options)


def test_upload_bytes() -> None:
    written = noise(960, 2, seed=5)
    data = encoded(written, 48000, "WAV", "PCM_16")
    clip = decode_audio_bytes(data, "take 1.wav")
    assert clip.uri == "upload:take 1.wav"
    assert clip.sha256 == hashlib.sha256(data).hexdigest()
    np.testing.assert_allclose(clip.samples, written.T, atol=PCM16_STEP)
    with pytest.raises(AudioInputError, match=r"^audio input 'upload:notes.txt': not a WAV/FLAC"):
        decode_audio_bytes(b"just some text, not audio at all", "notes.txt")


# --- what goes wrong ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    uri = str(tmp_path / "nope.wav")
    message = failure(uri)
    assert "file not found; check the path" in message


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    assert "is a folder, not an audio file" in failure(str(tmp_path))


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF but not really a wave file" * 10)
    message = failure(str(path))
    assert "not a WAV/FLAC/OGG/MP3 file soundfile can decode (" in message
    assert "convert it to WAV or FLAC" in message


def test_truncated_flac_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    path.write_bytes(encoded(noise(4410, 2), 44100, "FLAC")[:30])
    assert "soundfile can decode" in failure(str(path))


def test_empty_file_and_empty_audio(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert "the file is empty (0 bytes)" in failure(str(empty))
    silent = tmp_path / "no-frames.wav"
    silent.write_bytes(encoded(np.zeros((0, 2), np.float32), 44100, "WAV", "PCM_16"))
    assert "the file holds no audio (0 frames)" in failure(str(silent))


def test_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, noise(44100, 2), 44100, subtype="PCM_16")  # 1 s
    message = failure(str(path), max_seconds=0.5)
    assert "the audio is too long (1.00 s; at most 0.5 s can be used)" in message
    assert "cut it to 0.5 s or less" in message
    assert load_audio_input(str(path), max_seconds=1.0).frames == 44100  # the limit is inclusive
    with pytest.raises(AudioInputError, match="too long"):
        decode_audio_bytes(path.read_bytes(), "long.wav", max_seconds=0.25)


def test_nan_samples(tmp_path: Path) -> None:
    written = noise(4000, 2)
    written[1000, 1] = np.nan
    written[3000, 0] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, written, 4000, subtype="FLOAT")
    message = failure(str(path))
    assert "the audio holds NaN or infinite samples (first at 0.250 s)" in message


def test_too_large_by_reported_size(tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    sf.write(path, noise(4410, 2), 44100, subtype="PCM_16")
    size = path.stat().st_size
    message = failure(str(path), max_bytes=1000)
    assert f"the file is too large ({size} bytes; the limit is 1000 bytes)" in message
    assert "re-encode it (e.g. FLAC or MP3)" in message
    assert "(512.0 MiB; the limit is 256.0 MiB)" in inputs._too_large(512 * 2**20, 256 * 2**20)
    assert load_audio_input(str(path), max_bytes=path.stat().st_size).frames == 4410


class _SizelessFS(AbstractFileSystem):
    """A filesystem that cannot tell sizes (like some HTTP servers) and serves fixed bytes."""

    protocol = "sizelessaudio"
    data = b""

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"name": path, "size": None, "type": "file"}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        return io.BytesIO(self.data)


class _BrokenFS(AbstractFileSystem):
    """A filesystem whose reads fail the way a network does."""

    protocol = "brokenaudio"

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"name": path, "size": 10, "type": "file"}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        raise ConnectionError("connection reset by peer")


@pytest.fixture
def fake_filesystems() -> None:
    fsspec.register_implementation("sizelessaudio", _SizelessFS, clobber=True)
    fsspec.register_implementation("brokenaudio", _BrokenFS, clobber=True)


def test_too_large_without_a_reported_size(fake_filesystems: None) -> None:
    _SizelessFS.data = encoded(noise(4410, 2), 44100, "WAV", "PCM_16")
    uri = "sizelessaudio://host/big.wav"
    assert "too large (more than 100 bytes; the limit is 100 bytes)" in failure(uri, max_bytes=100)
    assert load_audio_input(uri).frames == 4410


def test_unreadable(fake_filesystems: None) -> None:
    message = failure("brokenaudio://host/song.wav")
    assert "cannot be read (ConnectionError: connection reset by peer)" in message
    assert "check permissions, credentials and the network" in message


def test_unknown_scheme_and_empty_uri() -> None:
    assert "cannot open this kind of location" in failure("nosuchscheme://bucket/song.wav")
    with pytest.raises(AudioInputError, match="it is empty"):
        load_audio_input("  ")


def test_error_pickles() -> None:
    error = AudioInputError("s3://b/x.wav", "file not found")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.uri, copy.problem, str(copy)) == (error.uri, error.problem, str(error))
    assert isinstance(copy, ValueError)


# --- allowed prefixes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("/data/in/song.wav", True),
        ("/data/in", True),
        ("/data/in/sub/dir/song.wav", True),
        ("file:///data/in/song.wav", True),
        ("/data/in/../../etc/passwd", False),
        ("/data/in/../secret.wav", False),
        ("/data/input2/song.wav", False),
        ("/data/i", False),
        ("/etc/passwd", False),
        ("file:///data/in/%2e%2e/secret.wav", False),
        ("s3://bucket/in/song.wav", True),
        ("s3://bucket/in/a/b.wav", True),
        ("s3://bucket/in2/song.wav", False),
        ("s3://other/in/song.wav", False),
        ("s3://bucket/in/../out/song.wav", False),
        ("s3://bucket/in/%2E%2E/out/song.wav", False),
        ("gs://bucket/in/song.wav", False),
        ("https://cdn.example.com/audio/x.wav?sig=abc", True),
        ("https://cdn.example.com/audio2/x.wav", False),
        ("https://cdn.example.com@evil.example/audio/x.wav", False),
        ("http://cdn.example.com/audio/x.wav", False),
        ("", False),
    ],
)
def test_input_uri_allowed(uri: str, allowed: bool) -> None:
    prefixes = ["/data/in", "s3://bucket/in/", "https://cdn.example.com/audio"]
    assert input_uri_allowed(uri, prefixes) is allowed


def test_input_uri_allowed_without_prefixes() -> None:
    assert not input_uri_allowed("/data/in/song.wav", [])
    assert not input_uri_allowed("s3://bucket/in/song.wav", ["", "  "])


def test_input_uri_allowed_follows_symlinks(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    (inside / "link").symlink_to(outside)
    assert input_uri_allowed(str(inside / "a.wav"), [str(inside)])
    assert not input_uri_allowed(str(inside / "link" / "secret.wav"), [str(inside)])
    # A bucket-wide prefix allows the whole bucket.
    assert input_uri_allowed("s3://bucket/any/key.wav", ["s3://bucket"])
