"""The flywheel's pipelines.

`flywheel_turn`: one turn of the loop.

    export_labels -> build_features -> train -> evaluate -> register
                                                              |-- promoted: deploy -> select
                                                              '-- kept: select

`flywheel_sweep`: the same data, a ParallelFor over hyperparameters (each trial a train
task, an MLflow run), then the best trial is evaluated and registered like a turn's model.

The train task carries the GPU settings (accelerator, node selector, tolerations) from
settings through kfp-kubernetes; locally they are ignored.
"""

import json
from typing import NamedTuple

from kfp import dsl, kubernetes

from components import (
    build_features,
    deploy,
    evaluate,
    export_labels,
    pick_best,
    register,
    select_for_labelling,
    train,
)
from flywheel.settings import Settings, get_settings

# Settings every step reads, passed as environment variables (secrets come from Secrets).
CONFIG_ENV = [
    "mode",
    "mlflow_tracking_uri",
    "mlflow_experiment",
    "model_name",
    "label_studio_url",
    "label_studio_project",
    "feature_service",
    "image_size",
    "holdout_fraction",
    "promotion_margin",
    "model_arch",
    "label_classes",
]
SECRET_ENV = {  # Secret name -> {key: env var}; the only Secret in the pipelines' namespace
    "flywheel-pipeline": {
        "label-studio-token": "FLYWHEEL_LABEL_STUDIO_TOKEN",
        "mlflow-username": "MLFLOW_TRACKING_USERNAME",
        "mlflow-password": "MLFLOW_TRACKING_PASSWORD",
    },
}


def _configure(task: dsl.PipelineTask, settings: Settings, cluster: bool) -> dsl.PipelineTask:
    """Give a task the platform image and settings; on the cluster, also the Secrets."""
    task.set_container_image(settings.image)
    if cluster:
        for field in CONFIG_ENV:
            value = getattr(settings, field)
            if value is not None:
                value = json.dumps(value) if isinstance(value, list | dict) else str(value)
                task.set_env_variable(f"FLYWHEEL_{field.upper()}", value)
        for secret, keys in SECRET_ENV.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    return task


def _gpu(task: dsl.PipelineTask, settings: Settings) -> dsl.PipelineTask:
    """Accelerator, node selector and tolerations for the train task."""
    if settings.train_gpus:
        task.set_accelerator_type(settings.train_accelerator)
        task.set_accelerator_limit(settings.train_gpus)
    for key, value in settings.train_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in settings.train_tolerations:
        kubernetes.add_toleration(task, **tol)
    return task


def build(settings: Settings | None = None, cluster: bool = False):
    """Build both pipeline functions for these settings (GPU, env and Secrets baked in)."""
    s = settings or get_settings()

    @dsl.pipeline(name="flywheel-turn", description="One turn of the data flywheel.")
    def flywheel_turn(
        params_json: str = "{}",
        labels_per_turn: int = s.labels_per_turn,
        strategy: str = s.acquisition,
    ) -> TurnOutputs:
        snap = _configure(export_labels(), s, cluster).set_caching_options(False)
        feats = _configure(build_features(snapshot_id=snap.outputs["snapshot_id"]), s, cluster)
        trained = _train(snap, feats, params_json, s, cluster)
        evaluated, decision = _turn_tail(
            trained.outputs["model_version"], labels_per_turn, strategy, s, cluster
        )
        return TurnOutputs(
            n_labels=snap.outputs["n_labels"],
            model_version=trained.outputs["model_version"],
            challenger_accuracy=evaluated.outputs["challenger_accuracy"],
            champion_accuracy=evaluated.outputs["champion_accuracy"],
            promoted=decision.output,
        )

    @dsl.pipeline(name="flywheel-sweep", description="Hyperparameter sweep, best one registered.")
    def flywheel_sweep(
        trials: list = ['{"lr": 0.003}', '{"lr": 0.01}', '{"lr": 0.03}'],  # noqa: B006
        labels_per_turn: int = s.labels_per_turn,
        strategy: str = s.acquisition,
    ):
        snap = _configure(export_labels(), s, cluster).set_caching_options(False)
        feats = _configure(build_features(snapshot_id=snap.outputs["snapshot_id"]), s, cluster)
        with dsl.ParallelFor(trials, parallelism=2) as trial:
            trained = _train(snap, feats, trial, s, cluster)
        best = _configure(
            pick_best(
                versions=dsl.Collected(trained.outputs["model_version"]),
                scores=dsl.Collected(trained.outputs["val_accuracy"]),
            ),
            s,
            cluster,
        )
        _turn_tail(best.output, labels_per_turn, strategy, s, cluster)

    return flywheel_turn, flywheel_sweep


def _train(snap, feats, params_json, s: Settings, cluster: bool) -> dsl.PipelineTask:
    """The train task on the snapshot's training set, with settings and GPU settings."""
    task = train(
        training_set=feats.outputs["training_set"],
        snapshot_id=snap.outputs["snapshot_id"],
        params_json=params_json,
    )
    return _gpu(_configure(task, s, cluster), s)


class TurnOutputs(NamedTuple):
    n_labels: int
    model_version: str
    challenger_accuracy: float
    champion_accuracy: float
    promoted: bool


def _turn_tail(model_version, labels_per_turn, strategy, s: Settings, cluster: bool):
    """evaluate -> register -> if promoted: deploy -> select; else: select.

    The selection runs after the deploy when there is one, so the new champion picks."""
    evaluated = _configure(evaluate(model_version=model_version), s, cluster)
    decision = _configure(register(model_version=model_version), s, cluster)
    decision.after(evaluated).set_caching_options(False)

    def select():
        task = select_for_labelling(k=labels_per_turn, strategy=strategy)
        return _configure(task, s, cluster).set_caching_options(False)

    with dsl.If(decision.output == True, name="promoted"):  # noqa: E712
        deployed = _configure(deploy(), s, cluster).set_caching_options(False)
        select().after(deployed)
    with dsl.Else(name="kept"):
        select()
    return evaluated, decision
