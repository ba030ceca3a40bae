"""Audio encoding (in-memory, deterministic) and quality checks of generated tracks."""

from acestep_batch.audio.encode import (
    AUDIO_FORMATS,
    BIT_DEPTHS,
    FILE_EXTENSIONS,
    decode_audio,
    encode_audio,
)
from acestep_batch.audio.qc import DBFS_FLOOR, QCReport, check_audio, sanitize

__all__ = [
    "AUDIO_FORMATS",
    "BIT_DEPTHS",
    "DBFS_FLOOR",
    "FILE_EXTENSIONS",
    "QCReport",
    "check_audio",
    "decode_audio",
    "encode_audio",
    "sanitize",
]
