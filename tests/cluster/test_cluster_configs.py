"""The deployment files under cluster/ and jobs/*.yaml: they parse, the KubeRay objects validate
strictly against KubeRay's own CRD schemas (cluster/schemas/), the Ray cluster-launcher config
against Ray's schema, the Serve app's arguments against `ServeConfig`, the job entrypoints
against the `submit` command line, the Grafana dashboard against the metrics the package
defines, and the image definition carries no weights. Offline and fast: nothing is started.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import importlib.machinery
import json
import re
import shlex
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SCHEMAS = CLUSTER / "schemas"
KUBERAY_KINDS = ("RayJob", "RayService", "RayCluster")
# KubeRay's name limits (ray-operator/controllers/ray/utils/constant.go) and DNS-1035 labels.
NAME_LIMITS = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MODELS_CLAIM = "acestep-models"
S3_SECRET = "acestep-s3"


# ------------------------------------------------------------------------------------ loading
def yaml_files() -> list[Path]:
    """Every YAML under cluster/ and directly in jobs/ (jobs/text2samples/ holds job specs, not
    Kubernetes objects)."""
    return sorted(CLUSTER.rglob("*.yaml")) + sorted((REPO / "jobs").glob("*.yaml"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@cache
def documents(path: Path) -> tuple[Any, ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)


def kuberay_objects() -> list[tuple[str, dict]]:
    return [(f"{rel(path)}#{index}", doc) for path in yaml_files() for index, doc in enumerate(documents(path))
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/")]


def find(kind: str, path: str = "") -> dict:
    """The one `kind` object of `path` (default: cluster/rayjob.yaml or cluster/rayservice.yaml)."""
    path = path or {"RayJob": "cluster/rayjob.yaml", "RayService": "cluster/rayservice.yaml"}[kind]
    (doc,) = [d for d in documents(REPO / path) if d.get("kind") == kind]
    return doc


def strict(schema: Any) -> Any:
    """A CRD structural schema as JSON Schema, stricter than the API server: Kubernetes prunes
    unknown fields silently, here they are errors. `x-kubernetes-int-or-string` accepts an
    integer or a string; objects with `x-kubernetes-preserve-unknown-fields` stay open."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        containers = out["properties"].get("containers")
        if containers and containers.get("type") == "array" and "image" in containers["items"].get("properties", {}):
            # Kubernetes leaves `image` optional (a controller may fill it); a Ray pod needs one.
            items = dict(containers["items"])
            items["required"] = sorted({*items.get("required", ()), "name", "image"})
            out["properties"]["containers"] = {**containers, "items": items}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    if "not" in out:
        out["not"] = strict(out["not"])
    return out


@cache
def raw_schema(kind: str) -> dict:
    with gzip.open(SCHEMAS / f"{kind.lower()}.v1.schema.json.gz", "rt") as handle:
        return json.load(handle)


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    schema = strict(raw_schema(kind))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def kube_errors(doc: dict) -> list[str]:
    """Schema errors plus the metadata rules the KubeRay operator enforces."""
    kind = doc.get("kind")
    if kind not in KUBERAY_KINDS:
        return [f"kind {kind!r} is not one of {KUBERAY_KINDS}"]
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator(kind).iter_errors(doc)]
    if doc.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion {doc.get('apiVersion')!r}: expected ray.io/v1 (the schemas are v1)")
    name = (doc.get("metadata") or {}).get("name", "")
    if not DNS_1035.match(name) or len(name) > NAME_LIMITS[kind]:
        errors.append(f"metadata.name {name!r}: a DNS-1035 label of at most {NAME_LIMITS[kind]} characters")
    return errors


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else (
        doc["spec"]["rayClusterConfig"] if doc["kind"] == "RayService" else doc["spec"])


def pod_specs(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (group["groupName"], group["template"]["spec"]) for group in spec.get("workerGroupSpecs", [])]


