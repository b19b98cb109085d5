"""Registration is idempotent per turn: a rerun of a turn reuses the version it registered.

A turn is named by its label snapshot (`snapshot_id`, a content hash: the same labels give
the same id). The train step tags its MLflow run with `snapshot_id` before it logs and
registers the model, so a version registered by a run that was then killed (before the
`challenger` alias was set) is still found. `version_for_turn` returns the newest finished
version of this model trained on that snapshot with this feature service; the train step then
points `challenger` at it again instead of training and registering a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.registry.promotion import _client, _registry


@dataclass(frozen=True)
class TurnVersion:
    version: str
    run_id: str
    holdout_accuracy: float
    val_accuracy: float | None
    n_train: int


def version_for_turn(settings, snapshot_id: str, params: dict | None = None) -> TurnVersion | None:
    """The version this model already has for `snapshot_id` (trained with the same `params`:
    other hyperparameters on the same labels are another run, not a rerun), or None."""
    if not snapshot_id or snapshot_id == "none":
        return None
    client = _client(settings)
    with _registry(settings, f"look up the version of turn {snapshot_id}"):
        found = client.search_model_versions(f"name='{settings.model_name}'")
        for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
            if not mv.run_id:
                continue
            run = client.get_run(mv.run_id)
            tags, metrics = run.data.tags, run.data.metrics
            if (
                tags.get("snapshot_id") == snapshot_id
                and tags.get("feature_service") == settings.feature_service
                and "holdout_accuracy" in metrics
                and str(mv.status) == "READY"
                and all(str(run.data.params.get(k)) == str(v) for k, v in (params or {}).items())
            ):
                return TurnVersion(
                    str(mv.version),
                    mv.run_id,
                    float(metrics["holdout_accuracy"]),
                    metrics.get("val_accuracy_final"),
                    int(float(run.data.params.get("n_train", 0))),
                )
    return None
