"""The cluster path: a Kubeflow Trainer v2 TrainJob that runs our entry point.

`build_trainjob(settings, ...)` is the TrainJob (a plain dict, the CRD's shape):

- the platform image from settings (FLYWHEEL_IMAGE, `repo@sha256:...` when the chart pins
  a digest), in the release namespace (flywheel.kube);
- `runtimeRef` to the chart's hardened TrainingRuntime (FLYWHEEL_TRAINING_RUNTIME): its pod
  template is non-root, read-only, with limits and GPU scheduling, and takes ALL settings,
  MLflow credentials included, by reference from the platform ConfigMap and Secret
  (envFrom). The TrainJob adds no setting of the machine that built it, only its own name
  (FLYWHEEL_TRAINJOB, tagged on the MLflow run to find it afterwards);
- `numNodes` and one process per GPU from FLYWHEEL_TRAIN_NUM_NODES / FLYWHEEL_TRAIN_GPUS
  (1 on CPU). The pods' resources (limits, and the GPUs: the chart renders the runtime
  and FLYWHEEL_TRAIN_GPUS from the same value) are the runtime's; `resourcesPerNode` is set
  only when asked for explicitly (`gpus_per_node`, `cpu`, `memory`);
- the same entry point as on the dev box: `torchrun -m flywheel.training ...` (Trainer's
  torch plugin sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR/PORT, torchrun's defaults).

`run_trainjob` creates it through `flywheel.kube` (server-side dry run first: the API server
validates it against the CRD, so no pod needs CRD files), waits for Complete (or fails with
the job's own message), and reads the result back from MLflow.
"""

from __future__ import annotations

from flywheel.errors import InputError, ServiceError

GROUP = "trainer.kubeflow.org"
API_VERSION = f"{GROUP}/v1alpha1"
COMMAND = ["torchrun", "-m", "flywheel.training"]


def build_trainjob(
    settings,
    name: str = "flywheel-train",
    snapshot: str | None = None,
    frame: str | None = None,
    extra_args: list[str] | tuple[str, ...] = (),
    num_nodes: int | None = None,
    gpus_per_node: int | None = None,
    cpu: str | None = None,
    memory: str | None = None,
) -> dict:
    """The TrainJob custom resource for one training run on `frame` (or `snapshot`)."""
    num_nodes = settings.train_num_nodes if num_nodes is None else num_nodes
    gpus = settings.train_gpus if gpus_per_node is None else gpus_per_node
    if num_nodes < 1 or gpus < 0:
        raise InputError("a TrainJob needs num_nodes >= 1 and gpus_per_node >= 0")
    if not (frame or snapshot):
        raise InputError("a TrainJob needs a training set (frame) or a snapshot to train on")
    data = ["--frame", frame] if frame else ["--snapshot", snapshot]
    trainer = {
        "image": settings.image,
        "command": list(COMMAND),
        "args": [*data, *extra_args],
        "numNodes": num_nodes,
        "numProcPerNode": max(1, gpus),
        "env": [{"name": "FLYWHEEL_TRAINJOB", "value": name}],
    }
    resources = {"cpu": cpu, "memory": memory} | (
        {settings.train_accelerator: str(gpus)} if gpus_per_node is not None and gpus else {}
    )
    resources = {k: v for k, v in resources.items() if v}
    if resources:  # replaces the runtime's resources for this job
        trainer["resourcesPerNode"] = {"requests": dict(resources), "limits": dict(resources)}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "flywheel"}},
        "spec": {
            "runtimeRef": {
                "apiGroup": GROUP,
                "kind": "TrainingRuntime",
                "name": settings.training_runtime,
            },
            "trainer": trainer,
        },
    }


def trainjob_done(obj: dict) -> bool:
    """True once the TrainJob completed; a ServiceError naming why when it failed."""
    done = {
        c["type"]: c
        for c in (obj.get("status") or {}).get("conditions", [])
        if c.get("status") == "True"
    }
    if "Failed" in done:
        name = obj["metadata"]["name"]
        raise ServiceError(f"TrainJob {name} failed: {done['Failed'].get('message', '')}")
    return "Complete" in done


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
    cluster=None,
    timeout_s: float = 6 * 3600,
):
    """Create a TrainJob training on `frame_path` (a URI the pods can read) through
    `flywheel.kube`, wait for it, and return the TrainResult read back from its MLflow run."""
    import json
    import uuid

    from mlflow import MlflowClient

    from flywheel import kube
    from flywheel.training.run import TrainResult

    name = name or f"flywheel-train-{uuid.uuid4().hex[:8]}"
    job = build_trainjob(settings, name=name, frame=frame_path, extra_args=config_args(config))
    cluster = cluster or kube.get_cluster(settings)
    cluster.create(job)
    cluster.wait("TrainJob", name, trainjob_done, timeout_s)
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
