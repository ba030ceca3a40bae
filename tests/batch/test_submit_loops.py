"""Issue 7 acceptance through `submit --loops` on real local Ray with the tiny checkpoint.

2: the small Text2Samples spec renders to files that are exactly the bar length, carry parseable
   ACID/smpl chunks (tempo, beats, key, loop points), sit at the loudness target (or at the
   true-peak ceiling when that limits the gain), and have their QC figures in the metadata.
4: a row that keeps failing QC is re-rendered with new seeds up to --max-attempts, every attempt
   is recorded, and the last render is kept aside under rejected/ with its reasons.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from acestep_batch.audio.loops import loop_length_samples
from acestep_batch.audio.loudness import integrated_lufs, true_peak_dbtp
from acestep_batch.audio.postprocess import LoopOptions, retry_seed
from acestep_batch.audio.wavchunks import key_to_midi_root, parse_acid, parse_smpl, read_wav_chunks
from acestep_batch.manifest.text2samples import expand_spec, load_spec

from conftest import run, write_manifest
from shared_paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("local_ray")
SMALL_SPEC = REPO_ROOT / "jobs" / "text2samples" / "small.yaml"


def _metadata(output: Path) -> dict[str, dict]:
    return {row["output_id"]: row for row in pq.read_table(str(output / "metadata")).to_pylist()}


def test_small_spec_renders_studio_ready_loops(tiny_checkpoint: Path, tmp_path: Path) -> None:
    table = expand_spec(load_spec(str(SMALL_SPEC)))
    table = table.set_column(table.column_names.index("steps"), "steps", pa.array([3] * table.num_rows, pa.int64())) \
        if "steps" in table.column_names else table.append_column("steps", pa.array([3] * table.num_rows, pa.int64()))
    manifest = tmp_path / "loops.parquet"
    pq.write_table(table, manifest)
    options = LoopOptions(check_bpm=False, check_key=False, max_attempts=1)  # random weights make no music
    summary, lines = run(str(manifest), str(tmp_path / "out"), tiny_checkpoint, replicas=1, batch_size=4,
                         loops=options, bit_depth="24")
    assert (summary.generated, summary.failed) == (table.num_rows, 0), lines
    metadata = _metadata(tmp_path / "out")
    assert len(metadata) == table.num_rows
    for output_id, row in metadata.items():
        data = (tmp_path / "out" / "audio" / f"{output_id}.wav").read_bytes()
        audio, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
        beats_per_bar = int(str(row["time_signature"]).split("/")[0])
        expected = loop_length_samples(row["bpm"], row["bars"], beats_per_bar, 44100)
        assert rate == 44100 and audio.shape == (expected, 2), output_id
        assert row["loop_samples"] == row["num_samples"] == expected
        chunks = read_wav_chunks(data)
        acid, smpl = parse_acid(chunks["acid"]), parse_smpl(chunks["smpl"])
        assert acid["tempo"] == pytest.approx(row["bpm"], rel=1e-6)
        assert acid["beats"] == row["bars"] * beats_per_bar and acid["meter"][0] == beats_per_bar
        assert acid["root_note"] == (key_to_midi_root(row["key"]) if row["key"] else acid["root_note"])
        assert [(loop["start"], loop["end"]) for loop in smpl["loops"]] == [(0, expected - 1)]
        lufs, peak = integrated_lufs(audio.T, rate), true_peak_dbtp(audio.T, rate)
        assert peak <= -1.0 + 0.1, output_id
        if row["loudness_limited_by_ceiling"]:
            assert lufs < -14.0 + 0.5 and peak == pytest.approx(-1.0, abs=0.15)
        else:
            assert lufs == pytest.approx(-14.0, abs=0.5), output_id
        for column in ("qc_lufs", "qc_true_peak_dbtp", "qc_silence_ratio", "qc_clipped_ratio", "qc_dc_offset", "qc_seam"):
            assert row[column] is not None, (output_id, column)
        assert row["qc_problems"] is None and row["attempts"] == 1


def test_qc_failures_are_rerendered_then_set_aside(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Without loudness normalisation the true-peak ceiling is a QC rule; at -60 dBTP every render
    of the tiny model breaks it, so every attempt is spent, deterministically."""
    rows = [{"id": "noise-loop", "prompt": "drum loop", "duration": 3.0, "steps": 2, "seed": 5, "bpm": 120,
             "bars": 1, "key": ""}]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    options = LoopOptions(loudness="none", ceiling_dbtp=-60.0, check_bpm=False, check_key=False, max_attempts=3)
    summary, lines = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, loops=options)
    assert (summary.generated, summary.failed, summary.rejected, summary.retried) == (0, 1, 1, 2), lines
    row = _metadata(tmp_path / "out")["noise-loop"]
    seeds = [retry_seed(5, attempt) for attempt in (1, 2, 3)]
    assert row["status"] == "rejected" and row["attempts"] == 3
    assert row["attempt_seeds"] == ",".join(map(str, seeds)) and row["seed"] == seeds[-1] and len(set(seeds)) == 3
    assert "true peak" in row["error"] and row["audio_uri"].endswith("rejected/noise-loop.wav")
    assert (tmp_path / "out" / "rejected" / "noise-loop.wav").is_file()
    assert not (tmp_path / "out" / "audio" / "noise-loop.wav").exists()
    history = pq.read_table(str(tmp_path / "out" / "qc")).to_pylist()
    assert sorted((h["attempts"], h["seed"]) for h in history) == list(zip((1, 2, 3), seeds))
    assert all(h["qc_problems"] for h in history)
    assert any("re-rendering with new seeds" in line for line in lines)
    # a rerun keeps the rejected output aside instead of spending the attempts again
    summary, _ = run(manifest, str(tmp_path / "out"), tiny_checkpoint, replicas=1, loops=options)
    assert summary.skipped == 1


def test_loops_need_bpm_and_bars_and_a_long_enough_render(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from acestep_batch.manifest import ManifestError

    rows = [{"id": "no-bpm", "prompt": "pad", "duration": 5.0, "bars": 2},
            {"id": "short", "prompt": "pad", "duration": 2.0, "bpm": 90, "bars": 4},
            {"id": "bad-key", "prompt": "pad", "duration": 12.0, "bpm": 90, "bars": 4, "key": "H major"}]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    with pytest.raises(ManifestError) as caught:
        run(manifest, str(tmp_path / "out"), tiny_checkpoint, loops=LoopOptions())
    text = str(caught.value)
    assert "row 1" in text and "'bpm'" in text
    assert "row 2" in text and "'duration'" in text and "10.7" in text
    assert "row 3" in text and "'key'" in text
    assert not (tmp_path / "out" / "metadata").exists()
