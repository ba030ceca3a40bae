"""WAV files with ACID/smpl loop metadata, checked with independent readers (libsndfile via
soundfile, Python's `wave`, and libsndfile's own parse of the acid/smpl chunks)."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest
import soundfile as sf

from acestep_batch.audio.wavchunks import (
    LoopMetadata,
    encode_wav,
    key_to_midi_root,
    parse_acid,
    parse_smpl,
    read_wav_chunks,
)


def music(frames: int, channels: int = 2, seed: int = 0, level: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 44100
    tone = level * np.sin(2 * np.pi * 220 * t)
    return (tone + rng.uniform(-0.2, 0.2, (channels, frames))).astype(np.float32) * 0.7


def read_back(data: bytes) -> tuple[np.ndarray, int]:
    frames, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return frames.T, rate


# --- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "root"),
    [
        ("A minor", 57),
        ("Amin", 57),
        ("Am", 57),
        ("a minor", 57),
        ("A#maj", 58),
        ("Bb major", 58),
        ("F# minor", 54),
        ("C", 48),
        ("C major", 48),
        ("Cm", 48),
        ("B", 59),
        ("Bbm", 58),
        ("Eb", 51),
        ("E dorian", 52),
        ("G-flat major", 54),
        ("F sharp minor", 54),
        ("Cb", 59),
        ("B#", 48),
        ("D♭ major", 49),
        ("A_minor", 57),
    ],
)
def test_key_to_midi_root(key: str, root: int) -> None:
    assert key_to_midi_root(key) == root


@pytest.mark.parametrize("key", [None, "", "   "])
def test_no_key_has_no_root(key: str | None) -> None:
    assert key_to_midi_root(key) is None


@pytest.mark.parametrize("key", ["H minor", "A minr", "A##", "minor", "4/4", "C major major", "X"])
def test_garbage_keys_raise(key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        key_to_midi_root(key)


# --- encode_wav --------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_24_bit_round_trip_within_one_lsb(channels: int) -> None:
    audio = music(44100, channels)
    data = encode_wav(audio, 44100, 24)
    decoded, rate = read_back(data)
    info = sf.info(io.BytesIO(data))
    assert rate == 44100 and info.subtype == "PCM_24" and info.channels == channels
    assert decoded.shape == audio.shape
    assert np.abs(decoded - audio).max() <= 0.5 / 2**23 + 1e-12


def test_16_bit_round_trip_plain_and_dithered() -> None:
    audio = music(44100)
    plain, _ = read_back(encode_wav(audio, 44100, 16))
    assert np.abs(plain - audio).max() <= 0.5 / 2**15 + 1e-12
    dithered_bytes = encode_wav(audio, 44100, 16, dither_seed=3)
    dithered, rate = read_back(dithered_bytes)
    assert rate == 44100 and sf.info(io.BytesIO(dithered_bytes)).subtype == "PCM_16"
    error = dithered - audio
    assert np.abs(error).max() <= 2 / 2**15
    assert abs(error.mean()) < 0.02 / 2**15
    assert not np.array_equal(dithered, plain)  # the dither did something
    assert dithered_bytes == encode_wav(audio, 44100, 16, dither_seed=3)  # deterministic
    assert dithered_bytes != encode_wav(audio, 44100, 16, dither_seed=4)


def test_24_bit_ignores_the_dither_seed() -> None:
    audio = music(1000)
    assert encode_wav(audio, 48000, 24, dither_seed=1) == encode_wav(audio, 48000, 24)


def test_full_scale_saturates_instead_of_wrapping() -> None:
    audio = np.array([[1.0, -1.0, 1.5, -1.5, 0.0]], np.float32)
    for bits in (16, 24):
        decoded, _ = read_back(encode_wav(audio, 44100, bits))
        top = 1 - 2.0 ** -(bits - 1)
        np.testing.assert_allclose(decoded[0], [top, -1.0, top, -1.0, 0.0])
    decoded, _ = read_back(encode_wav(audio, 44100, 16, dither_seed=0))
    assert decoded.max() <= 1 - 2.0**-15 and decoded.min() >= -1.0


def test_stdlib_wave_reads_the_16_bit_file() -> None:
    audio = music(5000)
    loop = LoopMetadata(bpm=120.0, beats=16, root_note=57)
    data = encode_wav(audio, 44100, 16, loop=loop, dither_seed=11)
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 2
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 44100
        assert reader.getnframes() == 5000
        ints = np.frombuffer(reader.readframes(5000), dtype="<i2").reshape(-1, 2).T
    decoded, _ = read_back(data)
    np.testing.assert_array_equal(ints / 32768.0, decoded)


def test_stdlib_wave_reads_the_24_bit_file() -> None:
    audio = music(3001, channels=1)
    data = encode_wav(audio, 48000, 24)
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            1,
            3,
            48000,
        )
        raw = reader.readframes(3001)
    padded = np.frombuffer(b"".join(b"\x00" + raw[i : i + 3] for i in range(0, len(raw), 3)), "<i4")
    np.testing.assert_allclose(padded / 2.0**31, read_back(data)[0][0])


# --- chunks ------------------------------------------------------------------------------


def test_loop_chunks_round_trip() -> None:
    audio = music(88200)
    loop = LoopMetadata(
        bpm=93.7, beats=16, meter=(4, 4), root_note=57, loop_start=0, loop_end=88199
    )
    data = encode_wav(audio, 44100, 24, loop=loop)
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    chunks = read_wav_chunks(data)
    assert list(chunks) == ["fmt ", "data", "acid", "smpl"]
    assert len(chunks["data"]) == 88200 * 2 * 3

    acid = parse_acid(chunks["acid"])
    assert len(chunks["acid"]) == 24
    assert acid["tempo"] == np.float32(93.7)  # exact as float32
    assert acid["beats"] == 16 and acid["meter"] == (4, 4) and acid["root_note"] == 57
    assert acid["flags"] == {
        "one_shot": False,
        "root_note_set": True,
        "stretch": True,
        "disk_based": False,
    }
    assert acid["unknown1"] == 0x8000 and acid["unknown2"] == 0.0

    smpl = parse_smpl(chunks["smpl"])
    assert len(chunks["smpl"]) == 36 + 24
    assert smpl["sample_period_ns"] == 22676  # 1e9 / 44100 = 22675.7
    assert smpl["midi_unity_note"] == 57
    assert smpl["loops"] == [
        {"cue_id": 0, "type": 0, "start": 0, "end": 88199, "fraction": 0, "play_count": 0}
    ]
    assert smpl["sampler_data_size"] == 0


def test_meter_and_defaults() -> None:
    audio = music(1000)
    data = encode_wav(audio, 48000, 16, loop=LoopMetadata(bpm=140.0, beats=12, meter=(6, 8)))
    chunks = read_wav_chunks(data)
    acid, smpl = parse_acid(chunks["acid"]), parse_smpl(chunks["smpl"])
    assert acid["meter"] == (6, 8) and acid["beats"] == 12 and acid["tempo"] == 140.0
    assert acid["flags"]["root_note_set"] is False
    assert smpl["midi_unity_note"] == 60
    assert smpl["sample_period_ns"] == 20833
    assert smpl["loops"][0]["start"] == 0 and smpl["loops"][0]["end"] == 999  # None = last frame


def test_one_shot_has_no_loop() -> None:
    data = encode_wav(music(500), 44100, 24, loop=LoopMetadata(bpm=120.0, beats=1, one_shot=True))
    chunks = read_wav_chunks(data)
    assert parse_acid(chunks["acid"])["flags"]["one_shot"] is True
    assert parse_smpl(chunks["smpl"])["loops"] == []


def test_no_loop_metadata_writes_a_plain_wav() -> None:
    data = encode_wav(music(100), 44100, 16)
    assert list(read_wav_chunks(data)) == ["fmt ", "data"]
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8


def test_odd_sized_data_chunk_is_padded_and_the_file_stays_valid() -> None:
    """24-bit mono with an odd frame count: 3 * odd bytes of data, then a pad byte."""
    audio = music(1001, channels=1)
    loop = LoopMetadata(bpm=120.0, beats=4, root_note=50)
    data = encode_wav(audio, 44100, 24, loop=loop)
    assert len(data) % 2 == 0
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    data_size = struct.unpack_from("<I", data, 40)[0]  # 12 (RIFF) + 24 (fmt) + "data"
    assert data_size == 3003
    assert data[44 + 3003] == 0  # the pad byte, not counted in the size
    chunks = read_wav_chunks(data)
    assert len(chunks["data"]) == 3003
    assert parse_acid(chunks["acid"])["root_note"] == 50
    decoded, _ = read_back(data)
    assert decoded.shape == (1, 1001)
    assert np.abs(decoded - audio).max() <= 0.5 / 2**23 + 1e-12


def test_reader_walks_foreign_odd_chunks() -> None:
    """A file from elsewhere with an odd-sized chunk (and its pad byte) before the data."""
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"junk"
        + struct.pack("<I", 3)
        + b"abc\x00"
        + b"data"
        + struct.pack("<I", 4)
        + b"\x01\x00\x02\x00"
    )
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    chunks = read_wav_chunks(data)
    assert chunks["junk"] == b"abc" and chunks["data"] == b"\x01\x00\x02\x00"
    decoded, rate = read_back(data)
    assert rate == 8000 and decoded.shape == (1, 2)


def test_reader_rejects_broken_files() -> None:
    with pytest.raises(ValueError, match="RIFF"):
        read_wav_chunks(b"RIFX\x00\x00\x00\x00WAVE")
    good = encode_wav(music(100), 44100, 16, loop=LoopMetadata(bpm=120.0, beats=4))
    truncated = good[:-10]
    with pytest.raises(ValueError, match="smpl"):
        read_wav_chunks(truncated)
    with pytest.raises(ValueError, match="acid"):
        parse_acid(b"\x00" * 10)
    with pytest.raises(ValueError, match="loops"):
        parse_smpl(struct.pack("<9I", 0, 0, 0, 60, 0, 0, 0, 2, 0))


def test_libsndfile_reads_tempo_and_loop_points() -> None:
    """libsndfile parses `acid` (SFC_GET_LOOP_INFO) and `smpl` (SFC_GET_INSTRUMENT) itself:
    an independent check of the byte layouts. Uses soundfile's cffi handle (not public API)."""
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    if snd is None or ffi is None or not hasattr(snd, "sf_command"):
        pytest.skip("soundfile does not expose libsndfile's sf_command")
    loop = LoopMetadata(
        bpm=126.5, beats=24, meter=(6, 8), root_note=62, loop_start=10, loop_end=4999
    )
    data = encode_wav(music(5000), 44100, 24, loop=loop)
    with sf.SoundFile(io.BytesIO(data)) as handle:
        info = ffi.new("char[]", 44)  # SF_LOOP_INFO: h h i i f i 6i
        assert snd.sf_command(handle._file, 0x10E0, info, 44) == 1
        num, den, _mode, beats, bpm, root = struct.unpack_from("<hhiifi", ffi.buffer(info))
        instrument = ffi.new("char[]", 272)  # SF_INSTRUMENT: i 6b (pad) i, 16 x (i I I I)
        assert snd.sf_command(handle._file, 0x10D0, instrument, 272) == 1
        raw = bytes(ffi.buffer(instrument))
    assert (num, den, beats, root) == (6, 8, 24, 62)
    assert bpm == pytest.approx(126.5)
    assert raw[4] == 62  # basenote (smpl unity note)
    loop_count = struct.unpack_from("<i", raw, 12)[0]
    _mode, start, end_exclusive, count = struct.unpack_from("<iIII", raw, 16)
    assert loop_count == 1
    assert (start, end_exclusive, count) == (10, 5000, 0)  # libsndfile stores end + 1


