"""`acestep-batch report RUN_URI`: a static HTML browser of a finished (or running) run.

The report is one `index.html` plus an `img/` folder of PNGs, written by default to
`<run>/report/`. It shows:

- the run's facts from `run.json` (status, manifest, dates, counts, options, versions);
- summary plots as inline SVG, always over *every* output of the run: counts by status, by each
  low-cardinality tag column (the user's own manifest columns: genre, bpm, key, ...; numeric
  columns with many values get a histogram), QC failure reasons, and histograms of the numeric
  `qc_*` figures;
- a filter bar (one select per tag column with at most 50 values, a QC status select, a text
  search over id and prompt), a small inline vanilla-JS script;
- one card per output: ids, an `<audio preload="none">` player, a waveform and a spectrogram
  PNG, tags, prompt, seed, render facts, every `qc_*` figure (pass/fail coloured), and the
  error or QC reasons of failed and rejected outputs.

Audio is never embedded or copied: players link to it *relatively* (`../audio/x.wav`,
`../rejected/x.wav`), so the folder works when browsed in place and after syncing a run down
from object storage. Cards are capped at `max_samples` (default `DEFAULT_MAX_SAMPLES`, in
manifest order; the page says so), because a 10k-card page with 20k images is unusable; the
summary plots still count every row.

Images are deterministic functions of the audio (numpy + Pillow, no timestamps). Decoding uses
soundfile (wav, flac, ogg, and mp3 where libsndfile >= 1.1 has it); audio it cannot decode
gets a placeholder image and a note, and keeps its player.

Self-test hook (used by tests/test_report.py in headless Chromium): opened with
`#selftest=<url-encoded JSON>` (a list of filters, or {"filters": [...], "timeout_ms": N}), the
page loads every image eagerly, probes every player's metadata, applies each filter
({"tags": {column: display value}, "status": "ok" | "qc" | "rejected" | "failed", "text": ...})
through the filter bar's own code, and records the results as `data-*` attributes on <body>
(`data-selftest` = "done", or "timeout" when some probe did not finish in time).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import posixpath
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import numpy as np

from .storage import Storage

DEFAULT_MAX_SAMPLES = 2000
REPORT_DIR = "report"
IMG_DIR = "img"
WAVEFORM_SIZE = (600, 80)  # width, height in pixels
SPECTROGRAM_SIZE = (600, 120)
MAX_FILTER_VALUES = 50  # a tag column with more distinct values gets no select (and a histogram)
HISTOGRAM_BINS = 12
SPECTROGRAM_FFT = 2048
SPECTROGRAM_DB_RANGE = (-100.0, 0.0)  # dB re a full-scale sine, mapped onto the colormap
IMAGE_VERSION = 1  # bump when the images change: cached images of earlier reports are redrawn

# Run layout (batch/plan.py); repeated here so that the report does not import the Ray job code.
AUDIO_DIR = "audio"
REJECTED_DIR = "rejected"
METADATA_DIR = "metadata"
QC_DIR = "qc"
RUN_FILE = "run.json"

# QC status classes of a card (the status filter's values) and their labels.
STATUS_CLASSES: dict[str, str] = {
    "ok": "ok",
    "qc": "failed QC",
    "rejected": "rejected",
    "failed": "failed render",
}

# Render facts shown on a card when present (label, column).
_FACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("format", "format"), ("seconds", "audio_seconds"), ("rate", "sample_rate"), ("channels", "channels"),
    ("peak dBFS", "peak_dbfs"), ("rms dBFS", "rms_dbfs"), ("steps", "steps"), ("task", "task"),
    ("lora", "lora"), ("attempts", "attempts"), ("attempt seeds", "attempt_seeds"),
    ("loop seconds", "loop_seconds"), ("loudness", "loudness_mode"), ("gain dB", "loudness_gain_db"),
    ("LUFS before", "lufs_before"), ("generate s", "generate_s"),
)


class ReportError(ValueError):
    """The run cannot be reported (no metadata, bad arguments)."""


# --- images ------------------------------------------------------------------------------------

_BACKGROUND = (248, 248, 250)
_WAVE_COLOR = (40, 90, 160)
_CLIP_COLOR = (210, 40, 40)
_AXIS_COLOR = (205, 210, 220)

# The spectrogram colormap: piecewise linear through these anchors (position, RGB).
_COLORMAP_ANCHORS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (10, 10, 28)),
    (0.25, (62, 24, 112)),
    (0.50, (176, 42, 96)),
    (0.75, (242, 138, 36)),
    (1.00, (255, 248, 196)),
)


def colormap_lut() -> np.ndarray:
    """(256, 3) uint8 lookup table of the spectrogram colormap."""
    positions = np.array([p for p, _ in _COLORMAP_ANCHORS])
    colors = np.array([c for _, c in _COLORMAP_ANCHORS], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, positions, colors[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def _as_channels(audio: np.ndarray) -> np.ndarray:
    """(channels, frames) float32 with non-finite samples zeroed; 1-D input is mono."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _column_starts(frames: int, columns: int) -> np.ndarray:
    """First frame of each of `columns` equal slices of `frames` (for ufunc.reduceat)."""
    edges = np.floor(np.linspace(0, frames, columns + 1)[:-1]).astype(np.int64)
    return np.minimum(edges, frames - 1)


