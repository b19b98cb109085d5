"""The chart's monitoring: the Grafana dashboard ConfigMap (the same JSON as the file, its
queries on flywheel's metric names), PodMonitors only when asked or when the CRD is there."""

from __future__ import annotations

import json

import pytest

from flywheel.deploy.render import ValuesError, render
from tests.conftest import ROOT

DASHBOARD = ROOT / "charts" / "flywheel" / "files" / "grafana-dashboard.json"


def _kinds(rendered, kind):
    return [obj for _, obj in rendered.documents if obj.get("kind") == kind]


def test_dashboard_configmap_and_no_podmonitors_without_the_crd():
    rendered = render("dev")
    [cm] = [
        c
        for c in _kinds(rendered, "ConfigMap")
        if c["metadata"]["name"].endswith("grafana-dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["flywheel-serving.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all("flywheel_" in e for e in exprs)
    assert _kinds(rendered, "PodMonitor") == []  # offline: no monitoring.coreos.com API


def test_podmonitors_when_asked():
    rendered = render("dev", {"monitoring": {"podMonitors": "always"}})
    monitors = {m["metadata"]["name"]: m for m in _kinds(rendered, "PodMonitor")}
    servers = monitors["flywheel-model-servers"]["spec"]
    assert servers["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "flywheel"}
    assert servers["podMetricsEndpoints"][0]["path"] == "/metrics"
    trigger = monitors["flywheel-trigger"]["spec"]
    assert trigger["selector"]["matchLabels"]["app.kubernetes.io/name"] == "trigger"


def test_bad_monitoring_value_is_named():
    with pytest.raises(ValuesError, match="podMonitors"):
        render("dev", {"monitoring": {"podMonitors": "sometimes"}})
