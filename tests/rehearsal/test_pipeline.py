"""The rehearsal's IR runner on a small compiled pipeline, through a real S3 server.

A producer writes a Dataset artifact, a consumer reads it, an If/Else picks one branch,
and every task reports the environment it got: only its pod's (the ConfigMap and Secret
its platform spec names), never this process's."""

import base64
import json

import pytest
from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Output

from flywheel.rehearsal import pipeline as rpipeline
from flywheel.rehearsal.pods import Box


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def produce(rows: int, data: Output[Dataset]) -> str:
    import os

    with open(data.path, "w") as fh:
        fh.write("\n".join(str(i) for i in range(rows)))
    return os.environ["FLYWHEEL_GREETING"] + "|" + os.environ["FLYWHEEL_SECRET_WORD"]


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def consume(data: Input[Dataset]) -> bool:
    with open(data.path) as fh:
        return len(fh.read().splitlines()) > 2


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def report(tag: str) -> str:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith(("FLYWHEEL_", "PYTEST"))}
    return json.dumps({"tag": tag, "env": env, "home": os.environ["HOME"]})


def _configure(task):
    kubernetes.use_config_map_as_env(
        task, config_map_name="platform", config_map_key_to_env={"GREETING": "FLYWHEEL_GREETING"}
    )
    kubernetes.use_secret_as_env(
        task, secret_name="platform", secret_key_to_env={"word": "FLYWHEEL_SECRET_WORD"}
    )
    return task


@dsl.pipeline(name="rehearsal-test")
def small(rows: int = 3) -> str:
    made = _configure(produce(rows=rows))
    big = _configure(consume(data=made.outputs["data"]))
    with dsl.If(big.output == True, name="big"):  # noqa: E712
        _configure(report(tag="big"))
    with dsl.Else(name="small"):
        _configure(report(tag="small"))
    return made.outputs["Output"]


def _box(tmp_path, endpoint: str) -> Box:
    meta = {"name": "platform", "namespace": "kubeflow"}
    docs = [
        {"kind": "ConfigMap", "metadata": meta, "data": {"GREETING": f"hi from {endpoint}"}},
        {
            "kind": "Secret",
            "metadata": meta,
            "data": {"word": base64.b64encode(b"sesame").decode()},
        },
    ]
    box = Box(tmp_path / "work", "flywheel", "kubeflow", documents=docs)
    box.work.mkdir()
    return box


@pytest.mark.parametrize("rows,branch", [(3, "big"), (1, "small")])
def test_ir_tasks_run_as_pods(s3_settings, tmp_path, monkeypatch, rows, branch):
    settings = s3_settings("runner")
    monkeypatch.setenv("FLYWHEEL_LEAKED_FROM_HOST", "must-not-arrive")
    ir_path = tmp_path / "small.yaml"
    compiler.Compiler().compile(small, package_path=str(ir_path))
    box = _box(tmp_path, settings.s3_endpoint)
    root = f"{settings.state_uri}/pipeline-root/run-{rows}"
    outputs, results = rpipeline.run_pipeline(
        rpipeline.load_ir(ir_path), box, root, settings, params={"rows": rows}
    )

    assert outputs == {"Output": f"hi from {settings.s3_endpoint}|sesame"}
    names = [r.name for r in results]
    assert names[:2] == ["produce", "consume"] and len(names) == 3
    # the artifact crossed through S3, under the pipeline root
    [producer] = [r for r in results if r.name == "produce"]
    assert producer.artifacts["data"]["uri"] == f"{root}/produce/data"
    reported = json.loads(results[-1].parameters["Output"])
    assert reported["tag"] == branch
    env = reported["env"]
    assert env["FLYWHEEL_SECRET_WORD"] == "sesame"
    assert "FLYWHEEL_LEAKED_FROM_HOST" not in env and not any(k.startswith("PYTEST") for k in env)
    assert reported["home"].startswith(str(box.work / "pods"))


def test_conditions_subset():
    p = {"a": True, "b": False}
    assert rpipeline._condition("inputs.parameter_values['a'] == true", p)
    assert rpipeline._condition("!(inputs.parameter_values['b'] == true)", p)
    assert not rpipeline._condition(
        "inputs.parameter_values['a'] == true && inputs.parameter_values['b'] == true", p
    )
    with pytest.raises(rpipeline.TaskFailed, match="outside the rehearsed CEL subset"):
        rpipeline._condition("size(inputs.parameter_values['a']) > 0", p)


def test_localize_maps_cluster_names(tmp_path):
    box = Box(tmp_path, "flywheel", "kubeflow", ports={"mlflow": 1234, "redis": 99})
    box.service_ports = {"mlflow": [5000], "redis": [6379]}
    scratch = tmp_path / "pod"
    assert box.localize("http://mlflow.flywheel.svc.cluster.local:5000", scratch) == (
        "http://127.0.0.1:1234"
    )
    assert box.localize("http://mlflow:5000/x", scratch) == "http://127.0.0.1:1234/x"
    assert box.localize("redis:6379,password=p", scratch) == "127.0.0.1:99,password=p"
    assert box.localize("http://notmlflow:5000", scratch) == "http://notmlflow:5000"
    assert box.localize("/tmp/flywheel", scratch) == f"{scratch}/flywheel"
    assert box.localize("0.0.0.0", scratch) == "127.0.0.1"
