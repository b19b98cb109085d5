"""One turn of the loop, run in this process (`engine="direct"`) or as the local Kubeflow
pipeline (`engine="kfp"`, the same steps as KFP tasks with caching).

`run_turn` returns a TurnReport: labels used, the champion and its holdout accuracy,
whether the challenger was promoted, the items chosen for labelling, and step timings.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flywheel.loop import steps, timings
from flywheel.loop.lock import loop_lock
from flywheel.settings import Settings


@dataclass
class TurnReport:
    n_labels: int
    model_version: str
    champion_version: str
    promoted: bool
    challenger_accuracy: float
    champion_accuracy: float  # the champion after the turn, on the fixed holdout
    selected: list[str]
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    engine: str = "direct"
    started: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def selection_path(settings: Settings) -> Path:
    return settings.data_dir / "loop" / "last_selection.json"


def run_turn(
    settings: Settings,
    engine: str = "direct",
    params: dict | None = None,
    k: int | None = None,
    strategy: str | None = None,
    wait: bool = True,
) -> TurnReport:
    """One turn; one at a time (`wait=False`: raise lock.Busy if a turn is running)."""
    from flywheel.monitoring.notify import notify

    with loop_lock(settings, wait=wait):
        try:
            report = _turn(settings, engine, params, k, strategy)
        except Exception as exc:
            notify(settings, "turn_failed", f"{type(exc).__name__}: {exc}"[:500])
            raise
    notify(
        settings,
        "turn_done",
        f"{report.n_labels} labels, v{report.model_version} "
        f"({'promoted' if report.promoted else 'not promoted'}), champion "
        f"v{report.champion_version} at {report.champion_accuracy:.3f}, "
        f"{len(report.selected)} items queued",
        champion_version=report.champion_version,
    )
    return report


def _turn(settings: Settings, engine: str, params, k, strategy) -> TurnReport:
    k = settings.labels_per_turn if k is None else k
    strategy = strategy or settings.acquisition
    started = time.time()
    if engine == "kfp":
        # pipelines/ composes the KFP side; flywheel itself never imports kfp.
        runner = importlib.import_module("pipelines.run")
        out = runner.run_local(settings, "turn", params=params, k=k, strategy=strategy)
    else:
        out = _direct(settings, params, k, strategy)
    promoted = bool(out["promoted"])
    version = str(out["model_version"])
    champion = str(out.get("champion_version") or steps.current_champion(settings))
    champion_acc = (
        out["challenger_accuracy"] if promoted or champion == version else out["champion_accuracy"]
    )
    path = selection_path(settings)
    selected = json.loads(path.read_text())["item_ids"] if path.exists() else []
    return TurnReport(
        n_labels=int(out["n_labels"]),
        model_version=version,
        champion_version=champion,
        promoted=promoted,
        challenger_accuracy=float(out["challenger_accuracy"]),
        champion_accuracy=float(champion_acc),
        selected=selected,
        seconds=time.time() - started,
        steps={r["step"]: r["seconds"] for r in timings.read(settings, since=started)},
        engine=engine,
        started=started,
    )


def _direct(settings: Settings, params, k: int, strategy: str) -> dict:
    """The same steps as the pipeline, in this process."""
    snap = steps.export_labels(settings=settings)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        training_set = str(Path(tmp) / "training_set.parquet")
        steps.build_features(snap["snapshot_id"], training_set, settings=settings)
        trained = steps.train(training_set, snap["snapshot_id"], params, settings=settings)
    version = trained["model_version"]
    evaluated = steps.evaluate(version, settings=settings)
    decision = steps.register(version, settings=settings)
    if decision["promoted"]:
        steps.deploy(decision["champion_version"], settings=settings)
    steps.select_for_labelling(decision["champion_version"], k, strategy, settings=settings)
    return {
        "n_labels": snap["n_labels"],
        "model_version": version,
        **evaluated,
        "promoted": decision["promoted"],
        "champion_version": decision["champion_version"],
    }
