"""The one module that reaches the Kubernetes API.

Code that needs the cluster (the TrainJob of the train step, the InferenceService rollout)
talks to a `Cluster`: four calls, on custom resources in ONE namespace (the release's).

    create(obj)                 server-side dry run first (the API server validates the custom
                                resource against its CRD: no CRD files in any pod), then create
    get(kind, name)             the object, or None when it does not exist
    patch(kind, name, patch)    a JSON merge patch
    wait(kind, name, ready, t)  poll `get` until `ready(obj)` is true; `ready` may raise a
                                ServiceError to stop early (a failed job), naming why

`get_cluster(settings)` returns the configured implementation (`FLYWHEEL_KUBE_BACKEND`):
`kubernetes` (the in-cluster service account, or a kubeconfig off-cluster) or `rehearsal`
(`flywheel.rehearsal.cluster:RehearsalCluster`, which runs on one box what the pods would run).
The verbs used here are the ones the chart's Role grants (see `VERBS`).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flywheel.errors import ServiceError, SettingsError

# kind -> (group, version, plural): the custom resources the platform touches.
KINDS: dict[str, tuple[str, str, str]] = {
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
}
# The verbs this module's callers use, per kind (the chart's Role grants exactly these).
VERBS: dict[str, tuple[str, ...]] = {
    "TrainJob": ("create", "get"),
    "InferenceService": ("get", "patch"),
}
REHEARSAL = "flywheel.rehearsal.cluster:RehearsalCluster"
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Cluster(Protocol):
    namespace: str

    def create(self, obj: dict) -> dict: ...

    def get(self, kind: str, name: str) -> dict | None: ...

    def patch(self, kind: str, name: str, patch: dict) -> dict: ...

    def wait(
        self, kind: str, name: str, ready: Callable[[dict], bool], timeout_s: float
    ) -> dict: ...


def kind_of(kind: str) -> tuple[str, str, str]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ServiceError(f"unknown kind {kind!r}: flywheel.kube knows {sorted(KINDS)}") from None


def poll(
    cluster: Cluster,
    kind: str,
    name: str,
    ready: Callable[[dict], bool],
    timeout_s: float,
    poll_s: float = 5.0,
) -> dict:
    """`Cluster.wait` by polling `get` (shared by the implementations)."""
    deadline = time.monotonic() + timeout_s
    obj = None
    while True:
        obj = cluster.get(kind, name)
        if obj is None:
            raise ServiceError(f"{kind} {cluster.namespace}/{name} does not exist")
        if ready(obj):
            return obj
        if time.monotonic() > deadline:
            conditions = (obj.get("status") or {}).get("conditions", [])
            raise ServiceError(
                f"{kind} {cluster.namespace}/{name} not ready after {timeout_s:.0f} s; "
                f"conditions: {conditions}"
            )
        time.sleep(poll_s)


class KubernetesCluster:
    """A `Cluster` on the Kubernetes API (CustomObjectsApi), in one namespace."""

    def __init__(self, namespace: str, api=None, poll_s: float = 5.0):
        self.namespace = namespace
        self.poll_s = poll_s
        self._api = api

    @property
    def api(self):
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CustomObjectsApi()
        return self._api

    def _call(self, what: str, kind: str, name: str, fn, *args, **kwargs):
        from kubernetes.client import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise ServiceError(
                f"could not {what} {kind} {self.namespace}/{name}: {exc.status} {exc.reason}"
                f"{': ' + exc.body if isinstance(exc.body, str) and exc.body else ''}"
            ) from None

    def create(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        group, version, plural = kind_of(kind)
        fn = self.api.create_namespaced_custom_object
        args = (group, version, self.namespace, plural, obj)
        self._call("validate (server-side dry run)", kind, name, fn, *args, dry_run="All")
        return self._call("create", kind, name, fn, *args)

    def get(self, kind: str, name: str) -> dict | None:
        from kubernetes.client import ApiException

        group, version, plural = kind_of(kind)
        try:
            return self.api.get_namespaced_custom_object(
                group, version, self.namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ServiceError(
                f"could not get {kind} {self.namespace}/{name}: {exc.status} {exc.reason}"
            ) from None

    def patch(self, kind: str, name: str, patch: dict) -> dict:
        group, version, plural = kind_of(kind)
        fn = self.api.patch_namespaced_custom_object
        return self._call(
            "patch", kind, name, fn, group, version, self.namespace, plural, name, patch
        )

    def wait(self, kind: str, name: str, ready: Callable[[dict], bool], timeout_s: float) -> dict:
        return poll(self, kind, name, ready, timeout_s, self.poll_s)


def namespace(settings) -> str:
    """The release namespace: FLYWHEEL_NAMESPACE, else the pod's service-account namespace."""
    if settings.namespace:
        return settings.namespace
    try:
        return SERVICEACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise SettingsError(
            "no Kubernetes namespace: set FLYWHEEL_NAMESPACE (the chart sets it to the "
            "release namespace) or run in a pod with a service account"
        ) from None


def load_object(dotted: str):
    """`module:attr` -> the object."""
    module, _, attr = dotted.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"cannot load {dotted!r}: {exc}") from None


def get_cluster(settings) -> Cluster:
    """The configured `Cluster` (FLYWHEEL_KUBE_BACKEND)."""
    if settings.kube_backend == "rehearsal":
        return load_object(REHEARSAL)(settings)
    return KubernetesCluster(namespace(settings))
