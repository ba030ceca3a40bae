"""Edit tasks (retake, repaint, extend, edit, audio2audio) and LoRA: columns, rules, expansion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acestep_batch.manifest import (
    ManifestProblem,
    expand_manifest,
    load_manifest,
    validate_manifest,
)
from acestep_batch.manifest.schema import (
    audio2audio_step_count,
    repaint_skipped_steps,
    sampler_loop_length,
    schedule_steps,
    seconds_to_latent_frames,
)
from acestep_batch.manifest.validate import NO_VALUE
from acestep_batch.model.request import GenerationRequest

SONG = "s3://bucket/song.wav"
LORA = "ACE-Step/ACE-Step-v1-chinese-rap-LoRA"


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> table with every key of every row (pa.Table.from_pylist keeps the first row's)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return pa.table({name: [row.get(name) for row in rows] for name in columns})


def problems_of(*rows: dict[str, Any]) -> list[ManifestProblem]:
    return validate_manifest(table_of([{"prompt": "lo-fi piano", **row} for row in rows]))


def one_problem(**row: Any) -> ManifestProblem:
    found = problems_of(row)
    assert len(found) == 1, [str(problem) for problem in found]
    return found[0]


# --- single columns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "cell", "fragment"),
    [
        ("retake_seeds", -1, "a whole number from 0 to 4294967295 (leave it empty to derive"),
        ("retake_seeds", 1.5, "a whole number from 0 to 4294967295"),
        ("retake_seeds", 2**32, "a whole number from 0 to 4294967295"),
        ("retake_variance", 1.5, "a number from 0 to 1 (how much of the initial noise"),
        ("retake_variance", -0.1, "a number from 0 to 1"),
        ("repaint_start", -241, "seconds from -240 to 240"),
        ("repaint_start", 240.5, "seconds from -240 to 240"),
        ("repaint_end", -1, "seconds from 0 to 480"),
        ("repaint_end", 481, "seconds from 0 to 480"),
        ("repaint_end", float("inf"), "seconds from 0 to 480"),
        ("ref_audio_strength", 1.2, "a number from 0 to 1 (how closely the output follows"),
        ("edit_n_min", -0.5, "a fraction of the steps from 0 to 1"),
        ("edit_n_max", 2, "a fraction of the steps from 0 to 1"),
        ("edit_n_avg", 0, "a whole number from 1 to 16"),
        ("edit_n_avg", 17, "a whole number from 1 to 16"),
        ("edit_n_avg", 1.5, "a whole number from 1 to 16"),
        ("lora_weight", 5, "a number from -4 to 4 (the adapter's scale"),
        ("lora_weight", "heavy", "a number from -4 to 4"),
        ("src_audio", 7, "the source audio as one line of text"),
        ("src_audio", "a.wav\nb.wav", "the source audio as one line of text"),
        ("ref_audio", 1, "the reference audio as one line of text"),
        ("lora", True, "the LoRA adapter as one line of text"),
        ("edit_target_prompt", 3, "text: the prompt to edit towards"),
        ("edit_target_lyrics", 3, "text: the lyrics to edit towards"),
    ],
)
def test_new_column_ranges_and_types(column: str, cell: Any, fragment: str) -> None:
    problem = one_problem(**{column: cell})
    assert (problem.row, problem.column, problem.value) == (1, column, cell)
    assert fragment in str(problem)


def test_a_bad_cell_is_reported_once_not_again_by_the_task_rules() -> None:
    problem = one_problem(task="repaint", src_audio=SONG, repaint_start="abc", repaint_end=5)
    assert problem.column == "repaint_start" and "seconds from -240 to 240" in problem.expected


def test_uri_cells_are_stripped() -> None:
    (spec,) = expand_manifest(
        table_of([{"prompt": "p", "task": "edit", "src_audio": f"  {SONG} ",
                   "edit_target_prompt": "jazz"}])
    )
    assert spec.request.src_audio == SONG


# --- which audio a task reads ----------------------------------------------------------------


@pytest.mark.parametrize("task", ["repaint", "extend", "edit"])
def test_source_tasks_need_src_audio(task: str) -> None:
    row = {"task": task, "repaint_start": -1 if task == "extend" else 0, "repaint_end": 5,
           "edit_target_prompt": "jazz"}
    problem = one_problem(**row)
    assert (problem.row, problem.column, problem.value) == (1, "src_audio", NO_VALUE)
    assert str(problem) == (
        f"row 1, column 'src_audio': expected the source audio with task {task!r}, which "
        "changes an existing recording; set src_audio to a local path or fsspec URL "
        "(e.g. s3://bucket/song.wav), or set task to 'text2music'"
    )
    # An empty cell is the same as no column, and names the cell it got.
    blank = one_problem(**row, src_audio="  ", id="x")
    assert (blank.id, blank.value) == ("x", "  ")


def test_audio2audio_needs_ref_audio() -> None:
    problem = one_problem(task="audio2audio")
    assert problem.column == "ref_audio" and problem.value is NO_VALUE
    assert "the reference audio with task 'audio2audio'" in problem.expected
    assert "set ref_audio to a local path or fsspec URL" in problem.expected


@pytest.mark.parametrize("task", ["text2music", "retake", "audio2audio"])
def test_src_audio_on_a_task_that_ignores_it(task: str) -> None:
    row: dict[str, Any] = {"task": task, "src_audio": SONG}
    if task == "audio2audio":
        row["ref_audio"] = "ref.wav"
    problem = one_problem(**row)
    assert (problem.column, problem.value) == ("src_audio", SONG)
    assert problem.expected == (
        f"no src_audio with task {task!r}: src_audio is only used by task 'repaint', 'extend' "
        "or 'edit'; clear it or set task to 'repaint', 'extend' or 'edit'"
    )


@pytest.mark.parametrize("task", ["text2music", "retake", "edit"])
def test_ref_audio_on_a_task_that_ignores_it(task: str) -> None:
    row: dict[str, Any] = {"task": task, "ref_audio": "ref.wav"}
    if task == "edit":
        row.update(src_audio=SONG, edit_target_prompt="jazz")
    problem = one_problem(**row)
    assert (problem.column, problem.value) == ("ref_audio", "ref.wav")
    assert problem.expected == (
        f"no ref_audio with task {task!r}: ref_audio is only used by task 'audio2audio'; "
        "clear it or set task to 'audio2audio'"
    )


# --- repaint and extend -------------------------------------------------------------------------


def test_repaint_with_a_negative_start_hints_extend() -> None:
    problem = one_problem(task="repaint", src_audio=SONG, repaint_start=-5, repaint_end=10)
    assert (problem.column, problem.value) == ("repaint_start", -5.0)
    assert "repaint_start >= 0 with task 'repaint'" in problem.expected
    assert "set task to 'extend' for that" in problem.expected


@pytest.mark.parametrize(("start", "end"), [(0, 0), (10, 10), (10, 5), (10, 10.02)])
def test_repaint_needs_a_window(start: float, end: float) -> None:
    problem = one_problem(task="repaint", src_audio=SONG, repaint_start=start, repaint_end=end)
    assert (problem.column, problem.value) == ("repaint_end", float(end))
    assert f"repaint_end > repaint_start (here {start:g}) with task 'repaint'" in problem.expected
    assert "one latent frame (0.093 s)" in problem.expected


def test_repaint_window_in_latent_frames() -> None:
    # ACE-Step truncates seconds to frames: int(s * 44100 / 512 / 8).
    assert seconds_to_latent_frames(10) == 107 and seconds_to_latent_frames(10.02) == 107
    assert seconds_to_latent_frames(-0.05) == 0 and seconds_to_latent_frames(-1) == -10
    assert problems_of({"task": "repaint", "src_audio": SONG, "repaint_end": 0.1}) == []


def test_extend_needs_a_non_positive_start() -> None:
    problem = one_problem(task="extend", src_audio=SONG, repaint_start=5, repaint_end=40)
    assert (problem.column, problem.value) == ("repaint_start", 5.0)
    assert problem.expected == (
        "repaint_start <= 0 with task 'extend' (a negative repaint_start is the seconds added on "
        "the left, a repaint_end past the source's end adds audio on the right); to regenerate "
        "a window inside the source set task to 'repaint'"
    )


@pytest.mark.parametrize("start", [0, -0.05, None])
def test_extend_must_add_something(start: float | None) -> None:
    problem = one_problem(task="extend", src_audio=SONG, repaint_start=start)
    assert problem.column == "repaint_end" and problem.value is NO_VALUE
    assert "a negative repaint_start or a repaint_end past the source's end" in problem.expected
    assert "repaint_end = the source's length + 30 adds 30 s at the end" in problem.expected


def test_extend_left_right_or_both() -> None:
    assert problems_of(
        {"task": "extend", "src_audio": SONG, "repaint_start": -10},
        {"task": "extend", "src_audio": SONG, "repaint_end": 60},
        {"task": "extend", "src_audio": SONG, "repaint_start": -10, "repaint_end": 60},
    ) == []


def test_retake_variance_that_skips_every_repaint_step() -> None:
    problem = one_problem(task="repaint", src_audio=SONG, repaint_end=5, retake_variance=0)
    assert (problem.column, problem.value) == ("retake_variance", 0)
    assert "int(infer_steps * (1 - retake_variance)) = 60 of 60 sampler steps" in problem.expected
    assert "raise retake_variance" in problem.expected
    # Retake only rotates the noise by the variance: 0 is a plain re-render, not an error.
    assert problems_of({"task": "retake", "retake_variance": 0}) == []
    assert problems_of({"task": "repaint", "src_audio": SONG, "repaint_end": 5,
                        "retake_variance": 0.01}) == []


def test_repaint_skip_count_follows_oss_steps() -> None:
    # With oss_steps ACE-Step keeps infer_steps = max(oss_steps) for the skip count while the
    # loop runs len(oss_steps) steps, so a short list with the default variance skips them all.
    assert schedule_steps(60, "16,29,52") == 52
    assert sampler_loop_length(60, "euler", "16,29,52") == 3
    assert repaint_skipped_steps(60, "16,29,52", 0.5) == 26
    problem = one_problem(task="extend", src_audio=SONG, repaint_end=40, oss_steps="16,29,52")
    assert problem.column == "retake_variance"
    assert "= 26 of 3 sampler steps (infer_steps = max(oss_steps))" in problem.expected
    # oss_steps as such is fine with repaint, extend and audio2audio.
    oss = "10,20,30,40,50,60"
    assert problems_of(
        {"task": "repaint", "src_audio": SONG, "repaint_end": 5, "oss_steps": oss,
         "retake_variance": 0.95},
        {"task": "extend", "src_audio": SONG, "repaint_start": -3, "oss_steps": oss,
         "retake_variance": 0.95},
        {"task": "audio2audio", "ref_audio": "r.wav", "oss_steps": oss},
    ) == []


def test_heun_runs_twice_the_loop() -> None:
    assert sampler_loop_length(60, "heun", "") == 119 and sampler_loop_length(60, "euler", "") == 60
    assert problems_of({"task": "repaint", "src_audio": SONG, "repaint_end": 5,
                        "scheduler": "heun"}) == []


# --- audio2audio ------------------------------------------------------------------------------


def test_audio2audio_strength_one_runs_no_step() -> None:
    problem = one_problem(task="audio2audio", ref_audio="r.wav", ref_audio_strength=1)
    assert (problem.column, problem.value) == ("ref_audio_strength", 1.0)
    assert problem.expected == (
        "a ref_audio_strength that leaves at least one step: audio2audio runs "
        "int((1 - ref_audio_strength) * steps) steps, here int((1 - 1) * 60) = 0; use a "
        "ref_audio_strength below 1"
    )


def test_audio2audio_strength_and_steps_fix() -> None:
    problem = one_problem(task="audio2audio", ref_audio="r.wav", ref_audio_strength=0.99)
    assert "here int((1 - 0.99) * 60) = 0" in problem.expected
    assert problem.expected.endswith(
        "use a ref_audio_strength of at most 0.983, or steps >= 100"
    )
    assert audio2audio_step_count(60, "", 0.983) == 1 and audio2audio_step_count(100, "", 0.99) == 1
    assert audio2audio_step_count(99, "", 0.99) == 0
    # The float arithmetic is ACE-Step's: (1 - 0.9) * 10 is just below 1, so 0 steps.
    assert audio2audio_step_count(10, "", 0.9) == 0
    assert one_problem(task="audio2audio", ref_audio="r.wav", ref_audio_strength=0.9,
                       steps=10).column == "ref_audio_strength"
    assert problems_of({"task": "audio2audio", "ref_audio": "r.wav", "ref_audio_strength": 0.8,
                        "steps": 10}) == []


def test_audio2audio_guidance_decay_uses_its_own_step_count() -> None:
    # steps 4 at strength 0.5 runs 2 steps: the interval covers one, so decay divides by zero.
    problem = one_problem(task="audio2audio", ref_audio="r.wav", steps=4,
                          guidance_interval_decay=0.5)
    assert problem.column == "guidance_interval_decay"
    assert "audio2audio runs 2 steps at ref_audio_strength=0.5" in problem.expected
    assert problems_of({"steps": 4, "guidance_interval_decay": 0.5}) == []
    # Edit has no guidance interval at all.
    assert problems_of({"task": "edit", "src_audio": SONG, "edit_target_prompt": "jazz",
                        "steps": 2, "guidance_interval_decay": 0.5}) == []


# --- edit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets",
    [
        {},
        {"edit_target_prompt": "lo-fi piano"},
        {"edit_target_lyrics": "[verse]\nla", "lyrics": "[verse]\nla"},
    ],
)
def test_edit_needs_a_different_target(targets: dict[str, str]) -> None:
    problem = one_problem(task="edit", src_audio=SONG, **targets)
    assert problem.column == "edit_target_prompt"
    assert problem.expected.startswith(
        "an edit_target_prompt or edit_target_lyrics that differs from prompt/lyrics with task "
        "'edit'"
    )
    assert problem.expected.endswith("set one or both")


@pytest.mark.parametrize(
    "targets", [{"edit_target_prompt": "jazz"}, {"edit_target_lyrics": "[verse]\nnew words"}]
)
def test_edit_with_a_target(targets: dict[str, str]) -> None:
    assert problems_of({"task": "edit", "src_audio": SONG, **targets}) == []


def test_edit_fractions_in_order() -> None:
    problem = one_problem(task="edit", src_audio=SONG, edit_target_prompt="jazz",
                          edit_n_min=0.6, edit_n_max=0.4)
    assert (problem.column, problem.value) == ("edit_n_max", 0.4)
    assert "edit_n_max >= edit_n_min (here 0.6) with task 'edit'" in problem.expected
    assert "raise edit_n_max or lower edit_n_min" in problem.expected
    assert problems_of({"task": "edit", "src_audio": SONG, "edit_target_prompt": "jazz",
                        "edit_n_min": 0.4, "edit_n_max": 0.4}) == []


def test_edit_n_min_one_skips_every_step() -> None:
    problem = one_problem(task="edit", src_audio=SONG, edit_target_prompt="jazz", edit_n_min=1)
    assert problem.column == "edit_n_min"
    assert "int(steps * edit_n_min) = 60 of 60 steps" in problem.expected
    assert "source would come back unchanged" in problem.expected


def test_edit_rejects_oss_steps_and_other_guidance() -> None:
    row = {"task": "edit", "src_audio": SONG, "edit_target_prompt": "jazz"}
    oss = one_problem(**row, oss_steps="16,29,52")
    assert (oss.column, oss.value) == ("oss_steps", "16,29,52")
    assert oss.expected.startswith("no oss_steps with task 'edit'")
    assert "clear oss_steps, or set steps instead" in oss.expected
    cfg = one_problem(**row, cfg_type="cfg_star")
    assert (cfg.column, cfg.value) == ("cfg_type", "cfg_star")
    assert "edit always guides with APG, so 'cfg_star' would be ignored" in cfg.expected
    assert problems_of({**row, "cfg_type": "apg", "scheduler": "pingpong"}) == []


# --- seeds, LoRA ---------------------------------------------------------------------------------


def test_retake_seeds_plus_variations_overflow() -> None:
    problem = one_problem(task="retake", retake_seeds=2**32 - 2, variations=3)
    assert (problem.column, problem.value) == ("retake_seeds", 2**32 - 2)
    assert "retake_seeds + variations - 1 <= 4294967295" in problem.expected
    assert "use retake_seeds of at most 4294967293" in problem.expected
    assert problems_of({"task": "retake", "retake_seeds": 2**32 - 3, "variations": 3}) == []


def test_lora_weight_without_lora() -> None:
    problem = one_problem(lora_weight=0.5, id="a")
    assert str(problem) == (
        "row 1 (id 'a'), column 'lora_weight': got 0.5; expected no lora_weight without a lora "
        "(it scales the adapter named in lora, and this row has none); set lora or clear "
        "lora_weight"
    )
    assert problems_of({"lora": LORA, "lora_weight": -1.5}, {"lora_weight": 1.0}) == []


def test_several_task_problems_in_one_report() -> None:
    found = problems_of(
        {"task": "repaint"},
        {"task": "ok-task"},
        {"task": "text2music", "src_audio": SONG, "ref_audio": "r.wav"},
    )
    assert [(problem.row, problem.column) for problem in found] == [
        (1, "src_audio"),
        (1, "repaint_end"),
        (2, "task"),
        (3, "src_audio"),
        (3, "ref_audio"),
    ]


# --- expansion ---------------------------------------------------------------------------------

MIXED_TASK_ROWS: list[dict[str, Any]] = [
    {"id": "t2m", "prompt": "rap, 90 bpm", "seed": 1, "lora": LORA, "lora_weight": 0.8},
    {"id": "retake", "prompt": "lo-fi", "task": "retake", "seed": 5, "retake_seeds": 100,
     "retake_variance": 0.2, "variations": 2},
    {"id": "retake-derived", "prompt": "lo-fi", "task": "retake", "seed": 9, "variations": 2},
    {"id": "repaint", "prompt": "pop", "task": "repaint", "seed": 2, "src_audio": SONG,
     "repaint_start": 10, "repaint_end": 20.5, "retake_variance": 0.3},
    {"id": "extend", "prompt": "pop", "task": "extend", "seed": 3, "src_audio": "/data/a.flac",
     "repaint_start": -5, "repaint_end": 70},
    {"id": "edit", "prompt": "pop", "lyrics": "[verse]\nold", "task": "edit", "seed": 4,
     "src_audio": "gs://b/c.mp3", "edit_target_prompt": "jazz",
     "edit_target_lyrics": "[verse]\nnew", "edit_n_min": 0.2, "edit_n_max": 0.4,
     "edit_n_avg": 2},
    {"id": "a2a", "prompt": "ambient", "task": "audio2audio", "seed": 6, "steps": 20,
     "ref_audio": "memory://ref.wav", "ref_audio_strength": 0.7, "lora": "/models/my-lora",
     "lora_weight": -0.5},
]


def test_mixed_task_manifest_expands_to_requests(tmp_path: Path) -> None:
    path = tmp_path / "tasks.parquet"
    pq.write_table(table_of(MIXED_TASK_ROWS), path)
    _, specs = load_manifest(str(path))
    requests = {spec.output_id: spec.request for spec in specs}
    assert list(requests) == ["t2m", "retake-0", "retake-1", "retake-derived-0",
                              "retake-derived-1", "repaint", "extend", "edit", "a2a"]
    assert requests["t2m"] == GenerationRequest(prompt="rap, 90 bpm", seed=1, lora=LORA,
                                                lora_weight=0.8)
    # Variation k: seed + k and retake_seeds + k; without retake_seeds the engine derives it.
    assert requests["retake-1"] == GenerationRequest(
        prompt="lo-fi", task="retake", seed=6, retake_seeds=101, retake_variance=0.2
    )
    assert requests["retake-0"].retake_seeds == 100
    derived = [requests["retake-derived-0"], requests["retake-derived-1"]]
    assert [r.retake_seeds for r in derived] == [None, None]
    assert derived[0].effective_retake_seed() != derived[1].effective_retake_seed()
    assert requests["repaint"] == GenerationRequest(
        prompt="pop", task="repaint", seed=2, src_audio=SONG, repaint_start=10.0,
        repaint_end=20.5, retake_variance=0.3
    )
    assert requests["extend"] == GenerationRequest(
        prompt="pop", task="extend", seed=3, src_audio="/data/a.flac", repaint_start=-5.0,
        repaint_end=70.0
    )
    assert requests["edit"] == GenerationRequest(
        prompt="pop", lyrics="[verse]\nold", task="edit", seed=4, src_audio="gs://b/c.mp3",
        edit_target_prompt="jazz", edit_target_lyrics="[verse]\nnew", edit_n_min=0.2,
        edit_n_max=0.4, edit_n_avg=2
    )
    assert requests["a2a"] == GenerationRequest(
        prompt="ambient", task="audio2audio", seed=6, steps=20, ref_audio="memory://ref.wav",
        ref_audio_strength=0.7, lora="/models/my-lora", lora_weight=-0.5
    )
    for request in requests.values():
        assert isinstance(request.repaint_start, float) and isinstance(request.edit_n_avg, int)


def test_derived_ids_of_task_rows_are_stable_and_distinct() -> None:
    def derived(**row: Any) -> str:
        return expand_manifest(table_of([{"prompt": "pop", **row}]))[0].id

    assert derived() == derived(lora="", retake_variance=0.5, edit_n_avg=1)
    ids = {
        derived(),
        derived(task="retake"),
        derived(task="retake", retake_seeds=1),
        derived(lora=LORA),
        derived(lora=LORA, lora_weight=0.5),
        derived(task="repaint", src_audio=SONG, repaint_end=5),
        derived(task="repaint", src_audio=SONG, repaint_end=6),
    }
    assert len(ids) == 7


def test_task_columns_from_csv_text(tmp_path: Path) -> None:
    path = tmp_path / "tasks.csv"
    path.write_text(
        "prompt,task,src_audio,ref_audio,repaint_start,repaint_end,retake_seeds,"
        "ref_audio_strength,edit_target_prompt,edit_n_avg,lora,lora_weight\n"
        "a,extend,song.wav,,-5,,12,,,,,\n"
        "b,audio2audio,,ref.wav,,,,0.25,,,1,2.5\n"
        "c,edit,s3://b/x.wav,,,,,,jazz,3,,\n",
        encoding="utf-8",
    )
    _, specs = load_manifest(str(path))
    extend, a2a, edit = (spec.request for spec in specs)
    assert (extend.task, extend.src_audio, extend.repaint_start, extend.repaint_end,
            extend.retake_seeds) == ("extend", "song.wav", -5.0, 0.0, 12)
    # lora '1' is a Hub-style name read as text, not the number 1.
    assert (a2a.ref_audio, a2a.ref_audio_strength, a2a.lora, a2a.lora_weight) == (
        "ref.wav", 0.25, "1", 2.5
    )
    assert (edit.edit_target_prompt, edit.edit_n_avg, edit.retake_seeds) == ("jazz", 3, None)


def test_task_columns_from_jsonl_with_numbers_as_text(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"prompt": "a", "task": "repaint", "src_audio": "x.wav", "repaint_start": "1.5", '
        '"repaint_end": 4, "retake_variance": "0.25", "retake_seeds": "7"}\n'
        '{"prompt": "b", "task": "retake", "repaint_start": 0, "repaint_end": "0", '
        '"retake_variance": 1, "retake_seeds": 8}\n'
        '{"prompt": "c", "task": "repaint", "src_audio": "x.wav", "repaint_start": "soon", '
        '"repaint_end": 4}\n',
        encoding="utf-8",
    )
    from acestep_batch.manifest import ManifestError

    with pytest.raises(ManifestError) as caught:
        load_manifest(str(path))
    (problem,) = caught.value.problems
    assert (problem.row, problem.column, problem.value) == (3, "repaint_start", "soon")
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n", encoding="utf-8")
    _, specs = load_manifest(str(path))
    first, second = (spec.request for spec in specs)
    assert (first.repaint_start, first.repaint_end, first.retake_variance, first.retake_seeds) == (
        1.5, 4.0, 0.25, 7
    )
    assert (second.retake_variance, second.retake_seeds) == (1.0, 8)
