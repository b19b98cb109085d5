"""The drift pipeline compiles for the cluster: one never-cached task in the platform image,
an HTML report artifact, Secrets by reference."""

from __future__ import annotations

import yaml

from flywheel import names
from flywheel.settings import load
from pipelines.drift import compile_drift


def test_drift_pipeline_compiles(tmp_path):
    settings = load(home=tmp_path / "home", image="registry.example.org/flywheel:1.2.3")
    path = compile_drift(tmp_path / "out")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    assert spec["pipelineInfo"]["name"] == "flywheel-drift"
    [task] = spec["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"] == {} or not task["cachingOptions"].get("enableCache")
    [executor] = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == names.IMAGE
    outputs = spec["components"]["comp-monitor-drift"]["outputDefinitions"]
    assert outputs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert set(outputs["parameters"]) == {"drift_found", "tagged"}
    text = path.read_text()
    assert "FLYWHEEL_LABEL_STUDIO_TOKEN" in text and settings.ls_token not in text
    assert platform["platforms"]["kubernetes"]
