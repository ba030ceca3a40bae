"""Run every benchmark with one command; JSON results go to benchmarks/results/ (see RESULTS.md).

    .venv/bin/python benchmarks/run_all.py [--quick] [--only scaling serve_latency ...]

The CPU benchmarks always run; gpu_rtf.py runs only where CUDA is available (otherwise
results/gpu_rtf.json records "not run"). `--quick` shortens each run (smoke test, not for
recording). Every script is a separate process, one after the other, so no two benchmarks share
the machine with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

# name -> (script, full arguments, quick arguments); each also gets --json/--out RESULTS/<name>.json
BENCHMARKS = {
    "engine_cpu": ("engine_cpu.py", [], ["--duration", "2", "--steps", "2"]),
    "orchestration_overhead_64": ("orchestration_overhead.py", ["--rows", "64"], ["--rows", "8", "--steps", "2"]),
    "orchestration_overhead_128": ("orchestration_overhead.py", ["--rows", "128"], ["--rows", "8", "--steps", "2"]),
    "serve_latency": ("serve_latency.py", [], ["--requests", "5", "--rows", "8", "--seconds", "3", "--clients", "4"]),
    "scaling": ("scaling.py", [], ["--rows", "8", "--steps", "2", "--mid-rows", "8", "--mid-steps", "1", "--repeats", "1"]),
    "gpu_rtf": ("gpu_rtf.py", [], ["--duration", "10", "--steps", "2", "--batch", "1", "2"]),
}


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _machine() -> dict:
    import ray
    import torch

    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
                  .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    memory = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    return {"cpu": model, "logical_cpus": os.cpu_count(), "memory_gib": round(memory, 1) if memory else None,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "loadavg": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run just these")
    parser.add_argument("--quick", action="store_true", help="short runs: checks the scripts work, figures are not meaningful")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    failed = []
    index_path = args.results / "index.json"
    previous = json.loads(index_path.read_text()).get("runs", {}) if args.only and index_path.exists() else {}
    index = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": _machine(), "quick": args.quick,
             "runs": previous}  # with --only, the other benchmarks' entries stay
    for name, (script, full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        out = args.results / f"{name}.json"
        if name == "gpu_rtf" and not _cuda():
            print(f"== {name}: not run (no CUDA GPU here); run `python benchmarks/gpu_rtf.py --json "
                  f"{os.path.relpath(out, ROOT)}` on a GPU", flush=True)
            out.write_text(json.dumps({"benchmark": name, "status": "not run: no CUDA GPU on this machine",
                                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                       "machine": platform.platform()}, indent=2))
            continue
        command = [sys.executable, f"benchmarks/{script}", *(quick if args.quick else full), "--json", os.path.relpath(out, ROOT)]
        print(f"== {name}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        print(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
        index["runs"][name] = {"command": " ".join(["python", *command[1:]]), "exit": code,
                               "seconds": round(time.perf_counter() - started, 1), "json": out.name,
                               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "loadavg_after": os.getloadavg()}
        index_path.write_text(json.dumps(index, indent=2))
        if code:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