def test_encode_rejects_bad_input() -> None:
    audio = music(100)
    with pytest.raises(ValueError, match="bit_depth"):
        encode_wav(audio, 44100, 32)
    with pytest.raises(ValueError, match="channels"):
        encode_wav(audio.T, 44100, 16)
    with pytest.raises(ValueError, match="NaN"):
        encode_wav(np.full((2, 10), np.nan, np.float32), 44100, 16)
    with pytest.raises(ValueError, match="no frames"):
        encode_wav(np.zeros((2, 0), np.float32), 44100, 16)
    with pytest.raises(ValueError, match="does not fit"):
        encode_wav(audio, 44100, 16, loop=LoopMetadata(bpm=120.0, beats=4, loop_end=100))
    with pytest.raises(ValueError, match="sample_rate"):
        encode_wav(audio, 0, 16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bpm": 0.0, "beats": 4},
        {"bpm": 120.0, "beats": -1},
        {"bpm": 120.0, "beats": 4, "meter": (4, 0)},
        {"bpm": 120.0, "beats": 4, "root_note": 128},
        {"bpm": 120.0, "beats": 4, "loop_start": -1},
        {"bpm": 120.0, "beats": 4, "loop_start": 10, "loop_end": 5},
    ],
)
def test_loop_metadata_validates(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LoopMetadata(**kwargs)