def waveform_png(audio: np.ndarray, width: int = WAVEFORM_SIZE[0], height: int = WAVEFORM_SIZE[1]) -> bytes:
    """Min/max envelope per pixel column, one lane per channel (top: first channel).

    `audio` is (channels, frames) (or 1-D mono) in [-1, 1]; columns that reach full scale are
    drawn red. Deterministic: equal audio gives equal bytes.
    """
    x = _as_channels(audio)
    channels, frames = x.shape
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = _BACKGROUND
    lanes = max(1, channels)
    bounds = np.linspace(0, height, lanes + 1).round().astype(int)
    for lane in range(lanes):
        top, bottom = bounds[lane], bounds[lane + 1]
        lane_height = bottom - top
        if lane_height < 2:
            continue
        centre = top + (lane_height - 1) // 2
        pixels[centre, :] = _AXIS_COLOR
        if lane > 0:
            pixels[top, :] = _AXIS_COLOR
        if frames == 0 or lane >= channels:
            continue
        starts = _column_starts(frames, width)
        low = np.clip(np.minimum.reduceat(x[lane], starts), -1.0, 1.0)
        high = np.clip(np.maximum.reduceat(x[lane], starts), -1.0, 1.0)
        clipped = np.maximum(-low, high) >= 0.999
        scale = (lane_height - 1) / 2.0
        y_high = np.round((1.0 - high) * scale).astype(int)  # rows inside the lane
        y_low = np.round((1.0 - low) * scale).astype(int)
        rows = np.arange(lane_height)[:, None]
        mask = (rows >= y_high[None, :]) & (rows <= y_low[None, :])
        lane_pixels = pixels[top:bottom]
        lane_pixels[mask & ~clipped[None, :]] = _WAVE_COLOR
        lane_pixels[mask & clipped[None, :]] = _CLIP_COLOR
    return _png(pixels)


def spectrogram_png(
    audio: np.ndarray,
    sample_rate: int,
    width: int = SPECTROGRAM_SIZE[0],
    height: int = SPECTROGRAM_SIZE[1],
    log_frequency: bool = True,
    min_frequency: float = 30.0,
) -> bytes:
    """Log-magnitude STFT of the channel mean: one Hann-windowed 2048-point frame per pixel
    column, magnitude in dB relative to a full-scale sine (-100..0 dB onto the colormap), low
    frequencies at the bottom; rows are log-spaced from `min_frequency` to Nyquist (or linear)
    and take the loudest bin they cover. Deterministic."""
    x = _as_channels(audio)
    channels, length = x.shape
    n_fft = SPECTROGRAM_FFT
    lut = colormap_lut()
    if channels == 0 or length == 0:
        return _png(np.broadcast_to(lut[0], (height, width, 3)))
    window = np.hanning(n_fft + 1)[:-1].astype(np.float64)
    # One frame centred on each pixel column, zero outside the signal; only these samples are read.
    centres = np.floor(np.linspace(0, length - 1, width)).astype(np.int64)
    index = centres[:, None] + np.arange(n_fft)[None, :] - n_fft // 2
    inside = (index >= 0) & (index < length)
    frames = x[0, np.clip(index, 0, length - 1)]
    for channel in range(1, channels):
        frames = frames + x[channel, np.clip(index, 0, length - 1)]
    frames = np.where(inside, frames * np.float32(1.0 / channels), np.float32(0.0)) * window.astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames, axis=1)) / (window.sum() / 2.0)
    db = 20.0 * np.log10(magnitude + 1e-12)  # (width, bins)
    bins = db.shape[1]
    nyquist = sample_rate / 2.0
    if log_frequency:
        low = min(max(1.0, min_frequency), nyquist / 2.0)
        edges = np.geomspace(low, nyquist, height + 1)
    else:
        edges = np.linspace(0.0, nyquist, height + 1)
    starts = np.clip(np.floor(edges[:-1] / nyquist * (bins - 1)).astype(np.int64), 0, bins - 1)
    starts = np.maximum.accumulate(starts)
    rows = np.maximum.reduceat(db, starts, axis=1)  # (width, height), low frequency first
    lo, hi = SPECTROGRAM_DB_RANGE
    level = np.clip((rows - lo) / (hi - lo), 0.0, 1.0)
    index = np.round(level * 255).astype(np.uint8)
    return _png(lut[index.T[::-1]])


def placeholder_png(text: str, width: int, height: int) -> bytes:
    """A grey image with a short note (audio that cannot be decoded)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (228, 228, 232))
    draw = ImageDraw.Draw(image)
    draw.text((8, max(0, height // 2 - 6)), text[:90], fill=(90, 90, 100))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded bytes -> ((channels, frames) float32, sample rate), via soundfile."""
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.T, int(rate)


# --- SVG charts --------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    from markupsafe import escape

    return str(escape(str(value)))


