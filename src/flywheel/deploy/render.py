"""Render the flywheel umbrella chart offline with Helm's own engine.

`render(profile, overrides)` loads `charts/flywheel`, merges `values-<profile>.yaml` and the
overrides, validates them against every chart's values.schema.json (Helm does this while
rendering) and returns the manifests and the parsed objects. Nothing contacts a cluster:
Helm's `lookup` returns nothing, so generated secrets come out fresh on every render.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flywheel.errors import FlywheelError, InputError

ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = ROOT / "charts" / "flywheel"
RELEASE = "flywheel"
NAMESPACE = "flywheel"


class DeployError(FlywheelError):
    """The cluster install, or a check before it, failed."""


class ValuesError(InputError):
    """Values that the charts' values.schema.json refuses (Helm's schema error)."""


def profiles(chart_dir: Path = CHART_DIR) -> list[str]:
    """The values profiles shipped with the chart: values-<name>.yaml."""
    return sorted(p.stem.removeprefix("values-") for p in chart_dir.glob("values-*.yaml"))


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_values(
    profile: str, overrides: dict | None = None, chart_dir: Path = CHART_DIR
) -> dict:
    """The user values for a profile: values-<profile>.yaml with `overrides` on top."""
    path = chart_dir / f"values-{profile}.yaml"
    if not path.is_file():
        raise ValuesError(
            f"unknown profile {profile!r}; known profiles: {', '.join(profiles(chart_dir))}"
        )
    return deep_merge(yaml.safe_load(path.read_text()) or {}, overrides or {})


@dataclass
class Rendered:
    """One render of the umbrella chart."""

    profile: str
    values: dict
    manifests: dict[str, str]
    documents: list[tuple[str, dict]] = field(default_factory=list)  # (template, object)

    @property
    def objects(self) -> list[dict]:
        return [obj for _, obj in self.documents]

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{kind}/{name} not rendered")


def load_chart(chart_dir: Path = CHART_DIR):
    import helm_python as helm

    try:
        return helm.Chart.load(str(chart_dir))
    except helm.HelmError as exc:
        raise DeployError(f"cannot load the chart at {chart_dir}: {exc}") from None


def render_values(
    values: dict,
    *,
    profile: str = "custom",
    chart_dir: Path = CHART_DIR,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Rendered:
    """Render the chart with exactly these user values."""
    import helm_python as helm

    chart = load_chart(chart_dir)
    try:
        manifests = chart.render(
            values, name=release, namespace=namespace, is_install=True, revision=1
        )
    except helm.HelmValuesError as exc:
        raise ValuesError(f"values rejected by the chart schema: {_one_line(exc)}") from None
    except helm.HelmError as exc:
        raise DeployError(f"helm could not render the chart: {_one_line(exc)}") from None
    finally:
        chart.close()
    documents = []
    for source, text in sorted(manifests.items()):
        if not source.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for obj in yaml.safe_load_all(text):
            if obj:
                documents.append((source, obj))
    return Rendered(profile, values, manifests, documents)


def render(profile: str, overrides: dict | None = None, **kwargs) -> Rendered:
    """Render the umbrella chart for a values profile (plus overrides)."""
    chart_dir = kwargs.get("chart_dir", CHART_DIR)
    values = profile_values(profile, overrides, chart_dir)
    return render_values(values, profile=profile, **kwargs)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
