"""Which representation a registered model reads (the metadata its training recorded).

`model_representation(settings, version)` -> the metadata dict of that version, with
`representation` set (`pixels` for models logged before embeddings existed), and for
models trained on a backbone's vectors also `backbone`, `weights_digest`,
`backbone_weights` and `backbone_image_size` (flywheel.training.heads).
`champion_representation(settings)` -> (champion version, that dict), or (None, None).
"""

from __future__ import annotations


def model_representation(settings, version: str) -> dict:
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)  # the model's files come through it
    mlflow.set_registry_uri(settings.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{settings.model_name}/{version}")
    meta = dict(info.metadata or {})
    meta.setdefault("representation", "pixels")
    return meta


def champion_representation(settings) -> tuple[str | None, dict | None]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        version = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
    except MlflowException:
        return None, None
    return version, model_representation(settings, version)