def bar_chart_svg(title: str, items: list[tuple[str, int]], width: int = 380, color: str = "#3d6fb4") -> str:
    """A horizontal bar chart (label, count) as a standalone inline <svg>; text is escaped."""
    row, top, label_width, count_width = 17, 22, 130, 48
    height = top + row * max(1, len(items)) + 6
    bar_space = width - label_width - count_width
    largest = max((count for _, count in items), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<text x="0" y="14" class="chart-title">{_esc(title)}</text>',
    ]
    if not items:
        parts.append(f'<text x="0" y="{top + 12}" class="chart-label">(no values)</text>')
    for index, (label, count) in enumerate(items):
        y = top + index * row
        short = label if len(label) <= 20 else label[:19] + "\u2026"
        bar = max(1, round(bar_space * count / largest)) if count else 0
        parts.append(
            f'<g><title>{_esc(label)}: {count}</title>'
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end" class="chart-label">{_esc(short)}</text>'
            f'<rect x="{label_width}" y="{y + 2}" width="{bar}" height="{row - 4}" fill="{color}"/>'
            f'<text x="{label_width + bar + 4}" y="{y + 12}" class="chart-count">{count}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram_items(values: list[float], bins: int = HISTOGRAM_BINS) -> list[tuple[str, int]]:
    """Equal-width bins over the finite values, as (range label, count) for `bar_chart_svg`."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return []
    low, high = float(finite.min()), float(finite.max())
    if low == high or format_value(low) == format_value(high):  # e.g. every loop at -14 LUFS
        return [(format_value(low), int(finite.size))]
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    return [(f"{format_value(edges[i])}\u2013{format_value(edges[i + 1])}", int(counts[i])) for i in range(bins)]


# --- values, rows and columns ------------------------------------------------------------------

def format_value(value: Any) -> str:
    """Compact display text: 120.0 -> "120", -14.2345 -> "-14.23", True -> "yes", None -> ""."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _non_tag_columns() -> frozenset[str]:
    from .manifest.schema import KNOWN_COLUMNS, RESERVED_COLUMNS
    from .model.request import GenerationRequest

    generation = {f.name for f in dataclasses.fields(GenerationRequest)}
    return frozenset(KNOWN_COLUMNS | RESERVED_COLUMNS | generation | {"variation", "attempt", "base_seed"})


def tag_columns(table: Any) -> list[str]:
    """The user's own manifest columns (genre, bpm, key, ...) of a metadata table, in order."""
    import pyarrow as pa

    skip = _non_tag_columns()
    names = []
    for field in table.schema:
        name = field.name
        if name in skip or name.startswith(("qc_", "loop_", "_")):
            continue
        kind = field.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) \
                or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
            names.append(name)
    return names


def _status_rank(row: dict[str, Any]) -> tuple[int, str]:
    return ({"ok": 3, "rejected": 2}.get(row.get("status"), 1), str(row.get("created_at") or ""))


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per output id (ok beats rejected beats failed, then the newest), in manifest order."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row.get("output_id"))
        previous = best.get(key)
        if previous is None or _status_rank(row) >= _status_rank(previous):
            best[key] = row

    def order(row: dict[str, Any]) -> tuple:
        number = row.get("row")
        variation = row.get("variation")
        return (number is None, number or 0, variation or 0, str(row.get("output_id")))

    return sorted(best.values(), key=order)


_QC_PREFIX = "quality check failed"


def problems_of(row: dict[str, Any]) -> list[str]:
    """QC reasons of a row: `qc_problems`, or those in a 'quality check failed...: a; b' error."""
    text = row.get("qc_problems")
    if not text:
        error = str(row.get("error") or "")
        if row.get("status") in ("failed", "rejected") and error.startswith(_QC_PREFIX) and ":" in error:
            text = error.split(":", 1)[1]
    return [part.strip() for part in str(text or "").split(";") if part.strip()]


def reason_key(reason: str) -> str:
    """Group QC reasons: 'silent: peak -80.0 dBFS ...' -> 'silent'; numbers elsewhere -> '#'."""
    head = reason.split(":", 1)[0].strip()
    if ":" in reason and 0 < len(head) <= 40:
        return head
    return re.sub(r"[-+]?\d+(?:\.\d+)?", "#", reason).strip()


def status_class(row: dict[str, Any]) -> str:
    """The status filter's class: ok, qc (audio kept but QC problems), rejected or failed."""
    status = row.get("status")
    if status == "rejected":
        return "rejected"
    if status != "ok":
        return "failed"
    if row.get("qc_problems") or any(
        value is False for name, value in row.items() if name.startswith("qc_") and name.endswith("_ok")
    ):
        return "qc"
    return "ok"


def qc_figures(row: dict[str, Any], columns: list[str]) -> list[dict[str, str]]:
    """Every `qc_*` figure of a row (bar qc_problems) with a pass / fail / "" state.

    `qc_X_ok` flags are pass when true; `qc_X` is coloured by its `qc_X_ok` flag when there is
    one; other boolean figures (qc_nan) are problems when true.
    """
    figures = []
    for name in columns:
        if name == "qc_problems":
            continue
        value = row.get(name)
        state = ""
        if name.endswith("_ok") and isinstance(value, bool):
            state = "pass" if value else "fail"
        elif isinstance(row.get(name + "_ok"), bool):
            state = "pass" if row[name + "_ok"] else "fail"
        elif isinstance(value, bool):
            state = "fail" if value else "pass"
        if value is None and not state:
            continue
        figures.append({"name": name[3:], "value": format_value(value), "state": state})
    return figures


