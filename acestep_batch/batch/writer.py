"""CPU stage: check, encode and atomically write audio, then commit the batch's metadata."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from .. import __version__
from ..audio.encode import FILE_EXTENSIONS, encode_audio
from ..audio.qc import check_audio, sanitize
from ..model.request import GenerationRequest
from ..storage import Storage
from ..audio.postprocess import LoopFields, LoopOptions, encode_loop, process_loop, retry_seed
from .plan import AUDIO_DIR, METADATA_DIR, QC_DIR, REJECTED_DIR


@dataclass
class OutputOptions:
    uri: str
    storage_options: dict[str, Any]
    bit_depth: str = "24"
    loops: LoopOptions | None = None  # post-process every output as a loop (submit --loops)
    run_id: str = ""  # this submit's id: metadata part names derive from it and the outputs they commit


# Facts the replica reports per output (see replica._render_facts), written as metadata columns.
RENDER_FACT_COLUMNS: tuple[str, ...] = (
    "latent_frames", "source_frames", "lora_resolved", "lora_sha256", "lora_scale",
    "src_audio_sha256", "src_audio_seconds", "ref_audio_sha256", "ref_audio_seconds",
    "replica_lora_loads",  # adapters this replica had loaded from storage so far (cache misses)
)


_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
                "int | None": pa.int64()}
# One Arrow type per known metadata column, so that every part file of a run has the same schema
# (a batch whose outputs all failed would otherwise write null-typed columns, and readers such as
# pyarrow.parquet.read_table(folder) refuse to merge null with double).
METADATA_TYPES: dict[str, pa.DataType] = {
    **{f.name: _ARROW_TYPES[str(f.type)] for f in dataclasses.fields(GenerationRequest)},
    "output_id": pa.string(), "id": pa.string(), "row": pa.int64(), "variation": pa.int64(),
    "audio_uri": pa.string(), "status": pa.string(), "error": pa.string(), "format": pa.string(),
    "sample_rate": pa.int64(), "channels": pa.int64(), "bit_depth": pa.string(), "num_samples": pa.int64(),
    "audio_seconds": pa.float64(), "peak_dbfs": pa.float64(), "rms_dbfs": pa.float64(),
    "clipped_samples": pa.int64(), "checkpoint": pa.string(), "checkpoint_revision": pa.string(),
    "checkpoint_fingerprint": pa.string(), "device": pa.string(), "dtype": pa.string(), "replica": pa.string(),
    "package_version": pa.string(), "generate_s": pa.float64(), "encode_s": pa.float64(), "batch_size": pa.int64(),
    "created_at": pa.string(), "latent_frames": pa.int64(), "source_frames": pa.int64(),
    "lora_resolved": pa.string(), "lora_sha256": pa.string(), "lora_scale": pa.float64(),
    "src_audio_sha256": pa.string(), "src_audio_seconds": pa.float64(), "ref_audio_sha256": pa.string(),
    "ref_audio_seconds": pa.float64(), "replica_lora_loads": pa.int64(),
    # loops (submit --loops): the cut, loudness and QC of the final file, and the attempts behind it
    "loop_samples": pa.int64(), "loop_seconds": pa.float64(), "loop_crossfade_samples": pa.int64(),
    "loudness_mode": pa.string(), "loudness_gain_db": pa.float64(), "lufs_before": pa.float64(),
    "true_peak_before_dbtp": pa.float64(), "loudness_limited_by_ceiling": pa.bool_(),
    "qc_nan": pa.bool_(), "qc_silence_ratio": pa.float64(), "qc_clipped_ratio": pa.float64(),
    "qc_dc_offset": pa.float64(), "qc_lufs": pa.float64(), "qc_true_peak_dbtp": pa.float64(),
    "qc_bpm_estimated": pa.float64(), "qc_bpm_ok": pa.bool_(), "qc_key_estimated": pa.string(),
    "qc_key_ok": pa.bool_(), "qc_seam": pa.float64(), "qc_seam_ok": pa.bool_(), "qc_problems": pa.string(),
    "attempts": pa.int64(), "attempt_seeds": pa.string(),
}


def metadata_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> Arrow table with the fixed types of known columns (user columns are inferred)."""
    table = pa.Table.from_pylist(rows)
    for index, name in enumerate(table.column_names):
        wanted = METADATA_TYPES.get(name)
        if wanted is not None and table.schema.field(index).type != wanted:
            table = table.set_column(index, name, table.column(index).cast(wanted))
    return table


