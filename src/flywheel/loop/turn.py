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


def run_turn(settings: Settings, engine: str = "direct", params: dict | None = None,
             k: int | None = None, strategy: str | None = None) -> TurnReport:
    k = settings.labels_per_turn if k is None else k
    strategy = strategy or settings.acquisition
    started = time.time()
    if engine == "kfp":
        # pipelines/ composes the KFP side; flywheel itself never imports kfp.
        runner = importlib.import_module("pipelines.run")
        runner.run_local(settings, "turn", params=params, k=k, strategy=strategy)
    else:
        _direct(settings, params, k, strategy)
    rows = timings.read(settings, since=started)
    by_step = {r["step"]: r for r in rows if r.get("ok")}
    version = by_step["train"]["model_version"]
    reg = by_step["register"]
    champion = reg["champion_version"]
    evaluation = by_step["evaluate"]
    champion_acc = (evaluation["challenger_accuracy"] if reg["promoted"] or champion == version
                    else evaluation["champion_accuracy"])
    selected = json.loads(selection_path(settings).read_text())["item_ids"] \
        if selection_path(settings).exists() else []
    return TurnReport(
        n_labels=by_step["export_labels"]["n_labels"], model_version=version,
        champion_version=champion, promoted=bool(reg["promoted"]),
        challenger_accuracy=evaluation["challenger_accuracy"], champion_accuracy=champion_acc,
        selected=selected, seconds=time.time() - started,
        steps={r["step"]: r["seconds"] for r in rows}, engine=engine, started=started,
    )


def _direct(settings: Settings, params, k: int, strategy: str) -> None:
    snap = steps.export_labels(settings=settings)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        training_set = str(Path(tmp) / "training_set.parquet")
        steps.build_features(snap["snapshot_id"], training_set, settings=settings)
        trained = steps.train(training_set, snap["snapshot_id"], params, settings=settings)
    version = trained["model_version"]
    steps.evaluate(version, settings=settings)
    decision = steps.register(version, settings=settings)
    if decision["promoted"]:
        steps.deploy(decision["champion_version"], settings=settings)
    steps.select_for_labelling(decision["champion_version"], k, strategy, settings=settings)
