"""Regenerate the KubeRay schemas in this folder from KubeRay's CRD files.

    git clone https://github.com/ray-project/kuberay && git -C kuberay checkout v1.7.0
    python cluster/schemas/extract_crd_schemas.py kuberay/ray-operator/config/crd/bases

For each of RayJob, RayService and RayCluster it takes the `v1` version's `openAPIV3Schema`, drops
`status` (written by the operator, never by users) and every `description`, and writes the rest
unchanged as compact JSON, gzipped without a timestamp so reruns give identical bytes. Making the
schemas strict (no unknown fields) happens in the test that loads them, not here.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml",
             "RayCluster": "ray.io_rayclusters.yaml"}
VERSION = "v1"


def without_descriptions(node):
    if isinstance(node, dict):
        return {key: without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def extract(crd: dict, kind: str) -> dict:
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
        raise ValueError(f"not the CRD of {kind}")
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    schema = without_descriptions(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    return schema


def main(crd_dir: str) -> None:
    for kind, name in CRD_FILES.items():
        crd = yaml.safe_load((Path(crd_dir) / name).read_text())
        data = json.dumps(extract(crd, kind), sort_keys=True, separators=(",", ":")).encode()
        target = HERE / f"{kind.lower()}.{VERSION}.schema.json.gz"
        target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        print(f"{target.name}: {len(data)} bytes of JSON, {target.stat().st_size} gzipped")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
