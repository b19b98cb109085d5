"""The cluster path: a Kubeflow Trainer v2 TrainJob that runs our entry point.

`build_trainjob` uses the Kubeflow SDK (`kubeflow.trainer`, 0.5.0) to turn a
`CustomTrainerContainer` (our image, numNodes, GPUs per node, environment) into the
TrainJob's trainer, sets the command to the same entry point as on the dev box
(`torchrun -m flywheel.training ...`), and refers to the `torch-distributed`
ClusterTrainingRuntime. The runtime's torch plugin sets PET_NNODES, PET_NPROC_PER_NODE,
PET_NODE_RANK and PET_MASTER_ADDR/PORT, which torchrun reads as its defaults, so the
command has no rendezvous flags. The result is a plain dict, checked offline with
`flywheel.crds.validate_custom_resource`. `run_trainjob` submits it, waits, and reads the
result back from MLflow (the run is tagged `trainjob=<name>`); it needs a cluster and is
not exercised by the tests.
"""

from __future__ import annotations

RUNTIME = "torch-distributed"


def build_trainjob(
    settings,
    name: str = "flywheel-train",
    image: str = "ghcr.io/flywheel/flywheel:latest",
    num_nodes: int = 1,
    gpus_per_node: int = 1,
    snapshot: str = "/data/snapshots/latest.parquet",
    frame: str | None = None,
    runtime: str = RUNTIME,
    extra_args: list[str] | tuple[str, ...] = (),
    cpu: str = "4",
    memory: str = "16Gi",
) -> dict:
    """The TrainJob custom resource (a dict) for one training run on the cluster."""
    from kubeflow.trainer.backends.kubernetes import utils
    from kubeflow.trainer.constants import constants
    from kubeflow.trainer.types import types
    from kubeflow_trainer_api import models

    from flywheel.errors import InputError

    if num_nodes < 1 or gpus_per_node < 0:
        raise InputError("a TrainJob needs num_nodes >= 1 and gpus_per_node >= 0")
    resources = {"cpu": cpu, "memory": memory}
    if gpus_per_node:
        resources["gpu"] = str(gpus_per_node)
    env = {
        "FLYWHEEL_MODE": "cluster",
        "FLYWHEEL_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "FLYWHEEL_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
        "FLYWHEEL_MODEL_NAME": settings.model_name,
        "FLYWHEEL_MODEL_ARCH": settings.model_arch,
        "FLYWHEEL_HOLDOUT_FRACTION": str(settings.holdout_fraction),
        "FLYWHEEL_FEATURE_SERVICE": settings.feature_service,
        "FLYWHEEL_HOME": "/tmp/flywheel",  # checkpoints; data comes from the stores
        "FLYWHEEL_TRAINJOB": name,  # tagged on the MLflow run, to find it afterwards
    }
    container = types.CustomTrainerContainer(
        image=image, num_nodes=num_nodes, resources_per_node=resources, env=env
    )
    runtime_info = types.Runtime(
        name=runtime,
        trainer=types.RuntimeTrainer(
            trainer_type=types.TrainerType.CUSTOM_TRAINER, framework="torch", image=image
        ),
        kind=types.RuntimeKind.CLUSTER_TRAINING_RUNTIME,
    )
    trainer = utils.get_trainer_cr_from_custom_trainer(runtime_info, container)
    trainer.command = ["torchrun", "-m", "flywheel.training"]
    data = ["--frame", frame] if frame else ["--snapshot", snapshot]
    trainer.args = [*data, *extra_args]
    trainer.num_proc_per_node = max(1, gpus_per_node)
    job = models.TrainerV1alpha1TrainJob(
        apiVersion=constants.API_VERSION,
        kind=constants.TRAINJOB_KIND,
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, labels={"app.kubernetes.io/part-of": "flywheel"}
        ),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtimeRef=models.TrainerV1alpha1RuntimeRef(
                name=runtime,
                kind=types.RuntimeKind.CLUSTER_TRAINING_RUNTIME.value,
                apiGroup=constants.GROUP,
            ),
            trainer=trainer,
        ),
    )
    return job.to_dict()


