"""Cluster deploy: roll the chart's InferenceService to a new champion, and wait for it.

The predictor loads `models:/<name>@champion` when it starts, so a new champion reaches the
cluster as a new revision of the InferenceService the chart created (its name is
`flywheel.names.INFERENCE_SERVICE`): we merge-patch an annotation naming the version on the
predictor's and transformer's pod templates, through `flywheel.kube`, then wait until the
InferenceService is Ready again with the new revision (or fail naming the condition that is
not). With `canaryTrafficPercent` set in the chart's values (Serverless mode), KServe sends
that share of traffic to the new revision until it is promoted.
"""

from __future__ import annotations

from flywheel import names
from flywheel.errors import ServiceError

KIND = "InferenceService"
ANNOTATION = "flywheel.dev/champion-version"


def rollout_patch(champion_version: str) -> dict:
    """The merge patch that starts a new predictor and transformer revision."""
    meta = {"annotations": {ANNOTATION: str(champion_version)}}
    return {"metadata": meta, "spec": {"predictor": meta, "transformer": meta}}


def rolled_out(version: str, generation: int | None = None):
    """A `ready` test: the InferenceService serves `version` (observed and Ready)."""

    def ready(obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        if (meta.get("annotations") or {}).get(ANNOTATION) != str(version):
            raise ServiceError(
                f"InferenceService {meta.get('name')} was rolled to another version "
                f"({(meta.get('annotations') or {}).get(ANNOTATION)}) while waiting for {version}"
            )
        observed = status.get("observedGeneration")
        if generation is not None and observed is not None and observed < generation:
            return False
        conditions = {c.get("type"): c for c in status.get("conditions", [])}
        ready_c = conditions.get("Ready", {})
        return ready_c.get("status") == "True"

    return ready


def not_ready_reason(obj: dict | None) -> str:
    if not obj:
        return "it does not exist"
    bad = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason') or ''} {c.get('message') or ''})"
        for c in (obj.get("status") or {}).get("conditions", [])
        if c.get("status") != "True"
    ]
    return "; ".join(bad) or "no Ready condition yet"


def roll_out(settings, champion_version: str, cluster=None, timeout_s: float = 600.0) -> str:
    """Patch the chart's InferenceService to `champion_version`; wait until it is ready."""
    from flywheel import kube

    cluster = cluster or kube.get_cluster(settings)
    name = names.INFERENCE_SERVICE
    if cluster.get(KIND, name) is None:
        raise ServiceError(
            f"no InferenceService {cluster.namespace}/{name}: install the chart "
            "(`flywheel deploy`) before the loop deploys to it"
        )
    patched = cluster.patch(KIND, name, rollout_patch(champion_version))
    generation = (patched.get("metadata") or {}).get("generation")
    try:
        cluster.wait(KIND, name, rolled_out(champion_version, generation), timeout_s)
    except ServiceError as exc:
        reason = not_ready_reason(cluster.get(KIND, name))
        raise ServiceError(
            f"InferenceService {cluster.namespace}/{name} did not become ready with version "
            f"{champion_version}: {reason} ({exc})"
        ) from None
    return str(champion_version)