def _card_error(row: dict[str, Any], problems: list[str]) -> str | None:
    """The error text a card shows: none for ok rows, nor when it only repeats the QC problems."""
    error = row.get("error")
    if row.get("status") == "ok" or not error:
        return None
    if problems and str(error).startswith(_QC_PREFIX) and all(problem in error for problem in problems):
        return None
    return str(error)


def _safe_name(output_id: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,150}", output_id):
        return output_id
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", output_id)[:80].lstrip(".") or "x"
    return f"{cleaned}-{hashlib.sha1(output_id.encode()).hexdigest()[:10]}"


def _audio_location(row: dict[str, Any], run_url: str) -> tuple[str, str] | None:
    """(folder, file name) of a row's audio inside the run, or None when it has none."""
    status = row.get("status")
    if status not in ("ok", "rejected"):
        return None
    uri = str(row.get("audio_uri") or "")
    if uri:
        prefix = run_url.rstrip("/") + "/"
        relative = uri[len(prefix):] if uri.startswith(prefix) else ""
        if relative.count("/") == 1:
            folder, name = relative.split("/")
            return folder, name
        name = posixpath.basename(uri)
    else:
        extension = {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"}.get(str(row.get("format") or "wav"), "wav")
        name = f"{row.get('output_id')}.{extension}"
    return (REJECTED_DIR if status == "rejected" else AUDIO_DIR), name


# --- output location ---------------------------------------------------------------------------

def _split_out(run: Storage, out: str | None, storage_options: dict) -> tuple[Storage, str]:
    """(report folder storage, page file name) for `out` (a folder or a .html file)."""
    if out is None:
        return Storage(run.url(REPORT_DIR), storage_options), "index.html"
    text = out.rstrip("/")
    if text.lower().endswith((".html", ".htm")):
        folder, _, name = text.rpartition("/")
        if not folder:
            folder = "."
        elif folder.endswith((":", "/")):  # a file at a protocol's root: "file:///x.html"
            folder = text[: len(text) - len(name)]
        return Storage(folder, storage_options), name
    return Storage(text, storage_options), "index.html"


def _run_base_href(run: Storage, report: Storage) -> str:
    """How the page reaches the run's folders: a relative path on the same filesystem/bucket
    (works in place and after syncing), else an absolute URL."""
    if run.is_local and report.is_local:
        return quote(posixpath.relpath(run.root, report.root))
    if not run.is_local and not report.is_local and run.fs.protocol == report.fs.protocol:
        if run.root.split("/")[0] == report.root.split("/")[0]:
            return quote(posixpath.relpath("/" + run.root, "/" + report.root))
    if run.is_local:
        from pathlib import Path

        return Path(run.root).as_uri()
    return run.url()


# --- building ----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Images:
    wave: str
    spectrogram: str
    note: str
    audio_found: bool


def _image_stem(row: dict[str, Any], location: tuple[str, str]) -> str:
    """Image file stem of a row: its output id plus a digest of what the images depend on (the
    audio file and the render's identity, the image code version), so that a rerun of the
    report reuses the images of unchanged outputs and re-rendered outputs get new ones."""
    import hashlib

    identity = json.dumps([IMAGE_VERSION, list(location), str(row.get("created_at")), row.get("num_samples"),
                           row.get("audio_seconds"), list(WAVEFORM_SIZE), list(SPECTROGRAM_SIZE)], default=str)
    return f"{_safe_name(str(row.get('output_id')))}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}"


def _render_images(run: Storage, report: Storage, location: tuple[str, str], stem: str,
                   present: bool, cached: bool) -> _Images:
    """Write (or reuse) the waveform and spectrogram of one output; placeholders on failure."""
    folder, name = location
    wave_name, spec_name = f"{IMG_DIR}/{stem}.wave.png", f"{IMG_DIR}/{stem}.spec.png"
    if not present:
        note = f"audio file {folder}/{name} is missing"
    elif cached:
        return _Images(quote(wave_name), quote(spec_name), "", True)
    else:
        try:
            audio, rate = decode_audio(run.read_bytes(f"{folder}/{name}"))
            wave_png, spec_png = waveform_png(audio), spectrogram_png(audio, rate)
            report.write_bytes(wave_name, wave_png)
            report.write_bytes(spec_name, spec_png)
            return _Images(quote(wave_name), quote(spec_name), "", True)
        except FileNotFoundError:
            present, note = False, f"audio file {folder}/{name} is missing"
        except Exception as error:  # an undecodable file must not stop the report
            note = f"cannot decode {name} for images ({type(error).__name__}: {error})"
    # Placeholders have their own names: the next report tries the real images again.
    wave_name, spec_name = f"{IMG_DIR}/{stem}.wave-none.png", f"{IMG_DIR}/{stem}.spec-none.png"
    report.write_bytes(wave_name, placeholder_png(note, *WAVEFORM_SIZE))
    report.write_bytes(spec_name, placeholder_png(note, *SPECTROGRAM_SIZE))
    return _Images(quote(wave_name), quote(spec_name), note, present)


def _distinct_values(rows: list[dict[str, Any]], column: str) -> list[Any]:
    """Distinct values of a column: numbers ascending, then text alphabetically, None last."""
    values = {row.get(column) for row in rows}
    numbers = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and not (isinstance(v, float) and math.isnan(v)))
    others = sorted((v for v in values if v is not None and v not in numbers), key=lambda v: format_value(v))
    return numbers + others + ([None] if None in values else [])


