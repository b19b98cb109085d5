"""Names that code and the Helm chart share, in one place.

The chart renders objects with these names and the code refers to them (the rollout
patches `INFERENCE_SERVICE`, pipeline tasks read `CONFIG_MAP` and `SECRET`, TrainJobs use
`TRAINING_RUNTIME`, every workload the Secret of its identity, `identity_secret`).
tests/cluster compares every one of them with the rendered chart, so a rename on one side
fails there.

How settings reach a pod in the cluster: every pod takes the whole platform ConfigMap
(`CONFIG_KEYS`: URLs, names, modes; no secrets) and the Secret of its own identity
(`identity_secret`, keys among `SECRET_KEYS`: its MLflow login, the bucket-scoped S3 keys,
and the Label Studio token and Feast URLs where it needs them) as environment variables,
by reference. Least privilege: only the ConfigMap and `SECRET` (the pipeline identity's)
reach the namespaces where Kubeflow Pipelines runs the steps; the superuser and admin
credentials never leave the chart's datastores and setup Jobs. Nothing of the machine that
compiled a pipeline or built a TrainJob travels with it.
"""

from __future__ import annotations

# The platform image (infra/image/Dockerfile); charts/flywheel/values.yaml global.image.
IMAGE_REPOSITORY = "ghcr.io/flywheel-ml/flywheel"
IMAGE_TAG = "0.1.0"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"

CONFIG_MAP = "flywheel-platform"  # settings every pod reads (envFrom)
PIPELINE_IDENTITY = "pipeline"  # global.mlflowIdentities: the pipeline tasks' identity


def identity_secret(identity: str) -> str:
    """The Secret a workload of MLflow identity `identity` takes by reference (envFrom)."""
    return f"flywheel-{identity}"


SECRET = identity_secret(PIPELINE_IDENTITY)  # what pipeline tasks read ("flywheel-pipeline")
MLFLOW_USERS = "flywheel-mlflow-users"  # MLflow password per identity (key = identity)
POSTGRES_ROLES = "flywheel-postgres-roles"  # Postgres password per service role
INFERENCE_SERVICE = "flywheel"  # the chart's InferenceService; the rollout's target
TRAINING_RUNTIME = "flywheel-torch"  # the chart's hardened TrainingRuntime
ROLE = "flywheel-loop"  # what pipeline steps may do with the Kubernetes API (kube.VERBS)

# In-cluster Services: name -> port (the chart renders each with this port).
SERVICES: dict[str, int] = {
    "mlflow": 5000,
    "label-studio": 8080,
    "feast": 6566,
    "trigger": 8090,
    "postgres": 5432,
    "redis": 6379,
}

# Keys of the platform ConfigMap (each becomes the environment variable of the same name).
CONFIG_KEYS: tuple[str, ...] = (
    "FLYWHEEL_MODE",
    "FLYWHEEL_HOME",
    "FLYWHEEL_HOST",
    "FLYWHEEL_NAMESPACE",
    "FLYWHEEL_IMAGE",
    "FLYWHEEL_MODEL_NAME",
    "FLYWHEEL_MLFLOW_TRACKING_URI",
    "FLYWHEEL_LABEL_STUDIO_URL",
    "FLYWHEEL_TRIGGER_URL",
    "FLYWHEEL_TRIGGER_PORT",
    "FLYWHEEL_TRIGGER_MIN_LABELS",
    "FLYWHEEL_TRIGGER_ACTION",
    "FLYWHEEL_KFP_HOST",
    "FLYWHEEL_FEATURE_REPO",
    "FLYWHEEL_FEAST_OFFLINE_URI",
    "FLYWHEEL_FEAST_S3_ENDPOINT",
    "FLYWHEEL_S3_BUCKET",
    "FLYWHEEL_STATE_URI",
    "FLYWHEEL_TRAIN_GPUS",
    "FLYWHEEL_TRAIN_NUM_NODES",
    "FLYWHEEL_TRAIN_ACCELERATOR",
    "FLYWHEEL_TRAINING_RUNTIME",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_DISABLE_TELEMETRY",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "FEAST_FS_YAML_FILE_PATH",
    "FEAST_USAGE",
)
# Keys of the pipeline identity's Secret (`SECRET`); other identities' hold a subset.
SECRET_KEYS: tuple[str, ...] = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "FLYWHEEL_LABEL_STUDIO_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "FLYWHEEL_FEAST_REGISTRY_URL",
    "FLYWHEEL_FEAST_REDIS_URL",
)