@cache
def image_ray_version() -> str:
    text = (CLUSTER / "Dockerfile").read_text()
    match = re.search(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-(gpu|cu\d+)", text)
    assert match, "cluster/Dockerfile must build on a GPU rayproject/ray image"
    return match.group(1)


# ------------------------------------------------------------------------------- every YAML
def test_the_expected_files_exist() -> None:
    names = {rel(path) for path in yaml_files()}
    for expected in ("cluster/rayjob.yaml", "cluster/rayservice.yaml", "cluster/cluster-launcher.yaml",
                     "cluster/serve-config.yaml", "cluster/hf-cache.yaml", "jobs/loops-job.yaml"):
        assert expected in names
    assert (CLUSTER / "grafana-dashboard.json").is_file() and (CLUSTER / "Dockerfile").is_file()
    kinds = {where.split("#")[0]: doc["kind"] for where, doc in kuberay_objects()}
    assert {"cluster/rayjob.yaml": "RayJob", "cluster/rayservice.yaml": "RayService",
            "jobs/loops-job.yaml": "RayJob"}.items() <= kinds.items(), kinds


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_every_yaml_parses_to_mappings(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{rel(path)} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping"
        if "apiVersion" in doc:  # a Kubernetes object
            assert doc.get("kind") and (doc.get("metadata") or {}).get("name"), f"{rel(path)}: kind and metadata.name"


# ---------------------------------------------------------------------------- KubeRay schemas
def test_schema_files_are_kuberay_v1_and_small() -> None:
    total = 0
    for kind in KUBERAY_KINDS:
        path = SCHEMAS / f"{kind.lower()}.v1.schema.json.gz"
        total += path.stat().st_size
        schema = raw_schema(kind)
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])
        assert "status" not in schema["properties"]
    assert total < 200_000
    readme = (SCHEMAS / "README.md").read_text()
    assert "ray-project/kuberay" in readme and "Apache-2.0" in readme
    assert re.search(r"\b[0-9a-f]{40}\b", readme), "the README names the source commit"


@pytest.mark.parametrize("where,doc", kuberay_objects(), ids=[where for where, _ in kuberay_objects()])
def test_kuberay_objects_validate_strictly(where: str, doc: dict) -> None:
    assert kube_errors(doc) == []


