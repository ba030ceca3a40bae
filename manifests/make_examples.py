"""Regenerate the example manifests in this folder: demo.parquet, loops.parquet, catalogue.jsonl,
edit_tasks.jsonl.

    .venv/bin/python manifests/make_examples.py [--out DIR]

Deterministic: the same code writes the same rows, so the committed files can be checked
against it (tests/manifest/test_expand.py does). Edit the rows here, never the files.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from acestep_batch.audio.loops import render_seconds

HERE = Path(__file__).resolve().parent

# --- demo.parquet: tiny, so `make demo` renders it in well under a minute on a CPU ----------

_DEMO_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("lyrics", pa.string()),
        ("duration", pa.float64()),
        ("steps", pa.int64()),
        ("seed", pa.int64()),
        ("variations", pa.int64()),
        ("format", pa.string()),
        ("bpm", pa.int64()),
        ("key", pa.string()),
        ("genre", pa.string()),
    ]
)

_DEMO_ROWS: list[dict[str, Any]] = [
    {
        "id": "demo-lofi-piano",
        "prompt": "lo-fi hip hop, mellow piano, vinyl crackle, relaxed",
        "duration": 3.0,
        "steps": 5,
        "seed": 42,
        "variations": 2,
        "bpm": 80,
        "key": "C major",
        "genre": "lo-fi",
    },
    {
        "id": "demo-synthwave",
        "prompt": "synthwave, driving bass, retro drum machine, bright arpeggio",
        "duration": 2.0,
        "steps": 4,
        "seed": 7,
        "format": "flac",
        "bpm": 118,
        "key": "A minor",
        "genre": "synthwave",
    },
    {
        "id": "demo-folk-song",
        "prompt": "acoustic folk, warm male vocal, fingerpicked guitar",
        "lyrics": "[verse]\nMorning light along the river\nI walk the long way home\n"
        "[chorus]\nSing it slow, sing it low",
        "duration": 4.0,
        "steps": 6,
        "seed": 1234,
        "bpm": 96,
        "key": "G major",
        "genre": "folk",
    },
    {
        "id": "demo-guzheng",
        "prompt": "中国风, 古筝, 竹笛, 宁静, 山水",
        "duration": 3.0,
        "steps": 4,
        "seed": 2024,
        "bpm": 72,
        "key": "D major",
        "genre": "chinese traditional",
    },
    {
        "id": "demo-mandopop",
        "prompt": "mandopop, soft female vocal, piano ballad",
        "lyrics": "[verse]\n月光洒在窗前\n我把心事写成诗\n[chorus]\n轻轻唱给你听",
        "duration": 4.0,
        "steps": 6,
        "seed": 520,
        "bpm": 70,
        "key": "E-flat major",
        "genre": "mandopop",
    },
    {
        # No id and no seed: both are derived from the row's settings (see README).
        "prompt": "ambient pad, warm, slow attack, evolving texture",
        "duration": 2.0,
        "steps": 4,
        "key": "D minor",
        "genre": "ambient",
    },
]

# --- loops.parquet: a Text2Samples-style sample pack ----------------------------------------

_LOOP_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("duration", pa.float64()),
        ("variations", pa.int64()),
        ("category", pa.string()),
        ("genre", pa.string()),
        ("bpm", pa.int64()),
        ("key", pa.string()),
        ("bars", pa.int64()),
    ]
)

# (category, genre, bpm, key or None for unpitched, bars, description)
_LOOP_SPECS: list[tuple[str, str, int, str | None, int, str]] = [
    ("drums", "house", 124, None, 4, "four on the floor kick, open hi-hats, clap on two and four"),
    ("drums", "hip hop", 90, None, 2, "boom bap, dusty snare, swung hi-hats"),
    ("drums", "drum and bass", 174, None, 8, "breakbeat, fast rolling snares, crisp ride"),
    ("drums", "trap", 140, None, 4, "808 kick, rapid hi-hat rolls, snappy snare"),
    ("bass", "house", 124, "A minor", 4, "deep sub bass, plucky offbeat pattern"),
    ("bass", "hip hop", 90, "F minor", 2, "warm electric bass, laid back groove"),
    ("bass", "drum and bass", 174, "E minor", 8, "reese bass, detuned saws, growling movement"),
    ("bass", "synthwave", 110, "D minor", 4, "analog synth bass, driving eighth notes"),
    ("pad", "ambient", 80, "C major", 4, "lush evolving pad, slow attack, airy shimmer"),
    ("pad", "house", 124, "A minor", 4, "warm chord stabs, filtered pad, soft reverb"),
    ("pad", "lo-fi", 75, "E-flat major", 2, "dreamy electric piano pad, tape wobble"),
    ("pad", "cinematic", 100, "D minor", 8, "dark string pad, swelling, tense"),
]


def _loop_rows() -> list[dict[str, Any]]:
    rows = []
    for number, (category, genre, bpm, key, bars, description) in enumerate(_LOOP_SPECS, start=1):
        tonal = f", {key}" if key else ""
        rows.append(
            {
                "id": f"{category}-{genre.replace(' ', '')}-{bpm}-{number:02d}",
                "prompt": f"{genre} {category} loop, {description}, {bpm} bpm{tonal}, loopable",
                # Four beats to the bar; rendered a little longer than the loop so that
                # `submit --loops` can cut exactly `bars` bars plus its crossfade from it.
                "duration": math.ceil(render_seconds(bpm, bars, 4) * 100) / 100,
                "variations": 4,
                "category": category,
                "genre": genre,
                "bpm": bpm,
                "key": key,
                "bars": bars,
            }
        )
    return rows


# --- catalogue.jsonl: full-length songs with lyrics (an example; slow to render) -------------

_CATALOGUE_ROWS: list[dict[str, Any]] = [
    {
        "id": "song-harbour-lights",
        "prompt": "indie pop, female vocal, jangly guitars, upbeat, summer",
        "lyrics": "[verse]\nHarbour lights are blinking slow\nBoats come in from the undertow\n"
        "We were young and we were loud\nSinging back against the crowd\n\n"
        "[chorus]\nHold on, hold on to the harbour lights\nEvery wave brings us home tonight\n\n"
        "[verse]\nSalt is drying on your hands\nWe wrote our names across the sand\n\n"
        "[chorus]\nHold on, hold on to the harbour lights\nEvery wave brings us home tonight\n\n"
        "[outro]\nHome tonight",
        "duration": 150.0,
        "steps": 60,
        "seed": 1001,
        "title": "Harbour Lights",
        "genre": "indie pop",
        "language": "en",
        "license": "CC-BY-4.0",
    },
    {
        "id": "song-iron-road",
        "prompt": "blues rock, gritty male vocal, overdriven guitar, shuffle groove",
        "lyrics": "[verse]\nIron road runs east of town\nTrain keeps calling, won't slow down\n\n"
        "[chorus]\nTake me where the rivers bend\nIron road, my only friend\n\n"
        "[bridge]\nSteel on steel and smoke on air\nI left my worries sitting there\n\n"
        "[chorus]\nTake me where the rivers bend\nIron road, my only friend",
        "duration": 180.0,
        "steps": 60,
        "seed": 1002,
        "title": "Iron Road",
        "genre": "blues rock",
        "language": "en",
        "license": "CC-BY-4.0",
    },
    {
        "id": "song-chun-feng",
        "prompt": "c-pop ballad, gentle male vocal, piano, strings, emotional",
        "lyrics": "[verse]\n春风吹过旧街角\n你的笑容还记得\n\n[chorus]\n"
        "如果时间能停留\n我愿陪你到白头\n\n[verse]\n落叶飘在小河边\n"
        "写下思念一整年\n\n[chorus]\n如果时间能停留\n我愿陪你到白头",
        "duration": 160.0,
        "steps": 60,
        "seed": 1003,
        "title": "春风",
        "genre": "c-pop",
        "language": "zh",
        "license": "CC-BY-4.0",
    },
    {
        "id": "song-night-drive",
        "prompt": "synthwave, instrumental, pulsing arpeggios, gated drums, night drive",
        "duration": 120.0,
        "steps": 60,
        "seed": 1004,
        "format": "flac",
        "title": "Night Drive",
        "genre": "synthwave",
        "language": None,
        "license": "CC0-1.0",
    },
]


# --- edit_tasks.jsonl: every edit task and a LoRA, on the outputs of `make demo` -----------------
# Paths are relative to the repository root (where `make demo-edit` runs): the sources are demo
# renders, the adapter is the random one `make demo-edit` writes with `model make-tiny-lora`.
_LOFI = "demo-output/audio/demo-lofi-piano-0.wav"
_SYNTH = "demo-output/audio/demo-synthwave.flac"
_EDIT_ROWS: list[dict[str, Any]] = [
    {"id": "edit-retake", "task": "retake", "prompt": "lo-fi hip hop, mellow piano, vinyl crackle, relaxed",
     "duration": 3.0, "steps": 5, "seed": 42, "retake_seeds": 1, "retake_variance": 0.3},
    {"id": "edit-repaint", "task": "repaint", "src_audio": _LOFI, "repaint_start": 1.0, "repaint_end": 2.0,
     "prompt": "lo-fi hip hop, mellow piano, vinyl crackle, relaxed", "steps": 5, "seed": 42},
    {"id": "edit-extend", "task": "extend", "src_audio": _SYNTH, "repaint_start": -1.0, "repaint_end": 4.0,
     "prompt": "synthwave, driving bass, retro drum machine, bright arpeggio", "steps": 4, "seed": 7},
    {"id": "edit-flowedit", "task": "edit", "src_audio": _LOFI, "edit_target_prompt": "jazz piano trio, brushed drums",
     "edit_n_min": 0.2, "edit_n_max": 0.8, "prompt": "lo-fi hip hop, mellow piano, vinyl crackle, relaxed",
     "steps": 5, "seed": 42},
    {"id": "edit-audio2audio", "task": "audio2audio", "ref_audio": _SYNTH, "ref_audio_strength": 0.5,
     "prompt": "chiptune, square lead, 8-bit drums", "steps": 4, "seed": 3},
    {"id": "edit-lora", "prompt": "lo-fi hip hop, mellow piano", "duration": 2.0, "steps": 4, "seed": 5,
     "lora": ".cache/tiny-lora", "lora_weight": 1.0, "variations": 2},
]


def edit_lines() -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _EDIT_ROWS)


def demo_table() -> pa.Table:
    return pa.Table.from_pylist(_DEMO_ROWS, schema=_DEMO_SCHEMA)


def loops_table() -> pa.Table:
    return pa.Table.from_pylist(_loop_rows(), schema=_LOOP_SCHEMA)


def catalogue_lines() -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _CATALOGUE_ROWS)


def write_examples(out: Path) -> list[Path]:
    """Write all example manifests into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    demo, loops, catalogue = out / "demo.parquet", out / "loops.parquet", out / "catalogue.jsonl"
    edits = out / "edit_tasks.jsonl"
    pq.write_table(demo_table(), demo)
    pq.write_table(loops_table(), loops)
    catalogue.write_text(catalogue_lines(), encoding="utf-8")
    edits.write_text(edit_lines(), encoding="utf-8")
    return [demo, loops, catalogue, edits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="folder to write into (default: this one)"
    )
    for path in write_examples(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
