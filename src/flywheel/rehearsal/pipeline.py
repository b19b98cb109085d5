"""Run a compiled pipeline (the IR YAML the cluster receives) task by task, as pods would.

`run_pipeline(ir, box, root_uri, ...)` walks the IR's DAG itself, the way the Kubeflow
Pipelines driver does, on what the YAML says and nothing else:

- tasks in topological order of `dependentTasks`; a task whose component has a `dag` is a
  sub-DAG (an If/Else branch), walked with its own inputs;
- inputs from `componentInputParameter` (the enclosing DAG's), `taskOutputParameter`,
  `taskOutputArtifact` and `runtimeValue.constant`; pipeline parameters' defaults from the
  root's `inputDefinitions`;
- `triggerPolicy.condition` (the If/Else conditions, a small CEL subset:
  `inputs.parameter_values['x'] == true`, `!(...)`, `&&`, `||`) decides whether a branch
  runs;
- each executor runs like the KFP launcher runs it: the executor input JSON (the same
  shape `kfp.local` builds) with output artifact URIs under `root_uri` (s3://) in place of
  `{{$}}`; input artifacts are downloaded into the pod's mount and outputs uploaded after;
  the task's environment is ONLY what its pod gets (`Box.task_env` of its kfp-kubernetes
  spec, localized) in an empty scratch home; its parameters come back from the executor
  output file.

ParallelFor (`iteratorPolicy`/`parameterIterator`) is not rehearsed: the turn has none.
"""

from __future__ import annotations

import graphlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flywheel import objectstore
from flywheel.errors import FlywheelError
from flywheel.rehearsal.pods import Box


class TaskFailed(FlywheelError):
    """A task of the rehearsed pipeline failed; the message names it and its log."""


@dataclass
class TaskResult:
    name: str
    parameters: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)  # name -> runtime artifact dict
    seconds: float = 0.0
    skipped: bool = False


@dataclass
class Run:
    ir: dict
    box: Box
    root_uri: str  # s3://bucket/prefix/<run id>
    settings: object  # for the object store (the rehearsal's own S3 client settings)
    on_task: Callable[[TaskResult], None] | None = None
    timeout_s: float = 900.0
    results: list[TaskResult] = field(default_factory=list)

    @property
    def components(self) -> dict:
        return self.ir["components"]

    @property
    def platform(self) -> dict:
        spec = self.ir.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        return spec.get("executors", {})


def load_ir(path: Path) -> dict:
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    ir = docs[0]
    for extra in docs[1:]:  # the platform spec is a second document
        ir.setdefault("platforms", {}).update(extra.get("platforms", extra))
    return ir


def run_pipeline(
    ir: dict, box: Box, root_uri: str, settings, params: dict | None = None, on_task=None
) -> tuple[dict, list[TaskResult]]:
    """Run the pipeline; returns (the root DAG's output parameters, every task's result)."""
    run = Run(ir, box, root_uri, settings, on_task)
    root = ir["root"]
    inputs = {}
    for name, spec in root.get("inputDefinitions", {}).get("parameters", {}).items():
        if "defaultValue" in spec:
            inputs[name] = _typed(spec["defaultValue"], spec.get("parameterType"))
    for name, value in (params or {}).items():
        inputs[name] = value
    outputs = _run_dag(run, root["dag"], inputs, {}, prefix="")
    return outputs, run.results


def _typed(value, kind: str | None):
    if kind == "NUMBER_INTEGER" and isinstance(value, float):
        return int(value)
    return value


def _run_dag(run: Run, dag: dict, inputs: dict, in_artifacts: dict, prefix: str) -> dict:
    tasks = dag.get("tasks", {})
    order = graphlib.TopologicalSorter(
        {name: set(t.get("dependentTasks", [])) & set(tasks) for name, t in tasks.items()}
    ).static_order()
    done: dict[str, TaskResult] = {}
    for name in order:
        task = tasks[name]
        if "iteratorPolicy" in task or "parameterIterator" in task:
            raise TaskFailed(f"task {name}: ParallelFor is not rehearsed")
        params, artifacts = _task_inputs(task, inputs, in_artifacts, done, name)
        condition = (task.get("triggerPolicy") or {}).get("condition")
        if condition and not _condition(condition, params):
            done[name] = TaskResult(prefix + name, skipped=True)
            continue
        component = run.components[task["componentRef"]["name"]]
        if "dag" in component:
            sub = _run_dag(run, component["dag"], params, artifacts, prefix + name + "/")
            done[name] = TaskResult(prefix + name, parameters=sub)
        else:
            done[name] = _run_executor(run, component, params, artifacts, prefix + name)
            run.results.append(done[name])
            if run.on_task:
                run.on_task(done[name])
    outputs = {}
    for key, spec in (dag.get("outputs", {}).get("parameters") or {}).items():
        source = spec.get("valueFromParameter")
        if source:
            producer = done.get(source["producerSubtask"])
            if producer and not producer.skipped:
                outputs[key] = producer.parameters.get(source["outputParameterKey"])
    return outputs


