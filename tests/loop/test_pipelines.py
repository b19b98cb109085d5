"""The pipelines compile to IR YAML whose tasks read the platform ConfigMap and Secret."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from flywheel import names
from pipelines.run import compile_all
from tests.conftest import ROOT


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_both_pipelines_compile_with_settings_by_reference(tmp_path):
    paths = compile_all(tmp_path / "out")
    assert set(paths) == {"flywheel-turn", "flywheel-sweep"}
    for name, path in paths.items():
        spec, platform = _docs(path)
        assert spec["pipelineInfo"]["name"] == name
        executors = spec["deploymentSpec"]["executors"]
        assert [k for k in executors if k.startswith("exec-train")], f"{name} has no train task"
        # every step runs the platform image, which already holds flywheel and kfp
        assert {e["container"]["image"] for e in executors.values()} == {names.IMAGE}
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for exec_name in executors:
            secrets = k8s[exec_name]["secretAsEnv"]
            assert [s["secretName"] for s in secrets] == [names.SECRET], exec_name
        # the train task only launches the TrainJob: the GPUs go to the TrainJob's pods
        assert "accelerator" not in path.read_text()


def test_turn_has_the_steps_and_the_promotion_condition(tmp_path):
    paths = compile_all(tmp_path / "out")
    spec, _ = _docs(paths["flywheel-turn"])
    tasks = spec["root"]["dag"]["tasks"]
    for step in ("export-labels", "build-features", "train", "evaluate", "register"):
        assert step in tasks, step
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conditions = [t["triggerPolicy"]["condition"] for t in branches.values()]
    assert conditions == [
        "inputs.parameter_values['pipelinechannel--register-Output'] == true",
        "!(inputs.parameter_values['pipelinechannel--register-Output'] == true)",
    ]
    promoted = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(promoted) == {"deploy", "select-for-labelling"}  # deploy only if promoted
    assert promoted["select-for-labelling"]["dependentTasks"] == ["deploy"]
    kept = spec["components"]["comp-condition-3"]["dag"]["tasks"]
    assert set(kept) == {"select-for-labelling-2"}
    assert tasks["export-labels"]["cachingOptions"] == {}  # never cached
    assert tasks["build-features"]["cachingOptions"]["enableCache"] is True


def test_sweep_fans_out(tmp_path):
    paths = compile_all(tmp_path / "out")
    spec, _ = _docs(paths["flywheel-sweep"])
    assert "iteratorPolicy" in json.dumps(spec) or "parameterIterator" in json.dumps(spec)
    assert "pick-best" in spec["root"]["dag"]["tasks"]


def test_cli_compiles(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "loop", "compile", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "flywheel-turn.yaml").exists()


def test_library_never_imports_kfp():
    code = (
        "import sys, flywheel.cli, flywheel.loop.steps, flywheel.loop.turn, "
        "flywheel.loop.demo; print('kfp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
