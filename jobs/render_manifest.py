"""Ray Jobs entrypoint: render a manifest on the cluster this job runs in.

    # from a checkout (the working dir is uploaded with the job):
    ray job submit --address http://<head>:8265 --working-dir . -- \
        python -m jobs.render_manifest manifests/loops.parquet --output s3://bucket/loops-run1
    # where the package is installed on the cluster (image of cluster/Dockerfile, a venv):
    ray job submit --address http://<head>:8265 -- \
        python -m acestep_batch submit s3://bucket/m.parquet --output s3://bucket/run1 --address auto

It is `acestep-batch submit --address auto` with the same options (the cluster-side entrypoint of
`cluster/rayjob.yaml`); the job's driver runs on the head node, the replicas on the GPU workers.
tests/batch/test_ray_job_submit.py submits both forms to a local `ray start --head` cluster.
"""

from __future__ import annotations

import sys

from acestep_batch.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "submit", "--address", "auto", *sys.argv[1:]]
    main()
