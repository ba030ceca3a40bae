"""`acestep-batch report`: the static HTML browser of a run.

A synthetic run folder (real WAV/FLAC/OGG/MP3 files, metadata parquet with ok / failed QC /
rejected / failed rows, `qc_*` columns, user tags, run.json) is built without Ray. The page is
then opened in headless Chromium: its own script (the `#selftest` hook) loads every image,
probes every player's metadata and runs the filter bar's code, and writes the results onto
<body>, which `--dump-dom` hands back. Chromium is required in CI (env `CI` set) and skipped
only outside it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from html import unescape
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from acestep_batch.cli import app
from acestep_batch.report import (
    DEFAULT_MAX_SAMPLES,
    ReportError,
    bar_chart_svg,
    build_report,
    histogram_items,
    latest_rows,
    qc_figures,
    reason_key,
    spectrogram_png,
    status_class,
    tag_columns,
    waveform_png,
)

SR = 44100
FAILED_ERROR = "render failed: RuntimeError: CUDA out of memory <script>alert(1)</script>"
REJECT_PROBLEMS = "bpm: estimated 88.0, expected 174; seam: click 0.41 > 0.30"
EVIL_PROMPT = 'deep house <b>groove</b> & "quotes"'


# --- the synthetic run ---------------------------------------------------------------------------

def _tone(freq: float, seconds: float, channels: int, seed: int, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    left = level * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    wave = np.stack([left, 0.5 * left][:channels], axis=1)  # (frames, channels) for soundfile
    return wave.astype(np.float32)


def _encoded(wave: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    subtype = {"wav": "PCM_24", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[fmt]
    sf.write(buffer, wave, SR, format=fmt.upper(), subtype=subtype)
    return buffer.getvalue()


def _base_row(output_id: str, row: int, status: str, fmt: str, **extra) -> dict:
    values = {
        "output_id": output_id, "id": output_id, "row": row, "variation": 0, "status": status, "error": None,
        "audio_uri": None, "format": fmt, "sample_rate": SR, "channels": 2, "audio_seconds": 1.0,
        "peak_dbfs": -6.0, "rms_dbfs": -12.0, "prompt": f"prompt of {output_id}", "lyrics": "", "seed": 1000 + row,
        "steps": 27, "task": "text2music", "lora": "", "created_at": "2026-01-01T00:00:10+00:00",
        "qc_lufs": -14.1, "qc_true_peak_dbtp": -1.2, "qc_bpm_estimated": None, "qc_bpm_ok": True,
        "qc_key_estimated": "A minor", "qc_key_ok": True, "qc_seam": 0.05, "qc_seam_ok": True,
        "qc_silence_ratio": 0.0, "qc_clipped_ratio": 0.0, "qc_dc_offset": 0.0, "qc_nan": False,
        "qc_problems": None, "attempts": 1,
        "genre": None, "bpm": None, "key": None, "role": None,
    }
    values.update(extra)
    return values


# output id -> (format, stored under, channels) for the outputs that have audio
AUDIO = {
    "house-1": ("wav", "audio", 2),
    "house-2": ("flac", "audio", 1),
    "techno-1": ("ogg", "audio", 2),
    "house-3": ("mp3", "audio", 2),
    "dnb-1": ("wav", "rejected", 2),
}


def make_run(root: Path) -> Path:
    """A run folder with 6 outputs: 3 ok, 1 ok but failing QC, 1 rejected, 1 failed render."""
    url = str(root)
    for number, (output_id, (fmt, folder, channels)) in enumerate(AUDIO.items()):
        path = root / folder / f"{output_id}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encoded(_tone(220.0 * (number + 1), 1.0, channels, number), fmt))
    rows = [
        _base_row("house-1", 0, "ok", "wav", genre="house", bpm=124, key="A minor", role="drums", prompt=EVIL_PROMPT,
                  qc_bpm_estimated=124.1, audio_uri=f"{url}/audio/house-1.wav"),
        _base_row("house-2", 1, "ok", "flac", genre="house", bpm=124, key="C major", role="bass", channels=1,
                  qc_bpm_estimated=123.8, audio_uri=f"{url}/audio/house-2.flac"),
        _base_row("techno-1", 2, "ok", "ogg", genre="techno", bpm=130, key="F minor", role="lead",
                  qc_bpm_estimated=130.2, audio_uri=f"{url}/audio/techno-1.ogg", prompt="dark techno lead"),
        # ok, but its QC figures fail (QC measured without re-rendering): class "failed QC"
        _base_row("house-3", 3, "ok", "mp3", genre="house", bpm=126, key="A minor", role="pad",
                  qc_key_estimated="E major", qc_key_ok=False, qc_problems="key: estimated E major, expected A minor",
                  audio_uri=f"{url}/audio/house-3.mp3"),
        _base_row("dnb-1", 4, "rejected", "wav", genre="dnb", bpm=174, key="D minor", role="drums",
                  qc_bpm_estimated=88.0, qc_bpm_ok=False, qc_seam=0.41, qc_seam_ok=False, attempts=3,
                  qc_problems=REJECT_PROBLEMS, error=f"quality check failed on all 3 attempt(s): {REJECT_PROBLEMS}",
                  audio_uri=f"{url}/rejected/dnb-1.wav"),
        _base_row("ambient-1", 5, "failed", "wav", genre="ambient", bpm=90, key="G major", role="pad", channels=0,
                  audio_seconds=0.0, peak_dbfs=None, rms_dbfs=None, error=FAILED_ERROR,
                  **{k: None for k in ("qc_lufs", "qc_true_peak_dbtp", "qc_bpm_ok", "qc_key_estimated", "qc_key_ok",
                                       "qc_seam", "qc_seam_ok", "qc_silence_ratio", "qc_clipped_ratio",
                                       "qc_dc_offset", "qc_nan")}),
    ]
    # An older failed attempt of house-1 in another part file: the ok row must win.
    older = _base_row("house-1", 0, "failed", "wav", genre="house", bpm=124, key="A minor", role="drums",
                      error="render failed: an older attempt", created_at="2026-01-01T00:00:01+00:00")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata" / "part-b.parquet")
    pq.write_table(pa.Table.from_pylist([older]), root / "metadata" / "part-a.parquet")
    record = {
        "status": "finished", "manifest": "manifests/loops.parquet", "output": url,
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
        "options": {"batch_size": 4, "format": "wav"}, "counts": {"outputs": 6, "generated": 5, "failed": 1},
        "versions": {"acestep_batch": "0.1.0"},
    }
    (root / "run.json").write_text(json.dumps(record))
    return root


# --- headless Chromium ---------------------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "headless Chromium is needed to check the report page: apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def render_page(page: Path, tmp_path: Path, filters: list[dict]) -> str:
    """Open `page` in headless Chromium with the self-test hook; return the rendered DOM.

    The audio probes run on real time while Chromium's virtual time races ahead, so a page whose
    probes did not all finish (body data-selftest="timeout") is opened once more.
    """
    chromium = _chromium()
    payload = quote(json.dumps({"filters": filters, "timeout_ms": 25000}))
    url = page.resolve().as_uri() + "#selftest=" + payload
    dom = ""
    for attempt in range(3):
        profile = tmp_path / f"chromium-profile-{attempt}"
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--mute-audio", f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url,
        ]
        env = {**os.environ, "HOME": str(tmp_path)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        dom = result.stdout
        if body_attributes(dom).get("data-selftest") == "done":
            return dom
    pytest.fail(f"the report's self-test did not finish in Chromium: {body_attributes(dom)}\n{result.stderr[-2000:]}")


def body_attributes(dom: str) -> dict[str, str]:
    match = re.search(r"<body([^>]*)>", dom)
    if not match:
        return {}
    return {name: unescape(value) for name, value in re.findall(r'([\w-]+)="([^"]*)"', match.group(1))}


def cards(dom: str) -> dict[str, str]:
    """output id -> the rendered HTML of its card."""
    found = {}
    for chunk in re.findall(r"<article\b.*?</article>", dom, flags=re.S):
        output_id = re.search(r'data-output-id="([^"]*)"', chunk).group(1)
        found[unescape(output_id)] = chunk
    return found


FILTERS = [
    {"tags": {"genre": "house"}},
    {"tags": {"genre": "house"}, "status": "ok"},
    {"status": "qc"},
    {"status": "rejected"},
    {"status": "failed"},
    {"tags": {"bpm": "124"}},
    {"tags": {"key": "A minor", "role": "pad"}},
    {"text": "TECHNO"},
    {"tags": {"genre": "no such genre"}},
]
EXPECTED_FILTER_COUNTS = [3, 2, 1, 1, 1, 2, 1, 1, 0]


def _audio_sources(page: Path, dom: str) -> list[Path]:
    return [(page.parent / unquote(unescape(src))).resolve() for src in re.findall(r'<audio[^>]*\bsrc="([^"]*)"', dom)]


def check_rendered(page: Path, tmp_path: Path) -> None:
    source = page.read_text()
    assert source.count('<audio controls preload="none" src=') == len(AUDIO), "players load nothing until played"
    dom = render_page(page, tmp_path, FILTERS)
    body = body_attributes(dom)
    with_audio = len(AUDIO)
    assert body["data-cards"] == "6" and body["data-total"] == "6"
    assert body["data-images"] == str(2 * with_audio)
    assert body["data-images-loaded"] == str(2 * with_audio), "every waveform and spectrogram image loads"
    assert body["data-audio"] == str(with_audio)
    assert body["data-audio-ok"] == str(with_audio), "every player's audio loads (wav, flac, ogg, mp3)"
    assert json.loads(body["data-filter-results"]) == EXPECTED_FILTER_COUNTS
    assert body["data-visible"] == "6", "the self-test resets the filters afterwards"

    by_id = cards(dom)
    assert set(by_id) == {"house-1", "house-2", "techno-1", "house-3", "dnb-1", "ambient-1"}
    for output_id, (fmt, folder, _) in AUDIO.items():
        card = by_id[output_id]
        assert card.count("<audio") == 1
        assert f'src="../{folder}/{output_id}.{fmt}"' in card, "players link the audio relatively"
        assert card.count("<img") == 2
    assert all(path.is_file() for path in _audio_sources(page, dom))

    failed = by_id["ambient-1"]
    assert "<audio" not in failed and "<img" not in failed
    assert "CUDA out of memory &lt;script&gt;alert(1)&lt;/script&gt;" in failed, "the error shows, escaped"
    assert "<script>alert" not in dom
    assert 'data-qc="failed"' in failed

    rejected = by_id["dnb-1"]
    assert 'data-qc="rejected"' in rejected
    assert "<li>bpm: estimated 88.0, expected 174</li>" in rejected
    assert "<li>seam: click 0.41 &gt; 0.30</li>" in rejected
    assert re.search(r'<span class="fail"><b>bpm_ok</b> no</span>', rejected)
    assert re.search(r'<span class="fail"><b>seam</b> 0.41</span>', rejected)
    assert re.search(r'<span class="pass"><b>key_ok</b> yes</span>', rejected)

    assert 'data-qc="qc"' in by_id["house-3"]
    assert "&lt;b&gt;groove&lt;/b&gt; &amp; \"quotes\"" in by_id["house-1"], "prompts are escaped"
    assert "<b>groove</b>" not in dom


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    url = build_report(str(run))
    page = run / "report" / "index.html"
    assert url == str(page) and page.is_file()
    assert len(list((run / "report" / "img").glob("*.png"))) == 2 * len(AUDIO)
    check_rendered(page, tmp_path)


def test_report_from_s3_works_after_sync(tmp_path: Path, s3_bucket: str, s3_storage_options: dict) -> None:
    """A report written next to a run in object storage uses relative links, so the synced folder works."""
    import fsspec

    local = make_run(tmp_path / "run")
    fs = fsspec.filesystem("s3", **s3_storage_options)
    remote = f"{s3_bucket}/runs/loops"
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())
    url = build_report(remote, s3_storage_options)
    assert url == f"{remote}/report/index.html"
    synced = tmp_path / "synced"
    for name in fs.find(remote):
        target = synced / name[len(remote.removeprefix("s3://")) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(name))
    check_rendered(synced / "report" / "index.html", tmp_path)


# --- the page without a browser ------------------------------------------------------------------

def test_report_caps_cards_but_counts_every_output(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    build_report(str(run), max_samples=2)
    html = (run / "report" / "index.html").read_text()
    assert html.count("<article") == 2
    assert "Showing the first 2 of 6 outputs" in html and "--max-samples 2" in html
    status_chart = re.search(r'<svg[^>]*aria-label="Outputs by QC status".*?</svg>', html, flags=re.S).group(0)
    counts = dict(re.findall(r"<title>([^<:]+): (\d+)</title>", status_chart))
    assert counts == {"ok": "3", "failed QC": "1", "rejected": "1", "failed render": "1"}
    genre_chart = re.search(r'aria-label="Outputs by genre".*?</svg>', html, flags=re.S).group(0)
    assert dict(re.findall(r"<title>([^<:]+): (\d+)</title>", genre_chart)) == {
        "house": "3", "techno": "1", "dnb": "1", "ambient": "1"}
    reasons = re.search(r'aria-label="QC failure reasons \(final outputs\)".*?</svg>', html, flags=re.S).group(0)
    assert dict(re.findall(r"<title>([^<:]+): (\d+)</title>", reasons)) == {"bpm": "1", "seam": "1", "key": "1"}
    assert len(list((run / "report" / "img").glob("*.png"))) == 4, "images only for the cards on the page"
    assert DEFAULT_MAX_SAMPLES == 2000


def test_report_out_elsewhere_links_back_to_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "data" / "run")
    url = build_report(str(run), out=str(tmp_path / "pages" / "loops.html"))
    page = tmp_path / "pages" / "loops.html"
    assert url == str(page)
    html = page.read_text()
    sources = re.findall(r'<audio[^>]*\bsrc="([^"]*)"', html)
    assert len(sources) == len(AUDIO) and all(src.startswith("../data/run/") for src in sources)
    assert all((page.parent / unquote(unescape(src))).resolve().is_file() for src in sources)
    assert all((page.parent / src).is_file() for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', html))
    # a file:// URL folder works the same way
    url = build_report(str(run), out=(tmp_path / "pages2").as_uri())
    assert url == (tmp_path / "pages2" / "index.html").as_uri()
    assert 'src="../data/run/audio/house-1.wav"' in (tmp_path / "pages2" / "index.html").read_text()


def test_report_without_optional_columns(tmp_path: Path) -> None:
    """A plain (non-loop) run: no qc_ columns, no tags, no run.json - still a page."""
    root = tmp_path / "plain"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "a.wav").write_bytes(_encoded(_tone(440.0, 0.5, 2, 0), "wav"))
    rows = [{"output_id": "a", "id": "a", "row": 0, "status": "ok", "error": None, "format": "wav",
             "audio_uri": str(root / "audio" / "a.wav"), "prompt": "piano", "seed": 1}]
    (root / "metadata").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata" / "part-0.parquet")
    build_report(str(root))
    html = (root / "report" / "index.html").read_text()
    assert html.count("<article") == 1 and 'src="../audio/a.wav"' in html
    assert "unknown (no run.json)" in html


def test_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no metadata"):
        build_report(str(tmp_path / "nothing"))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no metadata" in result.output


def test_cli_report(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--max-samples", "3"])
    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.output
    assert (out / "index.html").read_text().count("<article") == 3
    bad = CliRunner().invoke(app, ["report", str(run), "--storage-options", "[1]"])
    assert bad.exit_code == 2


# --- images, charts and row logic ----------------------------------------------------------------

def test_waveform_png_size_and_determinism() -> None:
    stereo = _tone(220.0, 1.0, 2, 0).T
    first, second = waveform_png(stereo), waveform_png(stereo.copy())
    assert first == second
    image = Image.open(io.BytesIO(first))
    assert image.size == (600, 80) and image.mode == "RGB"
    assert waveform_png(stereo[:1]) != first
    pixels = np.asarray(image)
    assert (pixels[:40] != pixels[0, 0]).any() and (pixels[40:] != pixels[0, 0]).any(), "one lane per channel"
    # full-scale columns are drawn red; empty and tiny inputs work
    clipped = np.asarray(Image.open(io.BytesIO(waveform_png(np.ones((1, 1000), np.float32)))))
    assert (clipped == (210, 40, 40)).all(axis=2).any()
    assert Image.open(io.BytesIO(waveform_png(np.zeros((2, 0), np.float32)))).size == (600, 80)
    assert Image.open(io.BytesIO(waveform_png(np.array([0.1, -0.2, 0.3], np.float32), 50, 20))).size == (50, 20)
    nan = np.full((2, 100), np.nan, np.float32)
    assert Image.open(io.BytesIO(waveform_png(nan))).size == (600, 80)


def test_spectrogram_png_size_determinism_and_frequency_axis() -> None:
    tone = _tone(1000.0, 1.0, 2, 0).T
    first = spectrogram_png(tone, SR)
    assert first == spectrogram_png(tone.copy(), SR)
    image = Image.open(io.BytesIO(first))
    assert image.size == (600, 120) and image.mode == "RGB"
    brightness = np.asarray(image).astype(float).sum(axis=2).mean(axis=1)  # per row, top = Nyquist
    row = int(np.argmax(brightness))
    expected = 119 - int(np.log(1000.0 / 30.0) / np.log((SR / 2) / 30.0) * 120)
    assert abs(row - expected) <= 3, (row, expected)
    linear = spectrogram_png(tone, SR, log_frequency=False)
    assert linear != first and Image.open(io.BytesIO(linear)).size == (600, 120)
    assert Image.open(io.BytesIO(spectrogram_png(np.zeros((1, 0)), SR))).size == (600, 120)
    assert Image.open(io.BytesIO(spectrogram_png(np.zeros((2, 10)), SR, 40, 30))).size == (40, 30)


def test_bar_chart_svg_escapes_and_parses() -> None:
    items = [("<script>x</script>", 3), ("a & b", 1), ("a very long label that gets shortened", 0)]
    svg = bar_chart_svg('counts "by" <genre>', items)
    assert svg == bar_chart_svg('counts "by" <genre>', items)
    assert "<script>" not in svg
    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg")
    titles = [element.text for element in root.iter() if element.tag.endswith("title")]
    assert titles == ["<script>x</script>: 3", "a & b: 1", "a very long label that gets shortened: 0"]
    ElementTree.fromstring(bar_chart_svg("empty", []))


def test_histogram_items() -> None:
    items = histogram_items([1.0, 2.0, 3.0, None, float("nan"), 4.0], bins=3)
    assert [count for _, count in items] == [1, 1, 2]
    assert items[0][0] == "1\u20132"
    assert histogram_items([5.0, 5.0]) == [("5", 2)]
    assert histogram_items([None]) == []


def test_row_logic() -> None:
    rows = [
        {"output_id": "b", "row": 1, "status": "failed", "created_at": "2"},
        {"output_id": "a", "row": 0, "status": "ok", "created_at": "1"},
        {"output_id": "a", "row": 0, "status": "failed", "created_at": "3"},
        {"output_id": "b", "row": 1, "status": "rejected", "created_at": "1"},
    ]
    latest = latest_rows(rows)
    assert [(r["output_id"], r["status"]) for r in latest] == [("a", "ok"), ("b", "rejected")]
    assert status_class({"status": "ok"}) == "ok"
    assert status_class({"status": "ok", "qc_seam_ok": False}) == "qc"
    assert status_class({"status": "rejected"}) == "rejected"
    assert status_class({"status": "failed"}) == "failed"
    figures = qc_figures({"qc_seam": 0.4, "qc_seam_ok": False, "qc_nan": True, "qc_lufs": -14.0, "qc_dc_offset": None,
                          "qc_problems": "x"}, ["qc_seam", "qc_seam_ok", "qc_nan", "qc_lufs", "qc_dc_offset", "qc_problems"])
    assert figures == [{"name": "seam", "value": "0.4", "state": "fail"},
                       {"name": "seam_ok", "value": "no", "state": "fail"},
                       {"name": "nan", "value": "yes", "state": "fail"},
                       {"name": "lufs", "value": "-14", "state": ""}]
    assert reason_key("silent: peak -80.0 dBFS below -60.0 dBFS") == "silent"
    assert reason_key("the render has 3 NaN samples") == "the render has # NaN samples"
    table = pa.Table.from_pylist([{"output_id": "a", "prompt": "p", "seed": 1, "qc_lufs": 1.0, "genre": "x",
                                   "bpm": 120, "loop_seconds": 2.0, "attempts": 1, "tags_list": [1, 2]}])
    assert tag_columns(table) == ["genre", "bpm"]


def test_rerun_reuses_images_and_handles_missing_or_bad_audio(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    build_report(str(run))
    images = run / "report" / "img"
    before = {path.name: path.stat().st_mtime_ns for path in images.glob("*.png")}
    (run / "audio" / "techno-1.ogg").unlink()  # deleted since
    (run / "audio" / "house-2.flac").write_bytes(b"not audio at all")  # corrupt since
    build_report(str(run))
    after = {path.name: path.stat().st_mtime_ns for path in images.glob("*.png")}
    reused = [name for name in before if name.startswith(("house-1-", "house-3-", "dnb-1-"))]
    assert len(reused) == 6 and all(after[name] == before[name] for name in reused), "unchanged outputs are reused"
    html = (run / "report" / "index.html").read_text()
    page_cards = cards(html)
    assert "audio file audio/techno-1.ogg is missing" in page_cards["techno-1"]
    assert "<audio" not in page_cards["techno-1"] and "wave-none.png" in page_cards["techno-1"]
    # images are cached by the render's identity, so a corrupt file behind an unchanged row keeps its
    # images; a re-rendered row (new created_at) is decoded again and gets a placeholder + note
    assert "<audio" in page_cards["house-2"]
    table = pq.read_table(run / "metadata" / "part-b.parquet").to_pylist()
    for row in table:
        if row["output_id"] == "house-2":
            row["created_at"] = "2026-01-02T00:00:00+00:00"
    pq.write_table(pa.Table.from_pylist(table), run / "metadata" / "part-b.parquet")
    build_report(str(run))
    card = cards((run / "report" / "index.html").read_text())["house-2"]
    assert "cannot decode house-2.flac for images" in card
    assert "<audio" in card and "spec-none.png" in card, "a file the report cannot decode keeps its player"
    for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', (run / "report" / "index.html").read_text()):
        assert Image.open(run / "report" / unquote(src)).size in ((600, 80), (600, 120))


def test_missing_chromium_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _chromium()
