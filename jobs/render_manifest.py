"""Ray Jobs entrypoint: render a manifest on the cluster this job runs in.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python jobs/render_manifest.py manifests/loops.parquet --output s3://bucket/loops-run1

It is `acestep-batch submit --address auto` with the same options; the job's driver runs on the
head node, the replicas on the GPU workers.
"""

from __future__ import annotations

import sys

from acestep_batch.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "submit", "--address", "auto", *sys.argv[1:]]
    main()
