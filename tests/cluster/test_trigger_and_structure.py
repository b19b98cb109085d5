"""The cluster trigger submits a compiled turn to Kubeflow Pipelines, one at a time, and the
loop package never reaches the KFP side except through what it is handed.

No Kubeflow Pipelines API server can run here, so the trigger's action is given a
`Submitter` (the interface `pipelines.run.KfpSubmitter` implements over kfp.Client) that
records what it receives; the package it submits is the real compiled pipeline.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from flywheel import names
from flywheel.loop.trigger_action import submit_run
from flywheel.settings import load
from tests.conftest import ROOT

# "pipelines", "pipelines.run", "pipelines.run:fn" (a module reference, not the English word)
MODULE_NAME = re.compile(r"^pipelines$|\bpipelines[.:][a-z_]")


class RecordingSubmitter:
    def __init__(self, active: list[str] | None = None):
        self.active = active or []
        self.submitted: list[tuple[Path, str]] = []

    def active_runs(self) -> list[str]:
        return list(self.active)

    def submit(self, package: Path, run_name: str) -> str:
        self.submitted.append((package, run_name))
        self.active.append(f"run-{len(self.submitted)}")
        return self.active[-1]


def test_trigger_submits_the_compiled_turn_one_at_a_time(tmp_path):
    settings = load(home=tmp_path / "home", mode="cluster")
    submitter = RecordingSubmitter()
    assert submit_run(settings, [1, 2, 3], submitter=submitter) == "run-1"
    [(package, run_name)] = submitter.submitted
    spec, platform = yaml.safe_load_all(package.read_text())
    assert spec["pipelineInfo"]["name"] == "flywheel-turn"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(
        e["configMapAsEnv"][0]["configMapName"] == names.CONFIG_MAP for e in executors.values()
    )
    assert "3-labels" in run_name
    # a run is unfinished: the next labels wait for the next turn, nothing is submitted
    assert submit_run(settings, [4, 5], submitter=submitter) is None
    assert len(submitter.submitted) == 1


def test_the_chart_trigger_action_is_submit_run():
    from flywheel.deploy.env import config_map
    from flywheel.deploy.render import render
    from flywheel.labelling.trigger import load_action

    data = config_map(render("dev"), names.CONFIG_MAP)
    assert data["FLYWHEEL_TRIGGER_ACTION"] == "flywheel.loop.trigger_action:submit_run"
    assert load_action(data["FLYWHEEL_TRIGGER_ACTION"]) is submit_run
    assert data["FLYWHEEL_KFP_HOST"].startswith("http://ml-pipeline.kubeflow")


def test_loop_never_names_pipelines():
    """Not as an import, not as a string: the loop receives runners and submitters."""
    problems = []
    for path in sorted((ROOT / "src/flywheel/loop").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                problems += [
                    f"{path.name}: imports {m}"
                    for m in mods
                    if m.split(".")[0] in ("pipelines", "components", "kfp")
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if MODULE_NAME.search(text):
                    problems.append(f"{path.name}: names {text!r}")
    assert not problems, problems
