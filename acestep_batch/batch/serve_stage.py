"""Ray Data stage of `submit --via-serve`: send each planned batch to a running Serve app.

Instead of starting its own `AceStepReplica` actor pool, the job hands every planned batch to
the Serve app's replicas through a DeploymentHandle (`AceStepServe.render_batch`, which runs it
at batch priority: online requests go first). The answer has exactly the columns of
`AceStepReplica.__call__`, so the same `AudioWriter` stage follows and the output layout,
resume and metadata are those of a plain `submit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ServeRenderCaller:
    """Ray Data callable: planned-batch rows in, rendered rows (replica columns) out."""

    def __init__(self, app_name: str) -> None:
        from ray import serve

        self.app_name = app_name
        self.handle = serve.get_app_handle(app_name)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {}
        for specs_json in batch["specs"]:
            part = self.handle.render_batch.remote(str(specs_json)).result()
            for key, values in part.items():
                columns.setdefault(key, []).extend(values)
        return columns


def check_serve_app(app_name: str, sample_rate: int) -> None:
    """Raise ValueError unless a Serve app of that name is running on the connected cluster and
    renders at the job's sample rate."""
    from ray import serve

    try:
        applications = serve.status().applications
    except Exception as error:  # pragma: no cover - Serve not reachable
        raise ValueError(f"--via-serve {app_name}: Ray Serve is not running on this cluster ({error})") from None
    status = applications.get(app_name)
    if status is None:
        found = ", ".join(sorted(applications)) or "none"
        raise ValueError(f"--via-serve {app_name}: no Serve app of that name (running apps: {found}); "
                         "start one with `acestep-batch serve`")
    if str(status.status).split(".")[-1] != "RUNNING":
        raise ValueError(f"--via-serve {app_name}: the Serve app is {status.status}, not RUNNING")
    served = serve.get_app_handle(app_name).describe.remote().result()
    if served.get("sample_rate") != sample_rate:
        raise ValueError(f"--via-serve {app_name}: the app renders at {served.get('sample_rate')} Hz but the job asks "
                         f"for {sample_rate} Hz; pass --sample-rate {served.get('sample_rate')} or restart the app")
