"""`python -m flywheel.rehearsal.executor ARGS`: KFP's executor (`kfp.dsl.executor_main`)
with the pod's artifact mount where this box has it.

In a pipeline pod the KFP launcher downloads input artifacts to, and uploads outputs from,
`/s3/<bucket>/<key>` (the local path KFP gives an `s3://bucket/key` artifact). One box runs
many pods, so each pod's mount is its own folder (`FLYWHEEL_REHEARSAL_S3_MOUNT`); nothing
else differs from the command in the compiled YAML.
"""

import os

from kfp.dsl import executor_main
from kfp.dsl.types import artifact_types

if __name__ == "__main__":
    artifact_types._S3_LOCAL_MOUNT_PREFIX = (
        os.environ["FLYWHEEL_REHEARSAL_S3_MOUNT"].rstrip("/") + "/"
    )
    executor_main.executor_main()