def config_args(config) -> list[str]:
    """Entry-point flags for a TrainConfig (the options that travel to the pods)."""
    args = [
        "--lr",
        str(config.lr),
        "--batch-size",
        str(config.batch_size),
        "--max-epochs",
        str(config.max_epochs),
        "--patience",
        str(config.patience),
        "--seed",
        str(config.seed),
        "--val-fraction",
        str(config.val_fraction),
    ]
    if config.arch:
        args += ["--arch", config.arch]
    if getattr(config, "mode", None):  # head | finetune | scratch (default: the setting)
        args += ["--mode", config.mode]
    if config.width:
        args += ["--width", str(config.width)]
    if config.compile:
        args.append("--compile")
    if not config.register:
        args.append("--no-register")
    return args


def run_trainjob(
    settings,
    frame_path: str,
    config,
    name: str | None = None,
    image: str = "ghcr.io/flywheel/flywheel:latest",
    num_nodes: int = 1,
    gpus_per_node: int = 1,
    namespace: str | None = None,
    timeout_s: float = 6 * 3600,
    poll_s: float = 15.0,
):
    """Submit a TrainJob training on `frame_path` (a path the pods can read), wait for it,
    and return the TrainResult read back from its MLflow run. Needs a cluster."""
    import json
    import os
    import time
    import uuid

    from kubernetes import client
    from kubernetes import config as kube_config
    from mlflow import MlflowClient

    from flywheel.crds import validate_custom_resource
    from flywheel.errors import ServiceError
    from flywheel.training.run import TrainResult

    name = name or f"flywheel-train-{uuid.uuid4().hex[:8]}"
    namespace = namespace or os.environ.get("POD_NAMESPACE", "default")
    job = build_trainjob(
        settings,
        name=name,
        image=image,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        frame=frame_path,
        extra_args=config_args(config),
    )
    validate_custom_resource(job, settings.crds_dir)
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    api = client.CustomObjectsApi()
    group, version = job["apiVersion"].split("/")
    api.create_namespaced_custom_object(group, version, namespace, "trainjobs", job)
    deadline = time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(group, version, namespace, "trainjobs", name)
        done = {
            c["type"]: c
            for c in obj.get("status", {}).get("conditions", [])
            if c.get("status") == "True"
        }
        if "Failed" in done:
            raise ServiceError(
                f"TrainJob {namespace}/{name} failed: {done['Failed'].get('message', '')}"
            )
        if "Complete" in done:
            break
        if time.monotonic() > deadline:
            raise ServiceError(f"TrainJob {namespace}/{name} did not finish in {timeout_s} s")
        time.sleep(poll_s)
    mlflow = MlflowClient(settings.tracking_uri)
    exp = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    runs = mlflow.search_runs([exp.experiment_id], f"tags.trainjob = '{name}'") if exp else []
    if not runs:
        raise ServiceError(f"TrainJob {name} finished but logged no MLflow run")
    run = runs[0]
    m, p = run.data.metrics, run.data.params
    versions = mlflow.search_model_versions(f"run_id = '{run.info.run_id}'")
    ver = str(versions[0].version) if versions else None
    return TrainResult(
        run.info.run_id,
        f"models:/{settings.model_name}/{ver}" if ver else None,
        ver,
        m.get("holdout_accuracy", float("nan")),
        m.get("val_accuracy_final"),
        m.get("champion_holdout_accuracy"),
        int(p.get("n_train", 0)),
        int(p.get("n_val", 0)),
        int(p.get("n_holdout", 0)),
        json.loads(p.get("classes", "[]")),
        int(m.get("epochs", 0)),
        m.get("samples_per_s"),
        m.get("train_seconds", 0.0),
    )
