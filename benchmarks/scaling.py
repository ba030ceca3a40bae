"""Replica scaling of `submit` (issue 8): the same manifest rendered with 1, 2 and 4 replicas.

Each run is `run_job` - what `acestep-batch submit` calls - on an embedded local Ray that is
started once before the clock (as on a cluster): Ray Data, `AceStepReplica` actors, the writer
actor stage, metadata and run.json are all inside the timing, and so is every replica's start-up
and model load. Replicas are CPU replicas (`gpus_per_replica=0`) with a fractional CPU
reservation (0.5 by default), so Ray gives each one OMP_NUM_THREADS=1: one replica = one torch
thread, the CPU stand-in for "one replica per GPU". Variants are interleaved (the replica order
rotates every repeat) and medians are reported, because the machine may be shared.

Figures per configuration (tiny checkpoint, and the mid-size transformer of engine_cpu.py) and
replica count: wall time, audio-seconds per wall-second, rows per hour, speedup vs 1 replica,
steady-state rows/s (from the first to the last audio file written, so without the fixed
start-up cost), and peak RSS (VmHWM) of every replica actor process ("memory per replica"),
sampled from /proc while the job runs.

    .venv/bin/python benchmarks/scaling.py [--rows 48] [--out benchmarks/results/scaling.json]

On a machine with C cores, replicas of one thread each cannot scale past ~C x; on a 2-vCPU VM
4 replicas are expected at <= 2x. On a GPU cluster each replica owns a GPU and the only shared
parts are the driver and the writer actors, whose cost orchestration_overhead.py measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Self

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray starts its worker processes at nice 15, so within this job's scheduling group a replica
# yields to the driver and Ray's daemons (and, where the kernel has no autogroup, to every other
# process on the machine). Run them at the default priority like the rest of the benchmark, so that
# every replica count gets the same terms. Set RAY_worker_niceness to override.
os.environ.setdefault("RAY_worker_niceness", "0")

HERE = Path(__file__).resolve().parent


def _manifest(path: Path, rows: int, steps: int, duration: float) -> str:
    """The orchestration benchmark's heterogeneous rows (one definition for both benchmarks)."""
    sys.path.insert(0, str(HERE))
    from orchestration_overhead import _manifest as orchestration_manifest

    return orchestration_manifest(path, rows, steps, duration)


def _title(proc) -> str:
    try:
        return " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - the process may have exited
        return ""


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class ActorMemory:
    """Samples the peak RSS (VmHWM) of this driver's Ray worker processes by their process title
    (`ray::MapWorker(MapBatches(AceStepReplica))`, `...(AudioWriter)`), every `interval` s."""

    def __init__(self, interval: float = 0.25):
        import psutil  # Ray ships it (ray/thirdparty_files)

        self._me = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peaks: dict[int, tuple[str, int]] = {}
        # leftover actors of an earlier job are not this job's (idle pool workers may become ours)
        self._before = {proc.pid for proc in self._me.children(recursive=True) if "MapWorker" in _title(proc)}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        for proc in self._me.children(recursive=True):
            if proc.pid in self._before:
                continue
            title = _title(proc)
            kind = "replica" if "AceStepReplica" in title else "writer" if "AudioWriter" in title else None
            if kind is None and proc.pid in self.peaks:
                kind = self.peaks[proc.pid][0]
            if kind is None:
                continue
            hwm = _vm_hwm_kib(proc.pid)
            if hwm is not None:
                self.peaks[proc.pid] = (kind, max(hwm, self.peaks.get(proc.pid, (kind, 0))[1]))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self._interval)

    def mib(self, kind: str) -> list[float]:
        return sorted(round(kib / 1024, 1) for k, kib in self.peaks.values() if k == kind)

    def pids(self, kind: str) -> list[int]:
        return sorted(pid for pid, (k, _kib) in self.peaks.items() if k == kind)


def wait_for_workers_to_exit(timeout: float = 60.0) -> None:
    """Ray Data stops a finished job's actors asynchronously; wait until they are gone so that the
    next run neither shares the CPU with them nor counts their memory."""
    import gc

    import psutil

    gc.collect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any("MapWorker" in _title(proc) for proc in psutil.Process().children(recursive=True)):
            return
        time.sleep(0.25)


