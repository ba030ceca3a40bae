"""Audio encoding (in-memory, deterministic), quality checks of generated tracks, and the
audio inputs (source / reference audio) of the edit tasks."""

from acestep_batch.audio.encode import (
    AUDIO_FORMATS,
    BIT_DEPTHS,
    FILE_EXTENSIONS,
    decode_audio,
    encode_audio,
)
from acestep_batch.audio.inputs import (
    AudioClip,
    AudioInputError,
    decode_audio_bytes,
    input_uri_allowed,
    load_audio_input,
)
from acestep_batch.audio.qc import DBFS_FLOOR, QCReport, check_audio, sanitize

__all__ = [
    "AUDIO_FORMATS",
    "AudioClip",
    "AudioInputError",
    "BIT_DEPTHS",
    "DBFS_FLOOR",
    "FILE_EXTENSIONS",
    "QCReport",
    "check_audio",
    "decode_audio",
    "decode_audio_bytes",
    "encode_audio",
    "input_uri_allowed",
    "load_audio_input",
    "sanitize",
]
