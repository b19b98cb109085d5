"""The flywheel's pipelines.

`flywheel_turn`: one turn of the loop.

    export_labels -> build_features -> train -> evaluate -> register
                                                              |-- promoted: deploy -> select
                                                              '-- kept: select

`flywheel_sweep`: the same data, a ParallelFor over hyperparameters (each trial a train
task, an MLflow run), then the best trial is evaluated and registered like a turn's model.

Compiled for the cluster, every task takes its settings from the platform ConfigMap and
Secret by reference (names in flywheel.names): the YAML holds no mode, URL or secret of the
machine that compiled it. Every task runs the platform image (components/base.py).
"""

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
from flywheel import names

# Secret name -> {key: env var}: the only Secret a task reads, the pipeline identity's (the
# only one in the pipelines' namespace); every key, as the variable of the same name.
SECRET_ENV = {names.SECRET: {key: key for key in names.SECRET_KEYS}}


def _configure(task: dsl.PipelineTask, cluster: bool) -> dsl.PipelineTask:
    """On the cluster, the task's settings are the platform ConfigMap and the pipeline
    identity's Secret, by reference (every key, as the variable of the same name): nothing
    from this machine, and no credential but the pipeline's own."""
    if cluster:
        kubernetes.use_config_map_as_env(
            task, config_map_name=names.CONFIG_MAP, config_map_key_to_env=_same(names.CONFIG_KEYS)
        )
        for secret_name, key_to_env in SECRET_ENV.items():
            kubernetes.use_secret_as_env(
                task, secret_name=secret_name, secret_key_to_env=key_to_env
            )
    return task


def _same(keys: tuple[str, ...]) -> dict[str, str]:
    return {key: key for key in keys}


def build(cluster: bool = False):
    """Build both pipeline functions (`cluster`: tasks read the platform ConfigMap/Secret).

    `labels_per_turn=0` and `strategy=""` mean the settings' FLYWHEEL_LABELS_PER_TURN and
    FLYWHEEL_ACQUISITION, read where the step runs."""

    @dsl.pipeline(name="flywheel-turn", description="One turn of the data flywheel.")
    def flywheel_turn(
        params_json: str = "{}",
        labels_per_turn: int = 0,
        strategy: str = "",
    ) -> TurnOutputs:
        snap = _configure(export_labels(), cluster).set_caching_options(False)
        feats = _configure(build_features(snapshot_id=snap.outputs["snapshot_id"]), cluster)
        trained = _train(snap, feats, params_json, cluster)
        evaluated, decision = _turn_tail(
            trained.outputs["model_version"], labels_per_turn, strategy, cluster
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
        labels_per_turn: int = 0,
        strategy: str = "",
    ):
        snap = _configure(export_labels(), cluster).set_caching_options(False)
        feats = _configure(build_features(snapshot_id=snap.outputs["snapshot_id"]), cluster)
        with dsl.ParallelFor(trials, parallelism=2) as trial:
            trained = _train(snap, feats, trial, cluster)
        best = _configure(
            pick_best(
                versions=dsl.Collected(trained.outputs["model_version"]),
                scores=dsl.Collected(trained.outputs["val_accuracy"]),
            ),
            cluster,
        )
        _turn_tail(best.output, labels_per_turn, strategy, cluster)

    return flywheel_turn, flywheel_sweep


def _train(snap, feats, params_json, cluster: bool) -> dsl.PipelineTask:
    """The train task on the snapshot's training set (on the cluster it launches a TrainJob,
    whose pods get the GPUs: the task itself needs none)."""
    task = train(
        training_set=feats.outputs["training_set"],
        snapshot_id=snap.outputs["snapshot_id"],
        params_json=params_json,
    )
    return _configure(task, cluster)


class TurnOutputs(NamedTuple):
    n_labels: int
    model_version: str
    challenger_accuracy: float
    champion_accuracy: float
    promoted: bool


def _turn_tail(model_version, labels_per_turn, strategy, cluster: bool):
    """evaluate -> register -> if promoted: deploy -> select; else: select.

    The selection runs after the deploy when there is one, so the new champion picks."""
    evaluated = _configure(evaluate(model_version=model_version), cluster)
    decision = _configure(register(model_version=model_version), cluster)
    decision.after(evaluated).set_caching_options(False)

    def select():
        task = select_for_labelling(k=labels_per_turn, strategy=strategy)
        return _configure(task, cluster).set_caching_options(False)

    with dsl.If(decision.output == True, name="promoted"):  # noqa: E712
        deployed = _configure(deploy(), cluster).set_caching_options(False)
        select().after(deployed)
    with dsl.Else(name="kept"):
        select()
    return evaluated, decision
