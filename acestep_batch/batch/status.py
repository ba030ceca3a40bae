"""`acestep-batch status URI`: what a run has done, from its run.json and metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from ..storage import Storage
from .plan import METADATA_DIR, RUN_FILE


@dataclass
class RunStatus:
    output: str
    state: str  # running / finished / unknown (no run.json)
    total: int | None
    done: int
    failed: int
    pending: int | None
    audio_hours: float
    throughput: float | None  # audio seconds per wall second over the last run
    errors: list[tuple[str, str]]

    def render(self) -> str:
        lines = [f"run {self.output}: {self.state}"]
        total = "?" if self.total is None else str(self.total)
        pending = "?" if self.pending is None else str(self.pending)
        lines.append(f"  outputs: {total} total, {self.done} done, {self.failed} failed, {pending} pending")
        lines.append(f"  audio: {self.audio_hours:.3f} h")
        if self.throughput is not None:
            lines.append(f"  throughput (last run): {self.throughput:.2f} audio-s per s")
        for output_id, error in self.errors[:10]:
            lines.append(f"  failed {output_id}: {error}")
        return "\n".join(lines)


def summarize_run(uri: str, storage_options: dict | None = None) -> RunStatus:
    storage = Storage(uri, storage_options or {})
    record = json.loads(storage.read_text(RUN_FILE)) if storage.exists(RUN_FILE) else {}
    table = storage.read_parquet_dir(METADATA_DIR)
    latest: dict[str, dict] = {}
    if table is not None:
        for row in table.select([c for c in ("output_id", "status", "error", "audio_seconds", "created_at") if c in table.column_names]).to_pylist():
            previous = latest.get(row["output_id"])
            # an ok result wins over failures; otherwise the newest record wins
            if previous is None or row["status"] == "ok" or (previous["status"] != "ok" and row["created_at"] >= previous["created_at"]):
                latest[row["output_id"]] = row
    done = [row for row in latest.values() if row["status"] == "ok"]
    failed = [row for row in latest.values() if row["status"] != "ok"]
    total = record.get("counts", {}).get("outputs")
    throughput = None
    counts = record.get("counts", {})
    if record.get("finished_at") and record.get("started_at") and counts.get("audio_seconds") is not None:
        wall = (datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])).total_seconds()
        throughput = counts["audio_seconds"] / wall if wall > 0 else None
    return RunStatus(
        output=storage.url(), state=record.get("status", "unknown"), total=total, done=len(done), failed=len(failed),
        pending=None if total is None else max(0, total - len(done) - len(failed)),
        audio_hours=sum(float(row.get("audio_seconds") or 0) for row in done) / 3600.0,
        throughput=throughput, errors=[(row["output_id"], (row.get("error") or "").splitlines()[-1:][0] if row.get("error") else "") for row in failed],
    )
