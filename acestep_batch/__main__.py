"""`python -m acestep_batch ...` is the `acestep-batch` command, for places that run a Python
module rather than a console script (Ray Jobs / KubeRay RayJob entrypoints, containers):

    ray job submit --address http://HEAD:8265 -- \
        python -m acestep_batch submit s3://bucket/m.parquet --output s3://bucket/run1 --address auto
"""

from .cli import main

if __name__ == "__main__":
    main()
