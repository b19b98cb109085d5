"""The environment a pod would get, read from a rendered chart.

A container's settings come by reference (`envFrom` the platform ConfigMap and its identity's
Secret, and `valueFrom` keys); a compiled pipeline task's come from its kfp-kubernetes platform spec
(`configMapAsEnv`, `secretAsEnv`). `container_env` and `task_env` resolve those references
against the ConfigMaps and Secrets of a `Rendered` chart, exactly as the kubelet would
(`$(VAR)` in `env` values expanded from the variables defined before), so tests and the
rehearsal can build the `Settings` a pod would build, without a cluster.
"""

from __future__ import annotations

import base64
import re

from flywheel.deploy.render import NAMESPACE, Rendered
from flywheel.errors import InputError

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def config_map(rendered: Rendered, name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    return dict(_find(rendered, "ConfigMap", name, namespace).get("data") or {})


def secret(rendered: Rendered, name: str, namespace: str = NAMESPACE) -> dict[str, str]:
    obj = _find(rendered, "Secret", name, namespace)
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data


def _find(rendered: Rendered, kind: str, name: str, namespace: str) -> dict:
    for obj in rendered.of_kind(kind):
        meta = obj["metadata"]
        if meta["name"] == name and meta.get("namespace", NAMESPACE) == namespace:
            return obj
    raise InputError(f"{kind} {namespace}/{name} is referenced but not rendered by the chart")


def _key(data: dict, key: str, where: str) -> str:
    if key not in data:
        raise InputError(f"{where} has no key {key!r}")
    return data[key]


def container_env(
    rendered: Rendered, container: dict, namespace: str = NAMESPACE
) -> dict[str, str]:
    """The environment variables of a container (envFrom, then env), all resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = config_map(rendered, source["configMapRef"]["name"], namespace)
        else:
            data = secret(rendered, source["secretRef"]["name"], namespace)
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = _REF.sub(lambda m: env.get(m[1], m[0]), str(var["value"]))
            continue
        ref = var.get("valueFrom") or {}
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            data = config_map(rendered, r["name"], namespace)
            env[var["name"]] = _key(data, r["key"], f"ConfigMap {r['name']}")
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            data = secret(rendered, r["name"], namespace)
            env[var["name"]] = _key(data, r["key"], f"Secret {r['name']}")
        else:
            env[var["name"]] = ""  # fieldRef / resourceFieldRef: known only in a cluster
    return env


def task_env(rendered: Rendered, executor: dict, namespace: str) -> dict[str, str]:
    """The environment a compiled pipeline task gets from its kfp-kubernetes executor spec
    (`platforms.kubernetes.deploymentSpec.executors[...]` of the IR YAML), in `namespace`
    (where Kubeflow Pipelines runs it)."""
    env: dict[str, str] = {}
    for ref in executor.get("configMapAsEnv") or []:
        data = config_map(rendered, ref["configMapName"], namespace)
        for pair in ref["keyToEnv"]:
            where = f"ConfigMap {namespace}/{ref['configMapName']}"
            env[pair["envVar"]] = _key(data, pair["configMapKey"], where)
    for ref in executor.get("secretAsEnv") or []:
        data = secret(rendered, ref["secretName"], namespace)
        for pair in ref["keyToEnv"]:
            where = f"Secret {namespace}/{ref['secretName']}"
            env[pair["envVar"]] = _key(data, pair["secretKey"], where)
    return env
