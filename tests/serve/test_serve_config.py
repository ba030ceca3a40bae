"""cluster/serve-config.yaml is a valid Serve deploy config whose args build the app."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from acestep_batch.serve.app import DEPLOYMENT_NAME, app_builder

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve-config.yaml"


def test_serve_config_is_valid_and_builds() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(raw)
    (app,) = schema.applications
    assert app.import_path == "acestep_batch.serve.app:app_builder" and app.name == "acestep"
    built = app_builder(app.args)
    deployment = built._bound_deployment
    assert deployment.name == DEPLOYMENT_NAME
    assert deployment._deployment_config.autoscaling_config.max_replicas == 4
    assert deployment.ray_actor_options["num_gpus"] == 1.0


def test_app_builder_rejects_unknown_args() -> None:
    with pytest.raises(ValueError, match="unknown ServeConfig fields"):
        app_builder({"checkpoint": "x", "max_batchsize": 3})
