"""One turn of the loop, run by a runner: a function `(settings, params, k, strategy) ->
outputs` (the steps' typed outputs: n_labels, model_version, challenger_accuracy,
champion_accuracy, promoted, and optionally champion_version, selected).

`run_direct` runs the steps in this process; the local Kubeflow pipeline runner lives with
the pipelines (`flywheel.engines` names both). `run_turn` takes a runner or an engine name
and returns a TurnReport: labels used, the champion and its holdout accuracy, whether the
challenger was promoted, the items chosen for labelling, and step timings.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flywheel.loop import steps, timings
from flywheel.loop.lock import loop_lock
from flywheel.settings import Settings

Runner = Callable[..., dict]


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
    engine: str | Runner = "direct",
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


def _turn(settings: Settings, engine: str | Runner, params, k, strategy) -> TurnReport:
    k = settings.labels_per_turn if k is None else k
    strategy = strategy or settings.acquisition
    started = time.time()
    if isinstance(engine, str):
        from flywheel import engines

        runner, name = engines.runner(engine), engine
    else:
        runner, name = engine, getattr(engine, "__name__", "custom")
    out = runner(settings, params, k, strategy)
    promoted = bool(out["promoted"])
    version = str(out["model_version"])
    champion = str(out.get("champion_version") or steps.current_champion(settings))
    champion_acc = (
        out["challenger_accuracy"] if promoted or champion == version else out["champion_accuracy"]
    )
    selected = out.get("selected")
    if selected is None:  # the local pipeline: its selection output is in a branch
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
        steps=out.get("steps") or _recorded_steps(settings, started),
        engine=name,
        started=started,
    )


def _recorded_steps(settings: Settings, started: float) -> dict[str, float]:
    """Step times a runner did not return (the local pipeline's tasks are processes of
    their own): the timings they recorded since the turn started."""
    return {r["step"]: r["seconds"] for r in timings.read(settings, since=started)}


def run_direct(settings: Settings, params, k: int, strategy: str) -> dict:
    """The runner of the same steps as the pipeline, in this process. Its outputs carry the
    selected items and each step's time."""
    took: dict[str, float] = {}

    def step(fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, settings=settings, **kwargs)
        finally:
            took[fn.__name__] = round(time.perf_counter() - start, 3)

    snap = step(steps.export_labels)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        training_set = str(Path(tmp) / "training_set.parquet")
        step(steps.build_features, snap["snapshot_id"], training_set)
        trained = step(steps.train, training_set, snap["snapshot_id"], params)
    version = trained["model_version"]
    evaluated = step(steps.evaluate, version)
    decision = step(steps.register, version)
    if decision["promoted"]:
        step(steps.deploy, decision["champion_version"])
    chosen = step(steps.select_for_labelling, decision["champion_version"], k, strategy)
    return {
        "steps": took,
        "selected": chosen["item_ids"],
        "n_labels": snap["n_labels"],
        "model_version": version,
        **evaluated,
        "promoted": decision["promoted"],
        "champion_version": decision["champion_version"],
    }
