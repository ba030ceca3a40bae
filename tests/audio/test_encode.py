"""Round trips through real encoders/decoders (libsndfile), checked on the decoded samples."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from acestep_batch.audio.encode import (
    AUDIO_FORMATS,
    BIT_DEPTHS,
    FILE_EXTENSIONS,
    decode_audio,
    encode_audio,
)

LOSSLESS = ("wav", "flac")
LOSSY = ("ogg", "mp3")
COMBOS = [(f, d) for f in AUDIO_FORMATS for d in BIT_DEPTHS if (f, d) != ("flac", "float")]
MP3_FRAME = 1152
REPO_ROOT = Path(__file__).resolve().parents[2]


def stereo_tones(sample_rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """440 Hz left, 660 Hz right: a swapped or transposed layout shows in the spectrum."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    left = amp * np.sin(2 * np.pi * 440.0 * t)
    right = amp * np.sin(2 * np.pi * 660.0 * t)
    return np.stack([left, right]).astype(np.float32)


def peak_hz(channel: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(len(channel))))
    return float(np.fft.rfftfreq(len(channel), 1.0 / sample_rate)[np.argmax(spectrum)])


def test_constants() -> None:
    assert AUDIO_FORMATS == ("wav", "flac", "ogg", "mp3")
    assert BIT_DEPTHS == ("16", "24", "float")
    assert FILE_EXTENSIONS == {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"}


@pytest.mark.parametrize("sample_rate", [44100, 48000])
@pytest.mark.parametrize(("fmt", "bit_depth"), COMBOS)
def test_round_trip(fmt: str, bit_depth: str, sample_rate: int) -> None:
    wave = stereo_tones(sample_rate)
    data = encode_audio(wave, sample_rate, fmt, bit_depth)
    out, sr = decode_audio(data)

    assert sr == sample_rate
    assert out.dtype == np.float32
    assert out.shape[0] == 2
    if fmt in LOSSLESS:
        assert out.shape == wave.shape
    else:
        assert abs(out.shape[1] - wave.shape[1]) <= MP3_FRAME
    assert peak_hz(out[0], sr) == pytest.approx(440.0, abs=2.0)
    assert peak_hz(out[1], sr) == pytest.approx(660.0, abs=2.0)
    if fmt in LOSSY:
        n = min(out.shape[1], wave.shape[1])
        # Lossy, but the waveform must still line up (no big delay, no polarity flip).
        assert np.abs(out[:, :n] - wave[:, :n]).max() < 0.1


def test_magic_bytes() -> None:
    wave = stereo_tones(48000, 0.2)
    assert encode_audio(wave, 48000, "wav")[:4] == b"RIFF"
    assert encode_audio(wave, 48000, "flac")[:4] == b"fLaC"
    assert encode_audio(wave, 48000, "ogg")[:4] == b"OggS"
    mp3 = encode_audio(wave, 48000, "mp3")
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)


@pytest.mark.parametrize("fmt", LOSSLESS)
@pytest.mark.parametrize(("bit_depth", "bits"), [("16", 16), ("24", 24)])
def test_pcm_error_bound(fmt: str, bit_depth: str, bits: int) -> None:
    rng = np.random.default_rng(1)
    wave = rng.uniform(-1.0, 1.0, size=(2, 20000)).astype(np.float32)
    out, _ = decode_audio(encode_audio(wave, 48000, fmt, bit_depth))
    lsb = 2.0 ** -(bits - 1)
    err = np.abs(out.astype(np.float64) - wave.astype(np.float64)).max()
    assert err <= lsb * 1.0001
    assert err > 0  # really quantised, not stored as float
    if bits == 24:
        assert err < 2.0**-15  # much finer than 16-bit


def test_float_wav_is_exact_and_keeps_over_range() -> None:
    wave = stereo_tones(48000, 0.1)
    wave[0, :3] = [1.5, -2.0, 1e-9]
    out, _ = decode_audio(encode_audio(wave, 48000, "wav", "float"))
    np.testing.assert_array_equal(out, wave)


@pytest.mark.parametrize(
    ("fmt", "bit_depth"), [("wav", "16"), ("wav", "24"), ("flac", "16"), ("flac", "24")]
)
def test_integer_formats_saturate(fmt: str, bit_depth: str) -> None:
    wave = np.zeros((1, 1000), dtype=np.float32)
    wave[0, :4] = [1.5, -1.5, 8.0, -8.0]
    out, _ = decode_audio(encode_audio(wave, 48000, fmt, bit_depth))
    np.testing.assert_allclose(out[0, :4], [1.0, -1.0, 1.0, -1.0], atol=1e-4)
    assert np.all(out[0, 4:] == 0.0)