def _worker(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def _container(doc: dict) -> dict:
    return _worker(doc)["template"]["spec"]["containers"][0]


def _rename(node: dict, old: str, new: str) -> None:
    node[new] = node.pop(old)


# case -> (how to break cluster/rayjob.yaml, a fragment of the expected error)
BROKEN: dict[str, tuple[Callable[[dict], None], str]] = {
    "entrypoint misspelt": (lambda d: _rename(d["spec"], "entrypoint", "entrypint"), "'entrypint' was unexpected"),
    "spec field misspelt": (lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
                            "'shutdownAfterJobFinish' was unexpected"),
    "worker group field misspelt": (lambda d: _rename(_worker(d), "maxReplicas", "maxReplica"), "'maxReplica' was unexpected"),
    "container field misspelt": (lambda d: _rename(_container(d), "volumeMounts", "volumeMount"), "'volumeMount' was unexpected"),
    "unknown field in the pod spec": (lambda d: _worker(d)["template"]["spec"].update(gpus=1), "'gpus' was unexpected"),
    "env entry misspelt": (lambda d: _rename(_container(d)["env"][1], "valueFrom", "valueFrm"), "'valueFrm' was unexpected"),
    "container without image": (lambda d: _container(d).pop("image"), "'image' is a required property"),
    "GPU count not a quantity": (lambda d: _container(d)["resources"]["limits"].update({"nvidia.com/gpu": "one"}),
                                 "'one' does not match"),
    "rayStartParams value not a string": (
        lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        "0 is not of type 'string'"),
    "replicas as a string": (lambda d: _worker(d).update(replicas="4"), "'4' is not of type 'integer'"),
    "no head group": (lambda d: d["spec"]["rayClusterSpec"].pop("headGroupSpec"), "'headGroupSpec' is a required property"),
    "name not a DNS label": (lambda d: d["metadata"].update(name="Acestep_Render"), "DNS-1035"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_rayjob_fails_validation(case: str) -> None:
    doc = copy.deepcopy(find("RayJob"))
    assert kube_errors(doc) == []
    breaker, expected = BROKEN[case]
    breaker(doc)
    errors = kube_errors(doc)
    assert any(expected in error for error in errors), f"{case}: {errors}"


def test_a_misspelt_rayservice_field_fails() -> None:
    doc = copy.deepcopy(find("RayService"))
    doc["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = doc["spec"]["rayClusterConfig"].pop("enableInTreeAutoscaling")
    assert any("enableInTreeAutoscalling" in error for error in kube_errors(doc))


# --------------------------------------------------------------- what the clusters must contain
@pytest.mark.parametrize("where,doc", kuberay_objects(), ids=[where for where, _ in kuberay_objects()])
def test_cluster_layout(where: str, doc: dict) -> None:
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == image_ray_version(), "rayVersion must be the Ray of cluster/Dockerfile"
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "no work on the head"
    images = set()
    for group, pod in pod_specs(spec):
        container = pod["containers"][0]
        images.add(container["image"])
        env = {item["name"]: item for item in container.get("env", [])}
        assert env["HF_HUB_OFFLINE"]["value"] == "1"
        for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == S3_SECRET, f"{group}: {secret} from the Secret"
        mounts = {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}
        claims = {volume["name"]: volume.get("persistentVolumeClaim", {}).get("claimName") for volume in pod.get("volumes", [])}
        assert mounts.get("models") == "/models" and claims.get("models") == MODELS_CLAIM, f"{group}: the Hub cache volume"
        if group != "head":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", f"{group}: one GPU per worker"
    assert len(images) == 1, "head and workers run the same image"
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_hub_cache_volume_and_prefetch_job() -> None:
    docs = {doc["kind"]: doc for doc in documents(CLUSTER / "hf-cache.yaml")}
    claim = docs["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == MODELS_CLAIM and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = docs["Job"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "models", "mountPath": "/models"} in container["volumeMounts"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == MODELS_CLAIM
    assert "HF_HUB_OFFLINE" not in {item["name"] for item in container.get("env", [])}, "the prefetch job downloads"
    script = container["command"][-1]
    compile(script, "prefetch", "exec")
    assert "resolve_checkpoint" in script and "resolve_lyric_vocab" in script


def _submit_options(entrypoint: str) -> dict[str, Any]:
    """Parse a `python -m jobs.render_manifest ...` entrypoint with the real `submit` command
    line (what jobs/render_manifest.py runs), without running it."""
    import typer

    from acestep_batch.cli import app

    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "jobs.render_manifest"], entrypoint
    group = typer.main.get_command(app)
    with group.make_context("acestep-batch", ["submit"]) as parent:
        command = group.get_command(parent, "submit")
        with command.make_context("submit", ["--address", "auto", *argv[3:]], parent=parent) as context:
            return dict(context.params)


@pytest.mark.parametrize("path", ["cluster/rayjob.yaml", "jobs/loops-job.yaml"])
def test_rayjob_submits_a_resumable_gpu_job(path: str) -> None:
    spec = find("RayJob", path)["spec"]
    params = _submit_options(spec["entrypoint"])
    assert params["manifest"].startswith("s3://") and params["output"].startswith("s3://")
    assert params["gpus_per_replica"] == 1.0, "fail fast instead of rendering on CPUs"
    assert not params["overwrite"], "reruns must resume"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        # The job sizes its replica pool from the GPUs present at start; the RayJob starts it
        # once `replicas` pods are up, so they must not be scaled away below that.
        assert group["minReplicas"] == group["replicas"]


def test_a_misspelt_entrypoint_option_fails() -> None:
    with pytest.raises(Exception, match="No such option: --gpu-per-replica"):  # typer's UsageError
        _submit_options("python -m jobs.render_manifest s3://b/m.parquet --output s3://b/run --gpu-per-replica 1")


def test_job_entrypoint_module_is_importable_from_the_repo_root() -> None:
    spec = importlib.machinery.PathFinder.find_spec("jobs", [str(REPO)])
    assert spec is not None and spec.submodule_search_locations
    module = importlib.machinery.PathFinder.find_spec("render_manifest", list(spec.submodule_search_locations))
    assert module is not None and Path(module.origin) == REPO / "jobs" / "render_manifest.py"
    assert re.search(r"^ENV PYTHONPATH=/app$", (CLUSTER / "Dockerfile").read_text(), re.MULTILINE)


# ------------------------------------------------------------------------------------- Serve
def _serve_config_v2() -> dict:
    return yaml.safe_load(find("RayService")["spec"]["serveConfigV2"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic, inside Ray Serve
def test_rayservice_runs_the_same_app_as_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    standalone = documents(CLUSTER / "serve-config.yaml")[0]
    embedded = _serve_config_v2()
    for config in (standalone, embedded):  # what `serve deploy` and the KubeRay operator submit
        ServeDeploySchema.model_validate(config)
    assert embedded == standalone


def test_rayservice_autoscales_gpu_workers_with_serve() -> None:
    cluster = find("RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (app,) = _serve_config_v2()["applications"]
    low, high = app["args"]["autoscale"]
    (group,) = cluster["workerGroupSpecs"]
    assert app["args"]["num_gpus"] == 1.0
    assert (group["minReplicas"], group["maxReplicas"]) == (low, high)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_serve_app_args_are_serve_config_fields_and_build() -> None:
    from ray.serve.deployment import Application

    from acestep_batch.serve.app import ServeConfig, app_builder

    (app,) = _serve_config_v2()["applications"]
    assert app["import_path"] == "acestep_batch.serve.app:app_builder"
    fields = {field.name for field in dataclasses.fields(ServeConfig)}
    assert set(app["args"]) <= fields, sorted(set(app["args"]) - fields)
    assert isinstance(app_builder(copy.deepcopy(app["args"])), Application)  # builds; starts nothing
    with pytest.raises(ValueError, match="unknown ServeConfig fields"):
        app_builder({**app["args"], "num_gpu": 1})


# ---------------------------------------------------------------------------- cluster launcher
@cache
def launcher() -> dict:
    return documents(CLUSTER / "cluster-launcher.yaml")[0]


def test_cluster_launcher_validates_against_rays_schema() -> None:
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = launcher()
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks before it calls the cloud

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cluster_launcher_layout() -> None:
    config = launcher()
    head = config["available_node_types"][config["head_node_type"]]
    workers = [node for name, node in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert any(node["resources"].get("GPU") == 1 and node["max_workers"] >= 1 for node in workers)
    assert config["docker"]["image"] == find("RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert config["file_mounts"] == {}
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert config[key] == [], "everything is in the image"


# ------------------------------------------------------------------------------------ Grafana
PROM_ADDED_LABELS = {"instance", "job", "le"}
# ray/dashboard/consts.py: GPU_TAG_KEYS
RAY_GPU_LABELS = {"ip", "Version", "SessionName", "IsHeadNode", "RayNodeType", "GpuDeviceName", "GpuIndex", "GpuUuid"}


@cache
def package_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (kind, tag keys), parsed from every `metrics.Counter/Gauge/Histogram("...")` call."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for source in sorted((REPO / "acestep_batch").rglob("*.py")):
        text = source.read_text()
        for match in re.finditer(r"metrics\.(Counter|Gauge|Histogram)\(\s*\"([a-z0-9_]+)\"", text):
            call = text[match.end(): match.end() + 400]
            tags = re.search(r"tag_keys=\(([^)]*)\)", call.split("metrics.", 1)[0])
            keys = frozenset(re.findall(r"\"([^\"]+)\"", tags.group(1))) if tags else frozenset()
            found[match.group(2)] = (match.group(1), keys)
    return found


@cache
def ray_node_metrics() -> set[str]:
    import ray

    text = (Path(ray.__file__).parent / "dashboard" / "modules" / "reporter" / "reporter_agent.py").read_text()
    return set(re.findall(r"^\s*\"(node_[a-z_]+)\": Gauge\(", text, re.MULTILINE))


def dashboard_panels() -> list[dict]:
    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def metric_of(series: str) -> tuple[str, str]:
    """A Prometheus series name -> (its source: 'acestep' or 'ray', the metric as defined)."""
    assert series.startswith("ray_"), f"{series}: Ray exports every metric with the ray_ prefix"
    name = series[len("ray_"):]
    metrics = package_metrics()
    if name.startswith("acestep_"):
        if name in metrics:
            return "acestep", name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and metrics.get(base, ("",))[0] == "Histogram":
                return "acestep", base
        raise AssertionError(f"{series}: no metric {name!r} (or histogram series of one) in acestep_batch/")
    assert name in ray_node_metrics(), f"{series}: not a node metric of the installed Ray"
    return "ray", name


def test_the_package_defines_the_documented_metrics() -> None:
    assert set(package_metrics()) >= {
        "acestep_outputs_total", "acestep_audio_seconds_total", "acestep_generate_latency_seconds",
        "acestep_realtime_factor", "acestep_pending_outputs", "acestep_lora_loads_total",
        "acestep_serve_requests_total", "acestep_serve_latency_seconds", "acestep_serve_queue_depth",
        "acestep_serve_batch_size"}
    assert package_metrics()["acestep_serve_requests_total"] == ("Counter", frozenset({"endpoint", "status"}))


def test_grafana_dashboard_queries_only_real_metrics_and_labels() -> None:
    panels = [panel for panel in dashboard_panels() if panel["type"] != "row"]
    assert panels
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            series = re.findall(r"\b(ray_[a-z0-9_]+)\b", expr)
            assert series, f"{panel['title']}: {expr}"
            allowed = set(PROM_ADDED_LABELS)
            for one in series:
                source, name = metric_of(one)
                used.add(name)
                allowed |= package_metrics()[name][1] if source == "acestep" else RAY_GPU_LABELS
            labels = {label for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in re.split(r"\s*,\s*", group.strip())}
            labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"", expr))
            assert labels <= allowed, f"{panel['title']}: labels {sorted(labels - allowed)} are not on {series}"
            for legend_label in re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", target.get("legendFormat", "")):
                assert legend_label in labels, f"{panel['title']}: legend {legend_label} is aggregated away"
    missing = set(package_metrics()) - used
    assert not missing, f"metrics without a panel: {sorted(missing)}"
    assert {"node_gpus_utilization", "node_gram_used"} <= used


# ------------------------------------------------------------------------------------- image
def test_dockerfile_is_a_gpu_image_without_weights() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    instructions = [line for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$|^FROM (rayproject/ray:\S+-(gpu|cu\d+)|nvidia/cuda:\S+)$", text, re.MULTILINE)
    image_ray_version()
    body = "\n".join(instructions)
    for forbidden in ("snapshot_download", "hf download", "huggingface-cli", "hf_hub_download", ".safetensors",
                      ".ckpt", "ACE-Step/ACE-Step-v1", "/models/hf/hub"):
        assert forbidden not in body, f"the image must not fetch or contain weights ({forbidden})"
    copies = [line for line in instructions if line.startswith(("COPY", "ADD"))]
    assert copies and all(not re.search(r"checkpoint|models|\.cache|lora", line) for line in copies), copies
    assert re.search(r"^ENV HF_HOME=/models/hf$", text, re.MULTILINE)
    torch_at = next(i for i, line in enumerate(instructions) if "pip install" in line and "TORCH" in line)
    package_at = next(i for i, line in enumerate(instructions) if re.search(r"pip install .*-e \.", line))
    assert torch_at < package_at, "the CUDA build of torch is installed before the package"
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    ignore = [line for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**", "the build context is a whitelist"
    sources = {word for line in copies for word in line.split()[1:-1] if not word.startswith("--")}
    assert {name[1:] for name in ignore if name.startswith("!")} == sources, "the context holds exactly what is copied"
