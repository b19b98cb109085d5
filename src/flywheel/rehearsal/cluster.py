"""`RehearsalCluster`: the `flywheel.kube.Cluster` of a rehearsal, on one box.

The objects live as JSON files under `<rehearsal>/api/<kind>/<name>.json` (so every pod,
each its own process, sees the same API server). What the controllers would do, this
does with the same entry points the pods would run:

- `create(TrainJob)`: checks the object the way the API server would on the fields the
  rehearsal relies on (kind, runtimeRef to a rendered TrainingRuntime, trainer command),
  then starts the TrainJob's one node as a process: the TrainingRuntime's container
  command (or the TrainJob's `trainer.command`) and args, the pod's environment (the
  runtime container's `envFrom`/`env` resolved against the chart's ConfigMap and Secrets,
  plus `trainer.env` and the torch plugin's PET_* variables), in an empty scratch home.
  Its status gets `Complete` or `Failed` (with the log's tail) when the process ends.
- `patch(InferenceService)`: merges the patch, bumps the generation, and rolls the model
  servers: the predictor and the transformer are restarted from the patched spec's
  containers (command/args, env) with the ports the rehearsal gave them, as a new KServe
  revision would be; the status becomes Ready (observedGeneration) once both answer ready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flywheel import kube
from flywheel.errors import ServiceError
from flywheel.rehearsal.pods import Box, free_port


def _merge(base: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class RehearsalCluster:
    """See the module docstring. `FLYWHEEL_REHEARSAL_DIR` names the rehearsal's folder."""

    def __init__(self, settings=None, work: Path | str | None = None):
        work = work or os.environ.get("FLYWHEEL_REHEARSAL_DIR")
        if not work:
            raise ServiceError("FLYWHEEL_REHEARSAL_DIR is not set: no rehearsal is running")
        self.box = Box.load(work)
        self.namespace = getattr(settings, "namespace", None) or self.box.namespace
        self._jobs: dict[str, subprocess.Popen] = {}

    # --- storage ----------------------------------------------------------------------------
    def _path(self, kind: str, name: str) -> Path:
        kube.kind_of(kind)
        return self.box.work / "api" / kind / f"{name}.json"

    def _save(self, obj: dict) -> dict:
        path = self._path(obj["kind"], obj["metadata"]["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        tmp.replace(path)
        return obj

    # --- the Cluster protocol -----------------------------------------------------------
    def create(self, obj: dict) -> dict:
        kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
        if not name:
            raise ServiceError(f"could not create {kind}: metadata.name is missing")
        if self._path(kind, name).exists():
            raise ServiceError(
                f"could not create {kind} {self.namespace}/{name}: 409 AlreadyExists"
            )
        obj = json.loads(json.dumps(obj))
        obj["metadata"].update(namespace=self.namespace, generation=1)
        obj["status"] = {}
        if kind == "TrainJob":
            self._save(obj)
            self._start_trainjob(obj)
            return obj
        return self._save(obj)

    def get(self, kind: str, name: str) -> dict | None:
        path = self._path(kind, name)
        if not path.exists():
            return None
        obj = json.loads(path.read_text())
        if kind == "TrainJob" and name in self._jobs:
            obj = self._trainjob_status(obj)
        return obj

    def patch(self, kind: str, name: str, patch: dict) -> dict:
        obj = self.get(kind, name)
        if obj is None:
            raise ServiceError(f"could not patch {kind} {self.namespace}/{name}: 404 NotFound")
        obj = _merge(obj, patch)
        obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        self._save(obj)
        if kind == "InferenceService":
            obj = roll(self.box, obj)
            self._save(obj)
        return obj

    def wait(self, kind: str, name: str, ready: Callable[[dict], bool], timeout_s: float) -> dict:
        return kube.poll(self, kind, name, ready, timeout_s, poll_s=1.0)

    # --- TrainJob: the node's process -----------------------------------------------------
    def _start_trainjob(self, obj: dict) -> None:
        spec, name = obj["spec"], obj["metadata"]["name"]
        ref = spec.get("runtimeRef") or {}
        runtime = self.box.rendered_object(ref.get("kind", "TrainingRuntime"), ref.get("name", ""))
        if runtime is None:
            raise ServiceError(
                f"could not create TrainJob {self.namespace}/{name}: runtimeRef "
                f"{ref.get('kind')}/{ref.get('name')} is not installed by the chart"
            )
        trainer = spec.get("trainer") or {}
        container = _node_container(runtime)
        command = list(trainer.get("command") or container.get("command") or [])
        args = list(trainer.get("args") or container.get("args") or [])
        if not command:
            raise ServiceError(
                f"TrainJob {name}: neither the trainer nor the runtime has a command"
            )
        env = self.box.container_env(container)
        for var in trainer.get("env") or []:
            env[var["name"]] = str(var.get("value", ""))
        pod = self.box.scratch(f"trainjob-{name}")
        env = self.box.pod_env(env, pod)
        nodes = int(trainer.get("numNodes", 1))
        if nodes != 1:  # one box is one node: the processes per node are rehearsed
            env["FLYWHEEL_REHEARSAL_NOTE"] = f"numNodes={nodes} rehearsed as 1"
        env.update(
            PET_NNODES="1",
            PET_NPROC_PER_NODE=str(trainer.get("numProcPerNode", 1)),
            PET_NODE_RANK="0",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(free_port()),
        )
        log = pod / "log.txt"
        with log.open("wb") as out:
            self._jobs[name] = subprocess.Popen(
                [*command, *args],
                env=env,
                cwd=pod,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        obj["metadata"].setdefault("annotations", {})["flywheel.dev/rehearsal-log"] = str(log)
        self._save(obj)

    def _trainjob_status(self, obj: dict) -> dict:
        proc = self._jobs[obj["metadata"]["name"]]
        code = proc.poll()
        if code is None:
            return obj
        log = Path(obj["metadata"]["annotations"]["flywheel.dev/rehearsal-log"])
        if code == 0:
            condition = {"type": "Complete", "status": "True", "reason": "JobSucceeded"}
        else:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            condition = {
                "type": "Failed",
                "status": "True",
                "reason": "JobFailed",
                "message": f"node exited with {code}; log {log}:\n{tail}",
            }
        obj["status"] = {"conditions": [condition]}
        return self._save(obj)


def _node_container(runtime: dict) -> dict:
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    job = next((j for j in jobs if j["name"] == "node"), jobs[0])
    containers = job["template"]["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c["name"] == "node"), containers[0])


# --- the InferenceService's model servers ----------------------------------------------------

SERVING_FILE = "serving.json"  # pids of the running predictor/transformer


def roll(box: Box, isvc: dict, timeout_s: float = 180.0, live_only: bool = False) -> dict:
    """(Re)start the predictor and transformer from the InferenceService's spec; returns the
    object with its status (Ready once both answer ready)."""
    stop_serving(box)
    pids = {}
    spec = isvc["spec"]
    predictor_port = box.ports["predictor"]
    transformer_port = box.ports["transformer"]
    for component, port, extra in (
        ("predictor", predictor_port, []),
        ("transformer", transformer_port, ["--predictor_host", f"127.0.0.1:{predictor_port}"]),
    ):
        if component not in spec:
            continue
        container = spec[component]["containers"][0]
        args = _with_port(list(container.get("args") or []), port) + extra
        args += ["--grpc_port", str(free_port())]
        env = box.container_env(container)
        pod = box.scratch(f"isvc-{component}")
        env = box.pod_env(env, pod)
        cwd = container.get("workingDir")
        cwd = Path(box.localize(cwd, pod)) if cwd else pod
        log = pod / "log.txt"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*container["command"], *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pids[component] = {"pid": proc.pid, "port": port, "log": str(log)}
    (box.work / SERVING_FILE).write_text(json.dumps(pids))
    name = spec.get("predictor", {}).get("containers", [{}])[0]
    model = _model_name(name.get("args") or [])
    generation = isvc["metadata"].get("generation", 1)
    reason = _wait_ready(pids, model, timeout_s, live_only)
    if live_only and reason is None:
        reason = "no champion served yet"
    isvc["status"] = {
        "observedGeneration": generation,
        "url": f"http://127.0.0.1:{transformer_port}",
        "conditions": [
            {"type": "Ready", "status": "True" if reason is None else "False"}
            | ({"reason": "NotReady", "message": reason} if reason else {})
        ],
    }
    return isvc


def _with_port(args: list[str], port: int) -> list[str]:
    if "--http_port" in args:
        i = args.index("--http_port")
        return [*args[:i], "--http_port", str(port), *args[i + 2 :]]
    return [*args, "--http_port", str(port)]


def _model_name(args: list[str]) -> str:
    return args[args.index("--model_name") + 1] if "--model_name" in args else "model"


def _wait_ready(pids: dict, model: str, timeout_s: float, live_only: bool = False) -> str | None:
    """None once every server's model is ready (or, `live_only`, the server answers), else
    why not."""
    deadline = time.monotonic() + timeout_s
    why = "not started"
    while time.monotonic() < deadline:
        pending = []
        for component, info in pids.items():
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return f"the {component} exited; see {info['log']}"
            path = "/v2/health/live" if live_only else f"/v2/models/{model}/ready"
            url = f"http://127.0.0.1:{info['port']}{path}"
            try:
                if httpx.get(url, timeout=5).status_code != 200:
                    pending.append(component)
            except httpx.HTTPError:
                pending.append(component)
        if not pending:
            return None
        why = f"{', '.join(pending)} not ready"
        time.sleep(1.0)
    return f"{why} after {timeout_s:.0f} s"


def stop_serving(box: Box) -> None:
    path = box.work / SERVING_FILE
    if not path.exists():
        return
    for info in json.loads(path.read_text()).values():
        try:
            os.killpg(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink()