@pytest.mark.parametrize("fmt", LOSSY)
def test_lossy_input_is_clipped(fmt: str) -> None:
    # A full-scale square at 4x amplitude: clipped first, the decoded peak stays near 1.
    t = np.arange(48000) / 48000
    wave = (4.0 * np.sign(np.sin(2 * np.pi * 100 * t))).astype(np.float32)[None, :]
    out, _ = decode_audio(encode_audio(wave, 48000, fmt))
    assert np.abs(out).max() < 1.5


def test_flac_float_is_rejected() -> None:
    with pytest.raises(ValueError, match="FLAC"):
        encode_audio(stereo_tones(48000, 0.1), 48000, "flac", "float")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "aiff"}, "format"),
        ({"bit_depth": "32"}, "bit depth"),
        ({"fmt": "mp3", "bit_depth": "8"}, "bit depth"),  # validated even where ignored
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_audio(stereo_tones(48000, 0.1), 48000, **kwargs)


def test_bad_waves() -> None:
    good = stereo_tones(48000, 0.1)
    with pytest.raises(ValueError, match="channel"):
        encode_audio(np.ascontiguousarray(good.T), 48000)  # (samples, channels)
    with pytest.raises(ValueError, match="NaN"):
        bad = good.copy()
        bad[0, 5] = np.nan
        encode_audio(bad, 48000)
    with pytest.raises(ValueError, match="no samples"):
        encode_audio(np.zeros((2, 0), np.float32), 48000)
    with pytest.raises(ValueError, match="sample_rate"):
        encode_audio(good, 0)


def test_mono_1d_input() -> None:
    mono = stereo_tones(48000, 0.5)[0]
    out, sr = decode_audio(encode_audio(mono, 48000, "flac", "24"))
    assert out.shape == (1, mono.shape[0])
    np.testing.assert_allclose(out[0], mono, atol=2.0**-22)


@pytest.mark.parametrize(("fmt", "bit_depth"), COMBOS)
def test_deterministic(fmt: str, bit_depth: str) -> None:
    wave = stereo_tones(44100, 0.5)
    first = encode_audio(wave, 44100, fmt, bit_depth)
    second = encode_audio(wave.copy(), 44100, fmt, bit_depth)
    assert first == second


def _reference_ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def test_ogg_pages_are_valid_after_serial_rewrite() -> None:
    data = encode_audio(stereo_tones(48000, 0.5), 48000, "ogg")
    pos, serials, pages = 0, set(), 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        n_seg = data[pos + 26]
        end = pos + 27 + n_seg + sum(data[pos + 27 : pos + 27 + n_seg])
        page = bytearray(data[pos:end])
        (stored,) = struct.unpack_from("<I", page, 22)
        page[22:26] = b"\0\0\0\0"
        assert stored == _reference_ogg_crc(bytes(page))
        serials.add(struct.unpack_from("<I", page, 14)[0])
        pos, pages = end, pages + 1
    assert pos == len(data)
    assert pages >= 3 and len(serials) == 1
    # Different audio -> different serial (chained streams would stay distinguishable).
    other = encode_audio(stereo_tones(48000, 0.5, amp=0.25), 48000, "ogg")
    assert struct.unpack_from("<I", other, 14)[0] not in serials


def test_long_ogg_does_not_overflow_a_small_thread_stack() -> None:
    """libvorbis alloca()s per write call; one big write of a long track segfaults.

    Run in a subprocess on a 512 KiB thread stack so a regression fails this test (rc -11)
    instead of killing pytest. 6 s at 48 kHz in one call needs > 1 MiB of stack.
    """
    script = textwrap.dedent(
        """
        import threading
        import numpy as np
        from acestep_batch.audio.encode import decode_audio, encode_audio

        wave = np.tile(0.3 * np.sin(np.arange(48000 * 6) * 0.05), (2, 1)).astype(np.float32)
        result = {}
        def work():
            result["shape"] = decode_audio(encode_audio(wave, 48000, "ogg"))[0].shape
        threading.stack_size(512 * 1024)
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        print(result["shape"])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(2, 288000)"
