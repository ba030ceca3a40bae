"""`acestep-batch` command line (typer). Thin: every command calls into the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .model.request import DEFAULT_CHECKPOINT, GenerationRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Dataset-scale music generation with ACE-Step v1 on Ray.")
manifest_app = typer.Typer(no_args_is_help=True, help="Manifest tools.")
model_app = typer.Typer(no_args_is_help=True, help="Checkpoint tools.")
app.add_typer(manifest_app, name="manifest")
app.add_typer(model_app, name="model")

EXIT_BAD_INPUT = 2
_DEFAULTS = GenerationRequest(prompt="")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _storage_options(text: Optional[str]) -> dict:
    from .storage import parse_storage_options

    try:
        return parse_storage_options(text)
    except ValueError as error:
        _fail(f"--storage-options: {error}")
        return {}


def _loop_options(loops: bool, loudness: str, target_lufs: float, true_peak: float, crossfade_ms: float,
                  max_attempts: int, qc_bpm: bool, qc_key: bool, fmt: str, bit_depth: str):
    """The --loops settings (None without --loops), checked before anything starts."""
    from .audio.postprocess import LOOP_BIT_DEPTHS, LOUDNESS_MODES, LoopOptions

    if not loops:
        return None
    if loudness not in LOUDNESS_MODES:
        _fail(f"--loudness must be one of {', '.join(LOUDNESS_MODES)}, got {loudness!r}")
    if fmt == "wav" and bit_depth not in LOOP_BIT_DEPTHS:
        _fail("--loops writes 16- or 24-bit WAV (with ACID/smpl chunks): use --bit-depth 16 or 24")
    return LoopOptions(loudness=loudness, target_lufs=target_lufs, peak_dbfs=true_peak, ceiling_dbtp=true_peak,
                       crossfade_s=crossfade_ms / 1000.0, check_bpm=qc_bpm, check_key=qc_key, max_attempts=max_attempts)


def _precheck_checkpoint(checkpoint: str, revision: Optional[str]) -> None:
    """Catch a wrong local checkpoint on the driver, before any replica starts."""
    from .model.checkpoint import CheckpointError, resolve_checkpoint

    if Path(checkpoint).expanduser().exists():
        try:
            resolve_checkpoint(checkpoint, revision)
        except CheckpointError as error:
            _fail(f"checkpoint: {error}")


@app.command()
def submit(
    manifest: str = typer.Argument(..., help="Parquet/JSONL/CSV manifest: a file or folder, local or any fsspec URL."),
    output: str = typer.Option(..., "--output", "-o", help="Output prefix: a local folder or fsspec URL (s3://bucket/run1)."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, help="Local checkpoint folder or Hugging Face repo id."),
    revision: Optional[str] = typer.Option(None, help="Hub revision of the checkpoint."),
    lyric_vocab: Optional[str] = typer.Option(None, help="Path of the lyric BPE vocabulary (vocab.json)."),
    address: Optional[str] = typer.Option(None, help="Ray address ('auto', 'ray://host:10001'); default: embedded local Ray."),
    replicas: Optional[int] = typer.Option(None, min=1, help="Model replicas; default one per GPU, or 1 without GPUs."),
    gpus_per_replica: Optional[float] = typer.Option(None, min=0.0, help="GPUs per replica (default 1 with GPUs)."),
    cpus_per_replica: float = typer.Option(1.0, min=0.0, help="CPUs reserved per replica."),
    batch_size: int = typer.Option(4, min=1, help="Outputs per sampler batch (items with equal steps/scheduler)."),
    format: str = typer.Option("wav", "--format", help="wav, flac, ogg or mp3 (a manifest 'format' column overrides)."),
    sample_rate: int = typer.Option(44100, help="44100 (the model's rate) or 48000 (resampled, as upstream writes)."),
    bit_depth: str = typer.Option("24", help="16, 24 or float (wav/flac; float is wav only)."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options (S3 endpoint, keys)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 or float32; default bf16 on CUDA, fp32 on CPU."),
    overwrite: bool = typer.Option(False, help="Re-render everything instead of resuming."),
    dry_run: bool = typer.Option(False, help="Validate and plan, then stop without rendering."),
    num_cpus: Optional[int] = typer.Option(None, help="Embedded Ray only: logical CPUs."),
    num_gpus: Optional[int] = typer.Option(None, help="Embedded Ray only: logical GPUs."),
    dashboard: bool = typer.Option(False, help="Embedded Ray only: start the Ray dashboard on 127.0.0.1:8265."),
    progress: bool = typer.Option(True, help="Show the live progress bar."),
    lora_cache_size: int = typer.Option(4, min=1, help="LoRA adapters each replica keeps loaded (LRU)."),
    loops: bool = typer.Option(False, help="Post-process outputs as loops: cut to the bar length from the 'bpm'/'bars' "
                                           "columns, seamless crossfade, loudness, QC, WAV with ACID/smpl chunks."),
    loudness: str = typer.Option("lufs", help="--loops: lufs (integrated, with a true-peak ceiling), peak, or none."),
    target_lufs: float = typer.Option(-14.0, help="--loops: integrated loudness target (LUFS)."),
    true_peak: float = typer.Option(-1.0, help="--loops: true-peak ceiling in lufs mode / target in peak mode (dBTP)."),
    crossfade_ms: float = typer.Option(50.0, min=0.0, help="--loops: tail-into-head crossfade that makes the loop seamless."),
    max_attempts: int = typer.Option(3, min=1, help="--loops: renders per output (new seed each) before a QC failure is set aside."),
    qc_bpm: bool = typer.Option(True, help="--loops: require the estimated tempo to match 'bpm' (octave errors allowed)."),
    qc_key: bool = typer.Option(True, help="--loops: require the estimated key to match 'key' (relative key allowed)."),
    via_serve: Optional[str] = typer.Option(
        None, "--via-serve", metavar="[APP]",
        help="Render on a running `acestep-batch serve` app (default name 'acestep') instead of starting "
             "replicas; joins Ray at --address (default 'auto'). Online requests keep priority."),
) -> None:
    """Render every output of MANIFEST to OUTPUT (resumable: finished outputs are skipped)."""
    from .audio.encode import AUDIO_FORMATS, BIT_DEPTHS
    from .batch.job import JobConfig, run_job
    from .manifest import ManifestError

    if format not in AUDIO_FORMATS:
        _fail(f"--format must be one of {', '.join(AUDIO_FORMATS)}, got {format!r}")
    if bit_depth not in BIT_DEPTHS:
        _fail(f"--bit-depth must be one of {', '.join(BIT_DEPTHS)}, got {bit_depth!r}")
    if format == "flac" and bit_depth == "float":
        _fail("--bit-depth float is not possible with FLAC; use 16 or 24")
    if sample_rate not in (44100, 48000):
        _fail(f"--sample-rate must be 44100 or 48000, got {sample_rate}")
    if via_serve is None:
        _precheck_checkpoint(checkpoint, revision)
    elif address is None:
        address = "auto"  # the serve command's Ray instance (or a cluster) on this machine
    config = JobConfig(
        manifest=manifest, output=output, checkpoint=checkpoint, revision=revision, lyric_vocab=lyric_vocab,
        dtype=dtype, address=address, replicas=replicas, gpus_per_replica=gpus_per_replica,
        cpus_per_replica=cpus_per_replica, batch_size=batch_size, format=format, sample_rate=sample_rate,
        bit_depth=bit_depth, storage_options=_storage_options(storage_options), overwrite=overwrite,
        dry_run=dry_run, local_num_cpus=num_cpus, local_num_gpus=num_gpus, dashboard=dashboard, show_progress=progress,
        via_serve=via_serve, lora_cache_size=lora_cache_size,
        loops=_loop_options(loops, loudness, target_lufs, true_peak, crossfade_ms, max_attempts, qc_bpm, qc_key, format,
                            bit_depth),
    )
    try:
        summary = run_job(config, echo=typer.echo)
    except ManifestError as error:
        _fail(str(error))
        return
    except ValueError as error:
        if via_serve is None:
            raise
        _fail(str(error))
        return
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def status(
    uri: str = typer.Argument(..., help="Output prefix of a run."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options."),
) -> None:
    """Summarise a run: done / failed / pending, audio hours, throughput."""
    from .batch.status import summarize_run

    typer.echo(summarize_run(uri, _storage_options(storage_options)).render())


@app.command()
def report(
    uri: str = typer.Argument(..., help="Output prefix of a run."),
    out: Optional[str] = typer.Option(None, "--out", help="Report folder or .html file (local or fsspec URL); default RUN/report/index.html."),
    max_samples: Optional[int] = typer.Option(None, min=0, help="Sample cards on the page (default 2000, in manifest order); the summary plots count every output."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options."),
) -> None:
    """Write a static HTML browser of a run: players, waveforms, spectrograms, tags, QC, filters, summary plots."""
    from .report import ReportError, build_report

    options = _storage_options(storage_options)
    try:
        url = build_report(uri, options, out=out, max_samples=max_samples)
    except ReportError as error:
        _fail(str(error))
        return
    typer.echo(f"wrote report {url}")


@app.command()
def generate(
    prompt: str = typer.Option(..., help="Tags / caption."),
    out: Path = typer.Option(..., help="Output audio file (.wav, .flac, .ogg or .mp3)."),
    lyrics: str = typer.Option("", help="Lyrics (empty: instrumental); '\\n' separates lines."),
    duration: float = typer.Option(30.0, min=1.0, max=240.0, help="Seconds."),
    seed: int = typer.Option(0, min=0),
    steps: int = typer.Option(_DEFAULTS.steps, min=1),
    guidance_scale: float = typer.Option(_DEFAULTS.guidance_scale),
    scheduler: str = typer.Option(_DEFAULTS.scheduler, help="euler, heun or pingpong."),
    cfg_type: str = typer.Option(_DEFAULTS.cfg_type, help="apg, cfg or cfg_star."),
    omega_scale: float = typer.Option(_DEFAULTS.omega_scale),
    guidance_interval: float = typer.Option(_DEFAULTS.guidance_interval),
    guidance_interval_decay: float = typer.Option(_DEFAULTS.guidance_interval_decay),
    min_guidance_scale: float = typer.Option(_DEFAULTS.min_guidance_scale),
    guidance_scale_text: float = typer.Option(_DEFAULTS.guidance_scale_text),
    guidance_scale_lyric: float = typer.Option(_DEFAULTS.guidance_scale_lyric),
    use_erg_tag: bool = typer.Option(_DEFAULTS.use_erg_tag),
    use_erg_lyric: bool = typer.Option(_DEFAULTS.use_erg_lyric),
    use_erg_diffusion: bool = typer.Option(_DEFAULTS.use_erg_diffusion),
    oss_steps: str = typer.Option("", help="Comma-separated step indices (euler/pingpong)."),
    task: str = typer.Option("text2music", help="text2music, retake, repaint, extend, edit or audio2audio."),
    src_audio: str = typer.Option("", help="Source audio (repaint, extend, edit): a path or fsspec URL."),
    ref_audio: str = typer.Option("", help="Reference audio (audio2audio): a path or fsspec URL."),
    ref_audio_strength: float = typer.Option(_DEFAULTS.ref_audio_strength, min=0.0, max=1.0),
    retake_seeds: Optional[int] = typer.Option(None, min=0, help="Retake noise seed (default: derived from --seed)."),
    retake_variance: float = typer.Option(_DEFAULTS.retake_variance, min=0.0, max=1.0),
    repaint_start: float = typer.Option(_DEFAULTS.repaint_start, help="Seconds; negative extends on the left."),
    repaint_end: float = typer.Option(_DEFAULTS.repaint_end, help="Seconds; past the source's end extends on the right."),
    edit_target_prompt: str = typer.Option("", help="edit: the new tags (default: --prompt)."),
    edit_target_lyrics: str = typer.Option("", help="edit: the new lyrics (default: --lyrics)."),
    edit_n_min: float = typer.Option(_DEFAULTS.edit_n_min, min=0.0, max=1.0),
    edit_n_max: float = typer.Option(_DEFAULTS.edit_n_max, min=0.0, max=1.0),
    edit_n_avg: int = typer.Option(_DEFAULTS.edit_n_avg, min=1),
    lora: str = typer.Option("", help="LoRA adapter: folder, fsspec URL or Hub repo id."),
    lora_weight: float = typer.Option(_DEFAULTS.lora_weight),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT),
    revision: Optional[str] = typer.Option(None),
    lyric_vocab: Optional[str] = typer.Option(None),
    sample_rate: int = typer.Option(44100, help="44100 or 48000."),
    bit_depth: str = typer.Option("24", help="16, 24 or float."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1; default: cuda if available."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 or float32."),
) -> None:
    """Render one request to a file (loads the model, renders, writes, exits)."""
    from .audio.encode import FILE_EXTENSIONS, encode_audio
    from .audio.qc import check_audio
    from .model.checkpoint import CheckpointError
    from .model.pipeline import AceStepPipeline, EngineConfig

    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FILE_EXTENSIONS:
        _fail(f"--out must end in one of {', '.join('.' + e for e in FILE_EXTENSIONS.values())}")
    request = GenerationRequest(
        prompt=prompt, lyrics=lyrics.replace("\\n", "\n"), duration=duration, seed=seed, steps=steps,
        scheduler=scheduler, cfg_type=cfg_type, guidance_scale=guidance_scale, omega_scale=omega_scale,
        guidance_interval=guidance_interval, guidance_interval_decay=guidance_interval_decay,
        min_guidance_scale=min_guidance_scale, guidance_scale_text=guidance_scale_text,
        guidance_scale_lyric=guidance_scale_lyric, use_erg_tag=use_erg_tag, use_erg_lyric=use_erg_lyric,
        use_erg_diffusion=use_erg_diffusion, oss_steps=oss_steps, task=task, src_audio=src_audio,
        ref_audio=ref_audio, ref_audio_strength=ref_audio_strength, retake_seeds=retake_seeds,
        retake_variance=retake_variance, repaint_start=repaint_start, repaint_end=repaint_end,
        edit_target_prompt=edit_target_prompt, edit_target_lyrics=edit_target_lyrics.replace("\\n", "\n"),
        edit_n_min=edit_n_min, edit_n_max=edit_n_max, edit_n_avg=edit_n_avg, lora=lora, lora_weight=lora_weight,
    )
    try:
        from .audio.inputs import AudioInputError, load_audio_input

        inputs = {uri: load_audio_input(uri) for uri in (src_audio, ref_audio) if uri}
        pipeline = AceStepPipeline.from_checkpoint(EngineConfig(
            checkpoint=checkpoint, revision=revision, lyric_vocab=lyric_vocab, device=device, dtype=dtype))
        result = pipeline.generate([request], sample_rate=sample_rate, inputs=inputs)[0]
    except (CheckpointError, ValueError, AudioInputError) as error:
        _fail(str(error))
        return
    wave = result.audio.numpy()
    report = check_audio(wave)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode_audio(wave, result.sample_rate, fmt, bit_depth))
    typer.echo(f"wrote {out}: {wave.shape[1] / result.sample_rate:.3f} s, {wave.shape[0]} ch, {result.sample_rate} Hz, "
               f"peak {report.peak_dbfs:.1f} dBFS; seed {request.seed}; "
               + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items() if k.endswith("_s")))
    if not report.ok:
        _fail("quality check: " + "; ".join(report.problems), code=1)


def _parse_autoscale(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        _fail(f"--autoscale must look like MIN:MAX (e.g. 1:4), got {text!r}")
        return None
    if low < 0 or high < max(1, low):
        _fail(f"--autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return low, high


@app.command()
def serve(
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, help="Local checkpoint folder or Hugging Face repo id."),
    revision: Optional[str] = typer.Option(None, help="Hub revision of the checkpoint."),
    lyric_vocab: Optional[str] = typer.Option(None, help="Path of the lyric BPE vocabulary (vocab.json)."),
    dtype: Optional[str] = typer.Option(None, help="bfloat16 or float32; default bf16 on CUDA, fp32 on CPU."),
    replicas: int = typer.Option(1, min=1, help="Serve replicas (one resident model each)."),
    autoscale: Optional[str] = typer.Option(None, help="MIN:MAX replicas with Serve autoscaling (overrides --replicas)."),
    gpus_per_replica: float = typer.Option(0.0, min=0.0, help="GPUs per replica (1 on a GPU machine)."),
    cpus_per_replica: float = typer.Option(0.5, min=0.0, help="CPUs reserved per replica (fractional leaves room for --via-serve jobs)."),
    host: str = typer.Option("127.0.0.1", help="HTTP host to bind."),
    port: int = typer.Option(8000, min=0, max=65535, help="HTTP port."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where ?store=true and /v1/tasks write audio (local folder or fsspec URL)."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options."),
    api_key_env: Optional[str] = typer.Option(None, help="Name of an env var holding a bearer key; requests without it get 401."),
    address: Optional[str] = typer.Option(None, help="Ray address ('auto', 'ray://host:10001'); default: embedded local Ray."),
    name: str = typer.Option("acestep", help="Serve application name (what `submit --via-serve NAME` uses)."),
    format: str = typer.Option("wav", "--format", help="Default audio format (a request's 'format' overrides)."),
    sample_rate: int = typer.Option(44100, help="44100 or 48000."),
    bit_depth: str = typer.Option("24", help="16, 24 or float (wav/flac)."),
    max_batch_size: int = typer.Option(4, min=1, help="Online requests gathered into one engine call."),
    batch_wait_ms: float = typer.Option(50.0, min=0.0, help="How long the first request waits for others to join its batch."),
    max_queued: int = typer.Option(16, min=1, help="Online requests waiting per replica before 503 + Retry-After."),
    max_duration: float = typer.Option(240.0, min=1.0, max=240.0, help="Longest duration a request may ask for (seconds)."),
    max_steps: int = typer.Option(200, min=1, help="Most sampler steps a request may ask for."),
    request_timeout: float = typer.Option(600.0, min=1.0, help="Seconds before a waiting request answers 504."),
    num_cpus: Optional[int] = typer.Option(None, help="Embedded Ray only: logical CPUs."),
    num_gpus: Optional[int] = typer.Option(None, help="Embedded Ray only: logical GPUs."),
    ready_file: Optional[Path] = typer.Option(None, help="Write the base URL to this file once the app answers /v1/health."),
    allow_input_prefix: list[str] = typer.Option([], help="A folder or URL prefix requests may read src_audio/ref_audio/lora from (repeatable; none by default)."),
    max_upload_mb: float = typer.Option(32.0, min=0.0, help="Largest inline audio upload (data: URI), MiB."),
    allow_hub_lora: bool = typer.Option(False, help="Let requests name Hugging Face Hub repo ids as LoRA adapters."),
    lora_cache_size: int = typer.Option(4, min=1, help="LoRA adapters each replica keeps loaded (LRU)."),
) -> None:
    """Serve online generation over HTTP (Ray Serve, FastAPI; OpenAPI at /docs) until Ctrl-C."""
    from .audio.encode import AUDIO_FORMATS, BIT_DEPTHS
    from .serve.app import ServeConfig, ServeRunOptions, run_server

    if format not in AUDIO_FORMATS:
        _fail(f"--format must be one of {', '.join(AUDIO_FORMATS)}, got {format!r}")
    if bit_depth not in BIT_DEPTHS:
        _fail(f"--bit-depth must be one of {', '.join(BIT_DEPTHS)}, got {bit_depth!r}")
    if sample_rate not in (44100, 48000):
        _fail(f"--sample-rate must be 44100 or 48000, got {sample_rate}")
    if api_key_env is not None and not os.environ.get(api_key_env):
        _fail(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    _precheck_checkpoint(checkpoint, revision)
    config = ServeConfig(
        checkpoint=checkpoint, revision=revision, lyric_vocab=lyric_vocab, dtype=dtype, sample_rate=sample_rate,
        format=format, bit_depth=bit_depth, output=output, storage_options=_storage_options(storage_options),
        api_key_env=api_key_env, replicas=replicas, autoscale=_parse_autoscale(autoscale), num_cpus=cpus_per_replica,
        num_gpus=gpus_per_replica, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, max_queued=max_queued,
        max_duration=max_duration, max_steps=max_steps, request_timeout_s=request_timeout,
        allow_input_prefixes=tuple(allow_input_prefix), max_upload_bytes=int(max_upload_mb * 2**20),
        allow_hub_lora=allow_hub_lora, lora_cache_size=lora_cache_size,
    )
    options = ServeRunOptions(host=host, port=port, address=address, app_name=name, num_cpus=num_cpus,
                              num_gpus=num_gpus, ready_file=str(ready_file) if ready_file else None)
    raise typer.Exit(run_server(config, options, echo=typer.echo))


@manifest_app.command("validate")
def manifest_validate(
    manifest: str = typer.Argument(..., help="Manifest file or folder (local or fsspec URL)."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options."),
) -> None:
    """Check every row and report every problem at once (exit 2 when there are problems)."""
    from .manifest import ManifestError, load_manifest

    try:
        table, specs = load_manifest(manifest, _storage_options(storage_options))
    except ManifestError as error:
        _fail(str(error))
        return
    typer.echo(f"{manifest}: OK, {table.num_rows} rows -> {len(specs)} outputs")


@manifest_app.command("expand")
def manifest_expand(
    spec: str = typer.Argument(..., help="Text2Samples job spec (YAML; see jobs/text2samples/README.md), local or fsspec URL."),
    output: str = typer.Option(..., "--output", "-o", help="Manifest to write: .parquet, .jsonl or .csv (local or fsspec URL)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Keep only the first N rows (a quick trial)."),
    storage_options: Optional[str] = typer.Option(None, help="JSON object of fsspec storage options."),
) -> None:
    """Turn a loop-library spec (axes, tempos, keys, bars, templates) into a manifest."""
    from .manifest import manifest_warnings
    from .manifest.text2samples import SpecError, check_table, describe_table, expand_spec, load_spec, write_manifest

    options = _storage_options(storage_options)
    try:
        table = expand_spec(load_spec(spec, options), validate=False)
        if limit is not None:
            table = table.slice(0, limit)
        check_table(table, spec)  # what `submit` checks: a spec never yields a rejected manifest
    except SpecError as error:
        _fail(str(error))
        return
    try:
        write_manifest(table, output, options)
    except (ValueError, OSError) as error:
        _fail(f"--output: {error}")
        return
    for warning in manifest_warnings(table):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{spec}: {describe_table(table)} -> {output}")


@model_app.command("make-tiny")
def model_make_tiny(
    directory: Path = typer.Argument(..., help="Where to write the checkpoint."),
    profile: str = typer.Option("tiny", help="tiny (fast, CPU tests) or parity (loads in upstream too)."),
    seed: int = typer.Option(0, help="Weights are a deterministic function of (profile, seed)."),
) -> None:
    """Write a random-weight checkpoint in the official four-folder layout."""
    from .model.tiny import PROFILES, make_tiny_checkpoint

    if profile not in PROFILES:
        _fail(f"--profile must be one of {', '.join(PROFILES)}")
    path = make_tiny_checkpoint(directory, profile=profile, seed=seed)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    typer.echo(f"wrote {profile} checkpoint to {path} ({size / 2**20:.1f} MiB)")


@model_app.command("make-tiny-lora")
def model_make_tiny_lora(
    directory: Path = typer.Argument(..., help="Folder to write pytorch_lora_weights.safetensors into."),
    checkpoint: Path = typer.Option(..., help="The checkpoint folder the adapter is for (its transformer config sets the shapes)."),
    rank: int = typer.Option(4, min=1, help="LoRA rank r."),
    seed: int = typer.Option(0, help="Weights are a deterministic function of (checkpoint config, rank, seed)."),
    with_metadata: bool = typer.Option(False, help="Write lora_adapter_metadata (r, alpha, rsLoRA) into the header, as newer diffusers do."),
    alpha: Optional[float] = typer.Option(None, help="lora_alpha recorded in the metadata (default: r)."),
    rslora: bool = typer.Option(False, help="Record use_rslora=true in the metadata."),
) -> None:
    """A random LoRA adapter in upstream's file layout, for tests and demos."""
    from .model.lora import make_tiny_lora
    from .model.pipeline import transformer_skeleton

    path = make_tiny_lora(directory, transformer_skeleton(checkpoint), rank=rank, seed=seed,
                          with_metadata=with_metadata, alpha=alpha, use_rslora=rslora)
    typer.echo(f"wrote LoRA adapter {path} ({path.stat().st_size / 2**10:.0f} KiB)")


