"""Pods on one box: the environment a pod would get, with cluster names mapped to this box.

A `Box` knows the rendered chart (its ConfigMaps and Secrets, resolved by
`flywheel.deploy.env`) and the local port of each in-cluster Service. `pod_env` turns the
variables a pod would get into ones that work here, and nothing more:

- in-cluster host names (`mlflow`, `mlflow.flywheel.svc.cluster.local:5000`, ...) become
  `127.0.0.1:<local port>` (the cluster DNS, rehearsed);
- the image's paths (`/app/...`, the repository in the image) become this checkout's;
- the pod's `/tmp` (an emptyDir) becomes the pod's own scratch folder;
- `0.0.0.0` (bind every interface) becomes `127.0.0.1`: nothing here listens beyond loopback.

On top of that each pod gets what its container image and the kubelet give it (PATH, HOME
on its empty scratch folder, TMPDIR) and, for code that talks to the Kubernetes API, the
rehearsal's stand-in for the service account (`FLYWHEEL_KUBE_BACKEND=rehearsal`,
`FLYWHEEL_REHEARSAL_DIR`). Nothing of the rehearsal's own environment leaks in.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
IMAGE_APP = "/app"  # where infra/image/Dockerfile puts the repository
STATE_FILE = "box.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Box:
    """The rehearsal's cluster on one machine: rendered chart + local ports."""

    work: Path  # the rehearsal's folder (pods' scratch dirs, logs, API objects)
    namespace: str  # the release's
    pipeline_namespace: str  # where Kubeflow Pipelines runs the tasks
    ports: dict[str, int] = field(default_factory=dict)  # Service name -> local port
    service_ports: dict[str, list[int]] = field(default_factory=dict)  # Service -> its ports
    documents: list[dict] = field(default_factory=list)  # ConfigMaps, Secrets, custom resources
    # Variables this box cannot give as the cluster does, with the value it gives instead
    # (each one printed by the rehearsal as a deviation).
    overrides: dict[str, str] = field(default_factory=dict)

    # --- persisted, so that pods (other processes) see the same box --------------------
    def save(self) -> Path:
        path = self.work / STATE_FILE
        path.write_text(json.dumps({**self.__dict__, "work": str(self.work)}, indent=1))
        path.chmod(0o600)  # it holds the rendered Secrets
        return path

    @classmethod
    def load(cls, work: Path | str) -> Box:
        data = json.loads((Path(work) / STATE_FILE).read_text())
        data["work"] = Path(data["work"])
        return cls(**data)

    @property
    def rendered(self):
        from flywheel.deploy.render import Rendered

        return Rendered("rehearsal", {}, {}, [("", obj) for obj in self.documents])

    def rendered_object(self, kind: str, name: str) -> dict | None:
        for obj in self.documents:
            if obj.get("kind") == kind and obj["metadata"]["name"] == name:
                return obj
        return None

    def container_env(self, container: dict) -> dict[str, str]:
        """A workload container's env (envFrom + env), resolved as the kubelet would."""
        from flywheel.deploy import env

        return env.container_env(self.rendered, container, self.namespace)

    def task_env(self, executor: dict) -> dict[str, str]:
        """A compiled task's env (configMapAsEnv / secretAsEnv of its platform spec)."""
        from flywheel.deploy import env

        return env.task_env(self.rendered, executor, self.pipeline_namespace)

    # --- names and paths ----------------------------------------------------------------
    def localize(self, value: str, scratch: Path) -> str:
        """One variable's value as it works on this box (see the module docstring)."""
        for name, port in self.ports.items():
            for cluster_port in self.service_ports.get(name, []):
                pattern = rf"(?<![\w.-]){re.escape(name)}(\.{re.escape(self.namespace)})?"
                pattern += rf"(\.svc(\.cluster\.local)?)?:{cluster_port}(?!\d)"
                value = re.sub(pattern, f"127.0.0.1:{port}", value)
        if value == IMAGE_APP or value.startswith(IMAGE_APP + "/"):
            value = str(REPO) + value[len(IMAGE_APP) :]
        if value == "/tmp" or value.startswith("/tmp/"):
            value = str(scratch) + value[len("/tmp") :]
        if value == "0.0.0.0":
            value = "127.0.0.1"
        return value

    def pod_env(self, env: dict[str, str], scratch: Path) -> dict[str, str]:
        """`env` (what the pod gets) localized, plus what the image and kubelet add."""
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "tmp").mkdir(exist_ok=True)
        out = {k: self.localize(v, scratch) for k, v in env.items()}
        out.update({k: v for k, v in self.overrides.items() if k in out})
        out.update(
            PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            HOME=str(scratch),
            TMPDIR=str(scratch / "tmp"),
            LANG="C.UTF-8",
            PYTHONUNBUFFERED="1",
            FLYWHEEL_KUBE_BACKEND="rehearsal",
            FLYWHEEL_REHEARSAL_DIR=str(self.work),
        )
        # The image has flywheel installed; here the checkout is (editable, or on the path).
        if os.environ.get("PYTHONPATH"):
            out["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return out

    def scratch(self, name: str) -> Path:
        """A fresh, empty folder for one pod (its /tmp emptyDir and its home)."""
        base = self.work / "pods"
        base.mkdir(parents=True, exist_ok=True)
        n = len(list(base.glob(f"{name}-*")))
        path = base / f"{name}-{n}"
        path.mkdir()
        return path


def from_rendered(
    rendered, work: Path, namespace: str, pipeline_namespace: str, ports: dict[str, int]
) -> Box:
    """A Box from a `flywheel.deploy.render.Rendered` chart and the local ports."""
    box = Box(work, namespace, pipeline_namespace, dict(ports))
    for svc in rendered.of_kind("Service"):
        box.service_ports[svc["metadata"]["name"]] = [p["port"] for p in svc["spec"]["ports"]]
    kinds = ("ConfigMap", "Secret", "TrainingRuntime", "InferenceService")
    box.documents = [obj for obj in rendered.objects if obj.get("kind") in kinds]
    return box
