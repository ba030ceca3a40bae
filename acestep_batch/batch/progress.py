"""Live progress for the driver: outputs done, audio seconds per wall second, ETA; plus the
`acestep_pending_outputs` gauge (queue depth) for the Ray dashboard."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class JobProgress:
    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.audio_seconds = total, 0, 0.0
        self.started = time.perf_counter()
        self._gauge = self._make_gauge()
        self._progress = Progress(
            TextColumn("[bold]rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task("render", total=total, rate="")

    @staticmethod
    def _make_gauge():
        try:
            from ray.util import metrics

            return metrics.Gauge("acestep_pending_outputs", "Outputs of the running job not yet written")
        except Exception:
            return None

    def __enter__(self) -> JobProgress:
        self._progress.start()
        self._set_gauge()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def advance(self, audio_seconds: float) -> None:
        self.done += 1
        self.audio_seconds += audio_seconds
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{self.audio_seconds / elapsed:.2f} audio-s/s"
        self._progress.update(self._task, advance=1, rate=rate)
        self._set_gauge()

    def _set_gauge(self) -> None:
        if self._gauge is not None:
            try:
                self._gauge.set(self.total - self.done)
            except Exception:
                pass