@model_app.command("info")
def model_info(
    checkpoint: Optional[Path] = typer.Option(None, help="A local checkpoint folder; default: the full-size configuration."),
) -> None:
    """Parameter counts and bf16 memory per component (built on the meta device)."""
    from .model.info import component_infos

    infos = component_infos(checkpoint)
    typer.echo(f"{'component':<14}{'parameters':>16}{'bf16 GiB':>10}")
    for info in infos:
        typer.echo(f"{info.name:<14}{info.parameters:>16,}{info.bf16_gib:>10.3f}")
        for name, count in info.detail.items():
            typer.echo(f"  {name:<28}{count:>16,}")
    total = sum(info.parameters for info in infos)
    typer.echo(f"{'total':<14}{total:>16,}{total * 2 / 2**30:>10.3f}")


def default_option_values(argv: list[str]) -> list[str]:
    """`--via-serve` may be given without a value (typer has no optional-value options): a bare
    `--via-serve` (last, or followed by another option) means the default app 'acestep'."""
    result: list[str] = []
    for index, arg in enumerate(argv):
        result.append(arg)
        if arg == "--via-serve" and (index + 1 == len(argv) or argv[index + 1].startswith("-")):
            result.append("acestep")
    return result


def main() -> None:
    sys.argv[1:] = default_option_values(sys.argv[1:])
    sys.exit(app())


if __name__ == "__main__":
    main()