def _summary_charts(rows, tags, qc_columns, history_reasons) -> list[str]:
    charts = []
    status_counts = Counter(status_class(row) for row in rows)
    charts.append(bar_chart_svg("Outputs by QC status", [(label, status_counts.get(key, 0))
                                                         for key, label in STATUS_CLASSES.items()], color="#555b66"))
    for column in tags:
        values = [row.get(column) for row in rows]
        distinct = _distinct_values(rows, column)
        if len(distinct) <= MAX_FILTER_VALUES:
            counts = Counter(format_value(v) if v is not None else "(none)" for v in values)
            labels = [format_value(v) if v is not None else "(none)" for v in distinct]
            if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
                labels.sort(key=lambda label: (-counts[label], label))
            charts.append(bar_chart_svg(f"Outputs by {column}", [(label, counts[label]) for label in labels]))
        elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            charts.append(bar_chart_svg(f"Outputs by {column} (histogram)", histogram_items(values)))
    reasons = Counter(reason_key(reason) for row in rows for reason in problems_of(row))
    charts.append(bar_chart_svg("QC failure reasons (final outputs)", reasons.most_common(30), color="#c0392b"))
    if history_reasons is not None:
        charts.append(bar_chart_svg("QC failure reasons (every attempt)", history_reasons.most_common(30),
                                    color="#e67e22"))
    errors = Counter(reason_key(str(row.get("error") or "unknown error")) for row in rows
                     if row.get("status") not in ("ok", "rejected") and not problems_of(row))
    if errors:
        charts.append(bar_chart_svg("Render failures", errors.most_common(20), color="#8e44ad"))
    for column in qc_columns:
        values = [row.get(column) for row in rows]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric and len(numeric) == sum(v is not None for v in values):
            charts.append(bar_chart_svg(f"{column}", histogram_items(numeric), color="#16a085"))
    return charts


