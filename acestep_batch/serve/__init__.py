"""Online generation: a Ray Serve app (FastAPI ingress) around the batch job's `AceStepReplica`."""

from .app import APP_NAME, ServeConfig, build_app

__all__ = ["APP_NAME", "ServeConfig", "build_app"]