def _task_inputs(task: dict, inputs: dict, in_artifacts: dict, done: dict, name: str):
    params, artifacts = {}, {}
    for key, spec in (task.get("inputs", {}).get("parameters") or {}).items():
        if "componentInputParameter" in spec:
            params[key] = inputs.get(spec["componentInputParameter"])
        elif "taskOutputParameter" in spec:
            src = spec["taskOutputParameter"]
            producer = done[src["producerTask"]]
            if producer.skipped:
                raise TaskFailed(f"task {name} needs {src} from a skipped task")
            params[key] = producer.parameters[src["outputParameterKey"]]
        elif "runtimeValue" in spec:
            params[key] = spec["runtimeValue"]["constant"]
        else:
            raise TaskFailed(f"task {name}: input {key} has an unsupported source {spec}")
    for key, spec in (task.get("inputs", {}).get("artifacts") or {}).items():
        if "taskOutputArtifact" in spec:
            src = spec["taskOutputArtifact"]
            artifacts[key] = done[src["producerTask"]].artifacts[src["outputArtifactKey"]]
        elif "componentInputArtifact" in spec:
            artifacts[key] = in_artifacts[spec["componentInputArtifact"]]
        else:
            raise TaskFailed(f"task {name}: artifact {key} has an unsupported source {spec}")
    return params, artifacts


_PARAM = re.compile(r"inputs\.parameter_values\[\s*'([^']+)'\s*\]")


def _condition(expr: str, params: dict) -> bool:
    """Evaluate the If/Else conditions KFP compiles (a small CEL subset, no names but the
    task's input parameters)."""
    python = _PARAM.sub(lambda m: f"_p[{m[1]!r}]", expr)
    python = python.replace("&&", " and ").replace("||", " or ")
    python = re.sub(r"!(?!=)", " not ", python)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", python))
    if re.search(r"[A-Za-z_]\w*", re.sub(r"_p\[[^\]]*\]|\b(and|or|not|True|False)\b", "", python)):
        raise TaskFailed(f"condition {expr!r} is outside the rehearsed CEL subset")
    return bool(eval(python, {"__builtins__": {}}, {"_p": params}))  # noqa: S307 - checked


def _run_executor(run: Run, component: dict, params: dict, artifacts: dict, name: str):
    label = component["executorLabel"]
    container = run.ir["deploymentSpec"]["executors"][label]["container"]
    pod = run.box.scratch(name.replace("/", "-"))
    mount = pod / "s3"
    outputs_dir = pod / "outputs"
    began = time.monotonic()

    # input artifacts: download, as the launcher does, into the pod's mount
    in_arts = {}
    for key, art in artifacts.items():
        _download(run.settings, art["uri"], _mounted(mount, art["uri"]))
        in_arts[key] = {"artifacts": [art]}
    out_defs = component.get("outputDefinitions", {})
    out_arts = {
        key: {
            "artifacts": [
                {
                    "name": key,
                    "type": {
                        "schemaTitle": spec["artifactType"]["schemaTitle"],
                        "schemaVersion": spec["artifactType"].get("schemaVersion", "0.0.1"),
                    },
                    "uri": objectstore.join(run.root_uri, name, key),
                    "metadata": {},
                }
            ]
        }
        for key, spec in (out_defs.get("artifacts") or {}).items()
    }
    executor_input = {
        "inputs": {"parameterValues": params, "artifacts": in_arts},
        "outputs": {
            "parameters": {
                key: {"outputFile": str(outputs_dir / key)}
                for key in (out_defs.get("parameters") or {})
            },
            "artifacts": out_arts,
            "outputFile": str(outputs_dir / "executor_output.json"),
        },
    }
    if not in_arts:
        del executor_input["inputs"]["artifacts"]
    command = [
        part.replace("{{$}}", json.dumps(executor_input)).replace(
            "kfp.dsl.executor_main", "flywheel.rehearsal.executor"
        )
        for part in [*container.get("command", []), *container.get("args", [])]
    ]
    env = run.box.task_env(run.platform.get(label, {}))
    for var in container.get("env") or []:
        env[var["name"]] = str(var.get("value", ""))
    env = run.box.pod_env(env, pod)
    env["FLYWHEEL_REHEARSAL_S3_MOUNT"] = str(mount)
    log = pod / "log.txt"
    with log.open("wb") as out:
        proc = subprocess.run(
            command, env=env, cwd=pod, stdout=out, stderr=subprocess.STDOUT, timeout=run.timeout_s
        )
    if proc.returncode != 0:
        raise TaskFailed(
            f"task {name} failed (exit {proc.returncode}); its log, {log}, ends:\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        )
    result_file = outputs_dir / "executor_output.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    parameters = dict(result.get("parameterValues") or {})
    for key, spec in (out_defs.get("parameters") or {}).items():
        if key not in parameters and (outputs_dir / key).exists():
            parameters[key] = json.loads((outputs_dir / key).read_text())
        if key in parameters:
            parameters[key] = _typed(parameters[key], spec.get("parameterType"))
    produced = {}
    for key, arts in out_arts.items():
        art = dict(arts["artifacts"][0])
        for reported in (result.get("artifacts") or {}).get(key, {}).get("artifacts", []):
            art["metadata"] = reported.get("metadata") or {}
        local = _mounted(mount, art["uri"])
        if local.exists():  # the launcher uploads what the task wrote
            _upload(run.settings, local, art["uri"])
        produced[key] = art
    return TaskResult(name, parameters, produced, time.monotonic() - began)


def _mounted(mount: Path, uri: str) -> Path:
    return mount / uri[len(objectstore.S3) :]


def _download(settings, uri: str, local: Path) -> None:
    from pyarrow import fs

    remote, path = objectstore.filesystem(settings, uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    if remote.get_file_info(path).type == fs.FileType.Directory:
        fs.copy_files(path, str(local), source_filesystem=remote)
    else:
        local.write_bytes(objectstore.read_bytes(settings, uri))


def _upload(settings, local: Path, uri: str) -> None:
    from pyarrow import fs

    remote, path = objectstore.filesystem(settings, uri)
    if local.is_dir():
        fs.copy_files(str(local), path, destination_filesystem=remote)
    else:
        objectstore.write_bytes(settings, uri, local.read_bytes())