def _steady_rows_per_s(audio_dir: Path, batch_size: int, replicas: int) -> float | None:
    """Rows/s from the first to the last audio file written, the first batch excluded: the rate
    once every replica is loaded, without the fixed start-up cost. None with fewer than two
    batches per replica (the figure would be mostly noise)."""
    times = sorted(p.stat().st_mtime for p in audio_dir.iterdir() if p.is_file())
    if len(times) < 2 * batch_size * replicas or times[-1] - times[0] <= 0:
        return None
    return (len(times) - batch_size) / (times[-1] - times[0])


def _engine_time(output: Path) -> dict:
    """From the job's metadata: sampler-batch wall time (`generate_s`, one value per planned batch,
    repeated on each of its rows) and each replica's busy seconds."""
    import pyarrow.parquet as pq

    table = pq.read_table(output / "metadata", columns=["replica", "generate_s", "batch_size"]).to_pylist()
    busy: dict[str, float] = {}
    for row in table:
        busy[str(row["replica"])] = busy.get(str(row["replica"]), 0.0) + row["generate_s"] / row["batch_size"]
    return {"batch_s_median": statistics.median(row["generate_s"] for row in table),
            "replica_busy_s": sorted(busy.values())}


def run_once(manifest: str, checkpoint: str, output: Path, replicas: int, cpus_per_replica: float,
             batch_size: int) -> dict:
    from acestep_batch.batch.job import JobConfig, run_job

    wait_for_workers_to_exit()
    load_before = os.getloadavg()[0]
    with ActorMemory() as memory:
        started = time.perf_counter()
        summary = run_job(JobConfig(manifest=manifest, output=str(output), checkpoint=checkpoint, batch_size=batch_size,
                                    replicas=replicas, gpus_per_replica=0, cpus_per_replica=cpus_per_replica,
                                    show_progress=False), echo=lambda _line: None)
        wall = time.perf_counter() - started
    assert summary.generated == summary.total and not summary.failed, summary
    return {"replicas": replicas, "wall_s": wall, "audio_s": summary.audio_seconds, "rows": summary.generated,
            "audio_s_per_wall_s": summary.audio_seconds / wall, "rows_per_hour": summary.generated / wall * 3600,
            "steady_rows_per_s": _steady_rows_per_s(output / "audio", batch_size, replicas), **_engine_time(output),
            "replica_peak_rss_mib": memory.mib("replica"), "writer_peak_rss_mib": memory.mib("writer"),
            "replica_pids": memory.pids("replica"),
            "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0]}


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict], replica_counts: list[int], batch_size: int) -> list[dict]:
    rows = []
    base = _median([r["wall_s"] for r in runs if r["replicas"] == replica_counts[0]])
    base_steady = _median([r["steady_rows_per_s"] for r in runs if r["replicas"] == replica_counts[0]])
    for n in replica_counts:
        mine = [r for r in runs if r["replicas"] == n]
        wall = _median([r["wall_s"] for r in mine])
        steady = _median([r["steady_rows_per_s"] for r in mine])
        rss = [m for r in mine for m in r["replica_peak_rss_mib"]]
        rows.append({
            "replicas": n, "repeats": len(mine), "wall_s_median": wall, "wall_s_all": [round(r["wall_s"], 2) for r in mine],
            "audio_s_per_wall_s": _median([r["audio_s_per_wall_s"] for r in mine]),
            "rows_per_hour": _median([r["rows_per_hour"] for r in mine]),
            "speedup_vs_1": base / wall if base and wall else None,
            "steady_rows_per_s": steady,
            "steady_speedup_vs_1": steady / base_steady if steady and base_steady else None,
            "batch_s_median": _median([r["batch_s_median"] for r in mine]),
            # the job starts at most one replica per planned batch
            "replica_busy_fraction": _median([sum(r["replica_busy_s"]) / (min(n, -(-r["rows"] // batch_size)) * r["wall_s"])
                                              for r in mine]),
            "replica_peak_rss_mib_median": _median(rss), "replica_peak_rss_mib_max": max(rss) if rss else None,
            "writer_peak_rss_mib_max": max((m for r in mine for m in r["writer_peak_rss_mib"]), default=None),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], help="tiny and/or mid (engine_cpu.py's CONFIGS)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=2, help="runs per (config, replicas), interleaved")
    parser.add_argument("--rows", type=int, default=48, help="manifest rows (tiny)")
    parser.add_argument("--steps", type=int, default=27, help="sampler steps per row (tiny)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of audio per row, + 0..0.75 s (tiny)")
    parser.add_argument("--mid-rows", type=int, default=24)
    parser.add_argument("--mid-steps", type=int, default=8)
    parser.add_argument("--mid-duration", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cpus-per-replica", type=float, default=0.5,
                        help="Ray CPU reservation per replica (< 2 gives each replica one torch thread)")
    parser.add_argument("--out", "--json", dest="out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    import ray
    import torch

    sys.path.insert(0, str(HERE))
    from engine_cpu import CONFIGS

    from acestep_batch.model.tiny import make_tiny_checkpoint

    shapes = {"tiny": (args.rows, args.steps, args.duration), "mid": (args.mid_rows, args.mid_steps, args.mid_duration)}
    results: dict = {
        "benchmark": "scaling", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "ray": ray.__version__},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "batch_size": args.batch_size, "cpus_per_replica": args.cpus_per_replica, "configs": {},
    }
    order = list(args.replicas)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ray.init(num_cpus=max(8, int(max(args.replicas) * args.cpus_per_replica) + 2), include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            for name in args.configs:
                rows, steps, duration = shapes[name]
                checkpoint = str(make_tiny_checkpoint(root / f"ckpt-{name}", "tiny", 0, CONFIGS[name]))
                manifest = _manifest(root / f"{name}.parquet", rows, steps, duration)
                warm = _manifest(root / f"{name}-warm.parquet", args.batch_size, 2, 1.0)
                run_once(warm, checkpoint, root / f"{name}-warm", 1, args.cpus_per_replica, args.batch_size)  # untimed
                runs = []
                for repeat in range(args.repeats):
                    for n in (order if repeat % 2 == 0 else order[::-1]):
                        run = run_once(manifest, checkpoint, root / f"{name}-{n}-{repeat}", n, args.cpus_per_replica,
                                       args.batch_size)
                        run["repeat"] = repeat
                        runs.append(run)
                        print(f"{name} x{n} (repeat {repeat}): {run['wall_s']:.1f} s, "
                              f"{run['audio_s_per_wall_s']:.2f} audio-s/s, replica peak RSS {run['replica_peak_rss_mib']} MiB, "
                              f"load {run['loadavg_1m_before']:.1f}->{run['loadavg_1m_after']:.1f}", flush=True)
                results["configs"][name] = {"rows": rows, "steps": steps, "duration_s": duration,
                                            "summary": summarise(runs, args.replicas, args.batch_size), "runs": runs}
        finally:
            ray.shutdown()

    for name, config in results["configs"].items():
        print(f"\n{name}: {config['rows']} rows, {config['steps']} steps, {config['duration_s']:g}-{config['duration_s'] + 0.75:g} s "
              f"audio, batch size {args.batch_size}, {args.cpus_per_replica:g} CPU (1 torch thread) per replica; medians")
        print("replicas | wall s | audio-s/s | rows/hour | speedup | steady rows/s | steady speedup | s/batch | busy | "
              "replica peak RSS MiB")
        for r in config["summary"]:
            steady = f"{r['steady_rows_per_s']:.2f}" if r["steady_rows_per_s"] else "-"
            steady_x = f"{r['steady_speedup_vs_1']:.2f}x" if r["steady_speedup_vs_1"] else "-"
            print(f"{r['replicas']:>8} | {r['wall_s_median']:6.1f} | {r['audio_s_per_wall_s']:9.2f} | {r['rows_per_hour']:9.0f} | "
                  f"{r['speedup_vs_1']:6.2f}x | {steady:>13} | {steady_x:>14} | {r['batch_s_median']:7.2f} | "
                  f"{r['replica_busy_fraction']:4.0%} | {r['replica_peak_rss_mib_median']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