def _record_levels(row: dict[str, Any], wave: np.ndarray, sample_rate: int) -> Any:
    """Geometry and levels of the audio being written, into its metadata row."""
    report = check_audio(wave)
    frames = wave.shape[-1]
    row.update(channels=wave.shape[0], num_samples=frames, audio_seconds=frames / sample_rate,
               peak_dbfs=report.peak_dbfs, rms_dbfs=report.rms_dbfs, clipped_samples=report.clipped_samples)
    return report


def _qc_history(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("output_id", "id", "attempts", "seed", "status", "created_at")
    return {**{key: row.get(key) for key in keys}, **{k: v for k, v in row.items() if k.startswith("qc_")}}


def audio_name(output_id: str, fmt: str) -> str:
    return f"{output_id}.{FILE_EXTENSIONS[fmt]}"


class AudioWriter:
    """Ray Data callable: rendered rows in, one metadata row per written output out."""

    def __init__(self, options: OutputOptions) -> None:
        self.options = options
        self.storage = Storage(options.uri, options.storage_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [self._write_one(batch, index) for index in range(len(batch["spec"]))]
        rows = [row for row in rows if row is not None]
        # Part names are a function of this run and of what they commit, so a writer task that Ray
        # retries (its actor died after the write) overwrites its own part instead of adding a twin.
        name = self._part_name(rows)
        history = [_qc_history(row) for row in rows if row.get("qc_problems")]
        if history:  # every failed QC attempt, also those that will be re-rendered
            self.storage.write_parquet(f"{QC_DIR}/attempts-{name}.parquet", metadata_table(history))
        final = [row for row in rows if row["status"] != "retry"]
        if final:
            # Audio files are committed first; this metadata file then commits the batch.
            self.storage.write_parquet(f"{METADATA_DIR}/part-{name}.parquet", metadata_table(final))
        summary_keys = ("output_id", "status", "error", "audio_seconds", "generate_s")
        return {key: [row[key] for row in rows] for key in summary_keys}

    def _part_name(self, rows: list[dict[str, Any]]) -> str:
        if not self.options.run_id:
            return uuid.uuid4().hex
        import hashlib

        outputs = "|".join(sorted(f"{row['output_id']}@{row.get('attempts') or 1}" for row in rows))
        return f"{self.options.run_id}-{hashlib.sha256(outputs.encode()).hexdigest()[:16]}"

    def _write_one(self, batch: dict[str, np.ndarray], index: int) -> dict[str, Any] | None:
        spec = json.loads(batch["spec"][index])
        if not spec["write"]:
            return None  # already finished in an earlier run; rendered only to keep the batch intact
        engine = json.loads(batch["engine"][index])
        fmt, bit_depth = spec["format"], self.options.bit_depth
        status, error = str(batch["status"][index]), str(batch["error"][index])
        sample_rate = int(batch["sample_rate"][index])
        row: dict[str, Any] = {
            "output_id": spec["output_id"], "id": spec["id"], "row": spec["row"], "variation": spec["variation"],
            "audio_uri": None, "status": status, "error": error or None,
            **spec["request"],
            "format": fmt, "sample_rate": sample_rate, "channels": 0, "bit_depth": bit_depth if fmt in ("wav", "flac") else None,
            "num_samples": 0, "audio_seconds": 0.0, "peak_dbfs": None, "rms_dbfs": None, "clipped_samples": None,
            "checkpoint": engine.get("checkpoint"), "checkpoint_revision": engine.get("revision"),
            "checkpoint_fingerprint": engine.get("fingerprint"), "device": engine.get("device"),
            "dtype": engine.get("dtype"), "replica": engine.get("replica"), "package_version": __version__,
            "generate_s": float(batch["generate_s"][index]), "encode_s": 0.0,
            "batch_size": int(batch["batch_size"][index]),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        facts = json.loads(batch["info"][index]) if "info" in batch else {}
        row.update({column: facts.get(column) for column in RENDER_FACT_COLUMNS})
        if status == "ok" and self.options.loops is not None:
            self._store_loop(row, batch, index, spec, fmt, bit_depth, sample_rate, self.options.loops)
        elif status == "ok":
            self._encode_and_store(row, batch, index, spec, fmt, bit_depth, sample_rate)
        row.update({key: value for key, value in spec["extra"].items() if key not in row})
        return row

    def _store_loop(self, row, batch, index, spec, fmt, bit_depth, sample_rate, loops: LoopOptions) -> None:
        """Cut/normalise/QC one loop; a QC failure asks for a re-render ("retry") while attempts
        remain, and is stored under rejected/ with its reasons on the last one."""
        import time

        started = time.perf_counter()
        attempt, base_seed = int(spec.get("attempt", 1)), int(spec.get("base_seed", spec["request"]["seed"]))
        row.update(attempts=attempt, attempt_seeds=",".join(str(retry_seed(base_seed, k)) for k in range(1, attempt + 1)))
        wave = np.frombuffer(batch["audio"][index], dtype=np.float32).reshape(int(batch["channels"][index]), -1)
        try:
            fields = LoopFields.from_extra(spec["extra"])
            result = process_loop(np.nan_to_num(wave), sample_rate, fields, loops)
        except ValueError as error:  # e.g. a render too short to cut (validated up front, so rare)
            row.update(status="failed", error=f"loop post-processing failed: {error}")
            return
        row.update(result.columns)
        if not np.isfinite(wave).all():
            result.qc.problems.insert(0, "the render has NaN/Inf samples")
            row["qc_problems"] = "; ".join(result.qc.problems)
        folder = AUDIO_DIR
        if result.qc.problems:
            if attempt < loops.max_attempts:
                row.update(status="retry", error="; ".join(result.qc.problems))
                return
            folder = REJECTED_DIR
            row.update(status="rejected",
                       error=f"quality check failed on all {attempt} attempt(s): " + "; ".join(result.qc.problems))
        _record_levels(row, result.audio, sample_rate)
        seed = int(spec["request"]["seed"])
        self._store(row, f"{folder}/{audio_name(spec['output_id'], fmt)}", started,
                    lambda: encode_loop(result.audio, sample_rate, fields, fmt, bit_depth, seed=seed))

    def _encode_and_store(self, row, batch, index, spec, fmt, bit_depth, sample_rate) -> None:
        import time

        started = time.perf_counter()
        channels, frames = int(batch["channels"][index]), int(batch["frames"][index])
        wave = np.frombuffer(batch["audio"][index], dtype=np.float32).reshape(channels, frames)
        report = _record_levels(row, wave, sample_rate)
        if not report.ok:
            row.update(status="failed", error="quality check failed: " + "; ".join(report.problems))
            return
        self._store(row, f"{AUDIO_DIR}/{audio_name(spec['output_id'], fmt)}", started,
                    lambda: encode_audio(sanitize(wave), sample_rate, fmt, bit_depth))

    def _store(self, row: dict[str, Any], name: str, started: float, encode: Any) -> None:
        """Encode and write one file atomically; a failure marks only this output failed."""
        import time

        try:
            self.storage.write_bytes(name, encode())
        except Exception as error:  # one output's encode/write failure must not stop the job
            row.update(status="failed", error=f"encode/write failed: {type(error).__name__}: {error}")
            return
        row.update(audio_uri=self.storage.url(name), encode_s=time.perf_counter() - started)