def build_report(
    run_uri: str,
    storage_options: dict | None = None,
    out: str | None = None,
    max_samples: int | None = None,
) -> str:
    """Write the HTML report of the run at `run_uri` and return the URL of its page.

    `out`: a folder (the page is `index.html` in it) or an `.html` file, local or fsspec URL;
    default `<run>/report/index.html`. `max_samples`: cards on the page (default
    `DEFAULT_MAX_SAMPLES`; 0 = summary only). ReportError when the run has no metadata.
    """
    storage_options = dict(storage_options or {})
    if max_samples is None:
        max_samples = DEFAULT_MAX_SAMPLES
    if max_samples < 0:
        raise ReportError(f"max_samples must be >= 0, got {max_samples}")
    run = Storage(run_uri, storage_options)
    try:
        table = run.read_parquet_dir(METADATA_DIR)
    except FileNotFoundError:
        table = None
    if table is None or table.num_rows == 0:
        raise ReportError(f"{run.url()}: no metadata (expected {run.url(METADATA_DIR)}/part-*.parquet); "
                          "is this the output prefix of an `acestep-batch submit` run?")
    record: dict[str, Any] = {}
    if run.exists(RUN_FILE):
        try:
            record = json.loads(run.read_text(RUN_FILE))
        except (ValueError, UnicodeDecodeError):
            record = {"status": "unreadable run.json"}
    rows = latest_rows(table.to_pylist())
    tags = tag_columns(table)
    qc_columns = [name for name in table.column_names if name.startswith("qc_")]
    history_reasons = None
    try:
        history = run.read_parquet_dir(QC_DIR)
    except FileNotFoundError:
        history = None
    if history is not None and "qc_problems" in history.column_names:
        history_reasons = Counter(reason_key(part.strip()) for text in history.column("qc_problems").to_pylist()
                                  for part in str(text or "").split(";") if part.strip())

    report, page_name = _split_out(run, out, storage_options)
    base = _run_base_href(run, report)
    run_url = run.url()
    shown = rows[:max_samples]

    filters = []
    for column in tags:
        distinct = _distinct_values(rows, column)
        if 1 <= len(distinct) <= MAX_FILTER_VALUES:
            filters.append({"column": column, "options": [format_value(v) if v is not None else "(none)"
                                                           for v in distinct], "values": distinct})

    locations = [_audio_location(row, run_url) for row in shown]
    jobs = [(index, location) for index, location in enumerate(locations) if location is not None]
    listings: dict[str, set[str]] = {}  # one listing per audio folder instead of a request per file
    for _, (folder, _name) in jobs:
        if folder not in listings:
            listings[folder] = set(run.list(folder))
    existing = set(report.list(IMG_DIR)) if jobs else set()

    def render(job: tuple[int, tuple[str, str]]) -> _Images:
        index, location = job
        stem = _image_stem(shown[index], location)
        cached = f"{stem}.wave.png" in existing and f"{stem}.spec.png" in existing
        return _render_images(run, report, location, stem, location[1] in listings[location[0]], cached)

    workers = max(1, min(8, os.cpu_count() or 1, len(jobs) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = dict(zip([index for index, _ in jobs], pool.map(render, jobs)))

    cards = []
    for index, row in enumerate(shown):
        location, image = locations[index], images.get(index)
        tag_values = [{"name": c, "value": format_value(row.get(c))} for c in tags if row.get(c) is not None]
        filter_index = {}
        for number, spec in enumerate(filters):
            value = row.get(spec["column"])
            filter_index[number] = next((k for k, v in enumerate(spec["values"]) if v == value or (v is None and value is None)), "")
        facts = [{"name": label, "value": format_value(row.get(column))}
                 for label, column in _FACT_COLUMNS if row.get(column) not in (None, "")]
        cls, problems = status_class(row), problems_of(row)
        cards.append({
            "output_id": str(row.get("output_id")), "id": row.get("id"), "row": row.get("row"),
            "variation": row.get("variation"), "status": row.get("status"), "cls": cls,
            "label": STATUS_CLASSES[cls],
            "audio": (f"{base}/{location[0]}/{quote(location[1])}" if location and image and image.audio_found else None),
            "images": image, "tags": tag_values, "filter_index": filter_index,
            "prompt": row.get("prompt") or "", "lyrics": row.get("lyrics") or "",
            "seed": format_value(row.get("seed")), "facts": facts, "qc": qc_figures(row, qc_columns),
            "problems": problems, "error": _card_error(row, problems),
            "search": " ".join(str(row.get(k) or "") for k in ("output_id", "id", "prompt")).lower(),
        })

    counts = record.get("counts") if isinstance(record.get("counts"), dict) else {}
    audio_seconds = sum(float(row.get("audio_seconds") or 0.0) for row in rows if row.get("status") == "ok")
    html = _template().render(
        title=f"acestep-batch report: {run_url}",
        run_url=run_url, record=record, counts=counts,
        options=record.get("options") if isinstance(record.get("options"), dict) else {},
        versions=record.get("versions") if isinstance(record.get("versions"), dict) else {},
        total=len(rows), shown=len(cards), max_samples=max_samples, metadata_rows=table.num_rows,
        audio_hours=audio_seconds / 3600.0, charts=_summary_charts(rows, tags, qc_columns, history_reasons),
        filters=filters, statuses=STATUS_CLASSES, cards=cards,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        format_value=format_value, base_href=base,
    )
    report.write_text(page_name, html)
    return report.url(page_name)


def _template():
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["fv"] = format_value
    return environment.from_string(_PAGE)


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; color: #1d2330; }
body { margin: 0; background: #eef0f4; }
header, section.summary, nav.filters, main { padding: 12px 20px; }
header { background: #1d2330; color: #f4f6fa; }
header h1 { font-size: 18px; margin: 0 0 6px; word-break: break-all; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
header dt { color: #9aa3b5; } header dd { margin: 0; }
header details { margin-top: 6px; } header pre { color: #cfd6e4; white-space: pre-wrap; }
.note { background: #fff4d6; border: 1px solid #e6cf88; padding: 6px 10px; margin: 8px 0; border-radius: 4px; }
section.summary { display: flex; flex-wrap: wrap; gap: 14px; }
.chart { background: #fff; border-radius: 6px; padding: 6px; }
.chart-title { font-weight: 600; font-size: 13px; fill: #1d2330; }
.chart-label, .chart-count { font-size: 11px; fill: #3a4252; }
nav.filters { position: sticky; top: 0; z-index: 2; background: #dde2ea; display: flex; flex-wrap: wrap;
  gap: 10px; align-items: center; }
nav.filters label { display: flex; flex-direction: column; font-size: 11px; color: #4a5263; }
main { display: flex; flex-direction: column; gap: 10px; }
[hidden] { display: none !important; }
.card { background: #fff; border-radius: 6px; padding: 10px 12px; border-left: 6px solid #2e8b57; }
.card.qc { border-left-color: #e67e22; } .card.rejected { border-left-color: #c0392b; }
.card.failed { border-left-color: #7f8c8d; }
.card h2 { font-size: 15px; margin: 0 0 4px; display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.badge { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #2e8b57; color: #fff; font-weight: 500; }
.qc .badge { background: #e67e22; } .rejected .badge { background: #c0392b; } .failed .badge { background: #7f8c8d; }
.sub { color: #6a7282; font-weight: 400; font-size: 12px; }
.media { display: flex; flex-direction: column; gap: 3px; margin: 6px 0; }
.media img { width: 600px; max-width: 100%; image-rendering: pixelated; border-radius: 3px; display: block; }
audio { width: 600px; max-width: 100%; }
.kv { display: flex; flex-wrap: wrap; gap: 4px 6px; margin: 4px 0; }
.kv span { background: #eef0f4; border-radius: 4px; padding: 1px 6px; font-size: 12px; }
.kv span b { font-weight: 600; color: #4a5263; }
.kv .pass { background: #dff3e4; } .kv .fail { background: #f9d9d5; color: #8c1c13; }
.prompt { margin: 4px 0; } .prompt b { color: #4a5263; }
.error, .problems { color: #8c1c13; background: #fcefed; border-radius: 4px; padding: 4px 8px; margin: 4px 0;
  white-space: pre-wrap; }
.problems ul { margin: 2px 0 2px 18px; padding: 0; }
details.lyrics pre { white-space: pre-wrap; margin: 4px 0; }
</style>
</head>
<body data-total="{{ total }}" data-cards="{{ shown }}">
<header>
  <h1>{{ run_url }}</h1>
  <dl>
    <dt>status</dt><dd>{{ record.get("status", "unknown (no run.json)") }}</dd>
    {% if record.get("manifest") %}<dt>manifest</dt><dd>{{ record["manifest"] }}</dd>{% endif %}
    {% if record.get("started_at") %}<dt>started</dt><dd>{{ record["started_at"] }}</dd>{% endif %}
    {% if record.get("finished_at") %}<dt>finished</dt><dd>{{ record["finished_at"] }}</dd>{% endif %}
    <dt>in metadata</dt><dd>{{ total }} outputs ({{ metadata_rows }} rows), {{ "%.3f"|format(audio_hours) }} h of ok audio</dd>
    {% for key, value in counts.items() %}<dt>{{ key }}</dt><dd>{{ value|fv }}</dd>{% endfor %}
    {% for key, value in versions.items() %}<dt>{{ key }}</dt><dd>{{ value }}</dd>{% endfor %}
    <dt>report</dt><dd>generated {{ generated_at }}; audio linked from {{ base_href }}/</dd>
  </dl>
  {% if options %}
  <details><summary>options</summary><pre>{% for key, value in options.items() %}{{ key }}: {{ value }}
{% endfor %}</pre></details>
  {% endif %}
</header>
<section class="summary" id="summary">
{% for chart in charts %}{{ chart|safe }}
{% endfor %}
</section>
<nav class="filters" id="filters">
  {% for spec in filters %}
  <label>{{ spec.column }}
    <select data-tag="{{ loop.index0 }}" data-column="{{ spec.column }}">
      <option value="">all</option>
      {% for option in spec.options %}<option value="{{ loop.index0 }}" data-label="{{ option }}">{{ option }}</option>{% endfor %}
    </select>
  </label>
  {% endfor %}
  <label>QC status
    <select id="f-status">
      <option value="">all</option>
      {% for key, label in statuses.items() %}<option value="{{ key }}">{{ label }}</option>{% endfor %}
    </select>
  </label>
  <label>search id / prompt <input id="f-text" type="search" placeholder="text"></label>
  <span><b id="visible-count">{{ shown }}</b> of {{ shown }} shown</span>
</nav>
<main id="cards">
{% if shown < total %}
<p class="note" id="capped">Showing the first {{ shown }} of {{ total }} outputs (manifest order; the cap is
  <code>--max-samples {{ max_samples }}</code>). Filters apply to the cards on this page; the summary plots count every output.</p>
{% endif %}
{% for card in cards %}
<article class="card {{ card.cls }}" id="card-{{ loop.index0 }}" data-qc="{{ card.cls }}" data-output-id="{{ card.output_id }}"
  data-search="{{ card.search }}"{% for number, value in card.filter_index.items() %} data-t{{ number }}="{{ value }}"{% endfor %}>
  <h2>{{ card.output_id }} <span class="badge">{{ card.label }}</span>
    <span class="sub">id {{ card.id }} &middot; row {{ card.row }}{% if card.variation is not none %} &middot; variation {{ card.variation }}{% endif %} &middot; seed {{ card.seed }}</span></h2>
  {% if card.images %}
  <div class="media">
    {% if card.audio %}<audio controls preload="none" src="{{ card.audio }}"></audio>{% endif %}
    <img class="wave" src="{{ card.images.wave }}" width="600" height="80" loading="lazy" alt="waveform of {{ card.output_id }}">
    <img class="spec" src="{{ card.images.spectrogram }}" width="600" height="120" loading="lazy" alt="spectrogram of {{ card.output_id }}">
    {% if card.images.note %}<div class="note">{{ card.images.note }}</div>{% endif %}
  </div>
  {% endif %}
  {% if card.tags %}<div class="kv tags">{% for tag in card.tags %}<span><b>{{ tag.name }}</b> {{ tag.value }}</span>{% endfor %}</div>{% endif %}
  {% if card.prompt %}<div class="prompt"><b>prompt</b> {{ card.prompt }}</div>{% endif %}
  {% if card.lyrics %}<details class="lyrics"><summary>lyrics</summary><pre>{{ card.lyrics }}</pre></details>{% endif %}
  {% if card.facts %}<div class="kv facts">{% for fact in card.facts %}<span><b>{{ fact.name }}</b> {{ fact.value }}</span>{% endfor %}</div>{% endif %}
  {% if card.qc %}<div class="kv qcfig">{% for figure in card.qc %}<span{% if figure.state %} class="{{ figure.state }}"{% endif %}><b>{{ figure.name }}</b> {{ figure.value }}</span>{% endfor %}</div>{% endif %}
  {% if card.problems %}<div class="problems">QC problems{% if card.status == "rejected" %} (rejected){% endif %}:<ul>{% for problem in card.problems %}<li>{{ problem }}</li>{% endfor %}</ul></div>{% endif %}
  {% if card.error %}<div class="error">{{ card.error }}</div>{% endif %}
</article>
{% endfor %}
</main>
<script>
(function () {
  "use strict";
  var body = document.body;
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.card"));
  var tagSelects = Array.prototype.slice.call(document.querySelectorAll("select[data-tag]"));
  var statusSelect = document.getElementById("f-status");
  var textInput = document.getElementById("f-text");
  var counter = document.getElementById("visible-count");

  function apply() {
    var query = textInput.value.trim().toLowerCase();
    var visible = 0;
    cards.forEach(function (card) {
      var show = tagSelects.every(function (select) {
        return select.value === "" || card.getAttribute("data-t" + select.getAttribute("data-tag")) === select.value;
      });
      if (show && statusSelect.value && card.getAttribute("data-qc") !== statusSelect.value) show = false;
      if (show && query && card.getAttribute("data-search").indexOf(query) < 0) show = false;
      card.hidden = !show;
      if (show) visible += 1;
    });
    counter.textContent = String(visible);
    body.setAttribute("data-visible", String(visible));
    return visible;
  }

  // {"tags": {column: display value}, "status": "ok" | "qc" | "rejected" | "failed", "text": "..."}
  function setFilter(spec) {
    spec = spec || {};
    var tags = spec.tags || {};
    tagSelects.forEach(function (select) {
      var wanted = tags[select.getAttribute("data-column")];
      select.value = "";
      if (wanted === undefined) return;
      var value = "-1";  // a value no card has: an unknown tag value matches nothing
      Array.prototype.forEach.call(select.options, function (option) {
        if (option.getAttribute("data-label") === String(wanted)) value = option.value;
      });
      if (value === "-1") { var none = document.createElement("option"); none.value = "-1"; select.appendChild(none); }
      select.value = value;
    });
    statusSelect.value = spec.status || "";
    textInput.value = spec.text || "";
    return apply();
  }

  tagSelects.concat([statusSelect]).forEach(function (select) { select.addEventListener("change", apply); });
  textInput.addEventListener("input", apply);
  window.acestepReport = { apply: apply, setFilter: setFilter };
  apply();

  function settle(element, events) {
    return new Promise(function (resolve) {
      events.forEach(function (name) { element.addEventListener(name, function () { resolve(name); }, { once: true }); });
    });
  }

  function selftest(specs, timeoutMs) {
    var images = Array.prototype.slice.call(document.querySelectorAll("img"));
    var audios = Array.prototype.slice.call(document.querySelectorAll("audio"));
    var imageDone = images.map(function (img) {
      img.loading = "eager";
      if (img.complete) return Promise.resolve();
      return settle(img, ["load", "error"]);
    });
    var audioDone = audios.map(function (audio) {
      var done = settle(audio, ["loadedmetadata", "error"]).then(function (name) {
        audio.setAttribute("data-probe", name === "loadedmetadata" && audio.duration > 0 ? "ok" : "error");
      });
      audio.preload = "metadata";
      audio.load();
      return done;
    });
    var results = specs.map(setFilter);
    setFilter({});
    body.setAttribute("data-filter-results", JSON.stringify(results));
    function record(state) {
      if (body.getAttribute("data-selftest")) return;
      body.setAttribute("data-images", String(images.length));
      body.setAttribute("data-images-loaded", String(images.filter(function (img) {
        return img.complete && img.naturalWidth > 0;
      }).length));
      body.setAttribute("data-audio", String(audios.length));
      body.setAttribute("data-audio-ok", String(audios.filter(function (audio) {
        return audio.getAttribute("data-probe") === "ok";
      }).length));
      body.setAttribute("data-selftest", state);
    }
    Promise.all(imageDone.concat(audioDone)).then(function () { record("done"); });
    setTimeout(function () { record("timeout"); }, timeoutMs);
  }

  var match = /^#selftest(?:=(.*))?$/.exec(location.hash);
  if (match) {
    // payload: a list of filters, or {"filters": [...], "timeout_ms": N} (default 20000)
    var payload = {};
    try { payload = match[1] ? JSON.parse(decodeURIComponent(match[1])) : {}; } catch (error) {
      body.setAttribute("data-selftest-error", String(error));
    }
    if (Array.isArray(payload)) payload = { filters: payload };
    var run = function () { selftest(payload.filters || [], payload.timeout_ms || 20000); };
    if (document.readyState === "complete") run();
    else window.addEventListener("load", run);
  }
})();
</script>
</body>
</html>
"""
