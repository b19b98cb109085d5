"""Cluster deploy: roll the InferenceService to a new champion, with canary traffic.

The predictor loads `models:/<name>@champion` when it starts, so a new champion reaches the
cluster as a new revision of the InferenceService: we patch an annotation naming the
version on the predictor's pod template. With `canaryTrafficPercent` set in the chart's
values, KServe sends that share of traffic to the new revision until it is promoted
(`kubectl patch ... canaryTrafficPercent: 100`) or rolled back.
"""

from __future__ import annotations

from flywheel.errors import ServiceError
from flywheel.settings import Settings

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ANNOTATION = "flywheel.dev/champion-version"


def rollout_patch(champion_version: str) -> dict:
    """The merge patch that starts a new predictor and transformer revision."""
    meta = {"annotations": {ANNOTATION: str(champion_version)}}
    return {"metadata": meta, "spec": {"predictor": meta, "transformer": meta}}


def roll_out(settings: Settings, champion_version: str, namespace: str | None = None) -> str:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    namespace = namespace or _namespace()
    api = client.CustomObjectsApi()
    try:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, settings.model_name, rollout_patch(champion_version)
        )
    except client.ApiException as exc:
        raise ServiceError(
            f"could not roll InferenceService {namespace}/{settings.model_name} "
            f"to version {champion_version}: {exc.status} {exc.reason}"
        ) from None
    return str(champion_version)


def _namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip()
    except OSError:
        return "flywheel"
