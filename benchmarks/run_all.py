"""Run the CPU benchmarks (the GPU one needs a CUDA machine: benchmarks/gpu_rtf.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script, args in (("engine_cpu.py", []), ("orchestration_overhead.py", ["--rows", "64"]),
                     ("orchestration_overhead.py", ["--rows", "128"])):
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
