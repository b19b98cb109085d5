"""`flywheel demo`: turn the flywheel unattended on the demo digits.

1. The collection: the 1,797 digit index cards as Label Studio tasks (idempotent).
2. The fixed holdout is labelled once (the evaluation set every model is scored on), and a
   small random seed set, by the demo annotator (a Label Studio user named as such).
3. N turns: each runs the pipeline (export -> features -> train -> evaluate -> register ->
   deploy -> select; a progress bar follows the steps), then the demo annotator labels what
   the champion asked for, except after the last turn: those picks stay unlabelled in Label
   Studio's "flywheel queue" tab with the model's guesses and scores, for a person to see.
   Printed per turn: labels so far, holdout accuracy, champion version, time taken.
4. The report: accuracy vs labels (PNG, also logged to MLflow), the loop latency with its
   breakdown by step, and the URLs to look at.

State lives in `<home>/data/demo/history.json`: a second `flywheel demo` continues from
where the first stopped.
"""

from __future__ import annotations

import json
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flywheel.loop import timings
from flywheel.loop.lock import loop_lock
from flywheel.loop.turn import run_turn
from flywheel.settings import Settings
from flywheel.splits import is_holdout

console = Console()


def history_path(settings: Settings) -> Path:
    return settings.data_dir / "demo" / "history.json"


def load_history(settings: Settings) -> list[dict]:
    path = history_path(settings)
    return json.loads(path.read_text()) if path.exists() else []


def save_history(settings: Settings, history: list[dict]) -> None:
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(history, indent=1))


def bootstrap(settings: Settings, seed_labels: int, seed: int = 0, limit: int | None = None) -> int:
    """The collection, the labelled holdout and the random seed set; returns labels made."""
    from flywheel.labelling import DemoAnnotator, init_demo, read_catalogue

    with console.status("the demo collection in Label Studio..."):
        init_demo(settings, limit=limit)
    items = sorted(read_catalogue(settings)["item_id"])
    holdout = [i for i in items if is_holdout(i, settings.holdout_fraction)]
    pool = [i for i in items if not is_holdout(i, settings.holdout_fraction)]
    if settings.acquisition == "hybrid":  # a seed set spread over the collection
        from flywheel.loop.seed import diverse_seed_set

        seed_set = diverse_seed_set(settings, pool, seed_labels)
    else:
        seed_set = random.Random(seed).sample(pool, min(seed_labels, len(pool)))
    annotator = DemoAnnotator(settings)
    with console.status(f"demo annotator: {len(holdout)} holdout + {len(seed_set)} seed labels"):
        return annotator.label(holdout + seed_set)


def label_selection(settings: Settings, item_ids: list[str]) -> tuple[int, float]:
    """The demo annotator answers what the model asked for; returns (count, time saved)."""
    from flywheel.labelling import DemoAnnotator

    made = DemoAnnotator(settings).label(item_ids) if item_ids else 0
    return made, time.time()


def champion_answers(
    settings: Settings, version: str, item_id: str, timeout_s: float = 60.0
) -> float | None:
    """When an item-id request through the transformer first answers with `version`
    (None when the model servers are not running)."""
    from flywheel import services
    from flywheel.errors import FlywheelError
    from flywheel.serving.client import predict_items

    states = {s.name: s.state for s in services.status(settings, ["predictor", "transformer"])}
    if set(states.values()) != {"running"}:
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if str(predict_items([item_id], settings).model_version) == str(version):
                return time.time()
        except FlywheelError:
            pass
        time.sleep(0.1)
    return None


def run_demo(
    settings: Settings,
    turns: int = 3,
    engine: str = "kfp",
    seed_labels: int | None = None,
    limit: int | None = None,
) -> list[dict]:
    """The demo holds the loop lock throughout, so the trigger service does not start
    turns of its own from the demo annotator's labels. `limit`: only the first N cards."""
    with loop_lock(settings):
        return _demo(settings, turns, engine, seed_labels, limit)


def _demo(
    settings: Settings, turns: int, engine: str, seed_labels: int | None, limit: int | None = None
) -> list[dict]:
    seed_labels = seed_labels or settings.labels_per_turn
    history = load_history(settings)
    if not history:
        made = bootstrap(settings, seed_labels, limit=limit)
        console.print(f"bootstrap: {made} labels by the demo annotator")
    else:
        last = history[-1]
        console.print(
            f"continuing after turn {len(history)} "
            f"({last['n_labels']} labels, champion v{last['champion_version']})"
        )
        made, _ = label_selection(settings, last["selected"])
        if made:
            console.print(f"demo annotator: {made} pending labels")
    labels_saved = time.time()
    for turn_index in range(turns):
        n = len(history) + 1
        with step_progress(settings, f"turn {n}"):
            report = run_turn(settings, engine=engine)
        row = report.to_dict()
        row["turn"] = n
        answered = (
            champion_answers(settings, report.champion_version, report.selected[0])
            if report.promoted and report.selected
            else None
        )
        row["loop_latency_s"] = round(answered - labels_saved, 2) if answered else None
        row["efficiency"] = efficiency(settings, [*history, row])
        history.append(row)
        save_history(settings, history)
        _print_turn(row)
        if turn_index < turns - 1:
            made, labels_saved = label_selection(settings, report.selected)
    # the last turn's picks stay unlabelled in the queue, with the model's guesses, for a
    # person to see and label (the next `flywheel demo` has the demo annotator do it)
    _report(settings, history)
    return history


STEPS = (
    "export_labels",
    "build_features",
    "train",
    "evaluate",
    "register",
    "deploy",
    "select_for_labelling",
)


@contextmanager
def step_progress(settings: Settings, title: str, poll_s: float = 0.5):
    """A progress bar over the turn's steps, advanced as each step records its timing
    (the steps may run in other processes: KFP tasks)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.time()
    stop = threading.Event()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{title}: {STEPS[0]}", total=len(STEPS))

        def watch():
            shown = -1
            while not stop.wait(poll_s):
                done = [r["step"] for r in timings.read(settings, since=started)]
                count = sum(step in done for step in STEPS)
                if count != shown:
                    shown = count
                    nxt = STEPS[count] if count < len(STEPS) else "finishing"
                    last = f" ({done[-1]} done)" if done else ""
                    progress.update(task, completed=count, description=f"{title}: {nxt}{last}")
                    if not console.is_terminal:
                        console.print(f"{title}: {count}/{len(STEPS)} steps, now {nxt}")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield progress
        finally:
            stop.set()
            watcher.join()


def efficiency(settings: Settings, history: list[dict]) -> dict:
    """The label-efficiency report after the latest turn (flywheel.loop.efficiency), on
    training labels (the labelled holdout is not training data)."""
    from dataclasses import asdict

    from flywheel.labelling import read_catalogue
    from flywheel.loop.efficiency import should_stop

    held = sum(is_holdout(i, settings.holdout_fraction) for i in read_catalogue(settings).item_id)
    points = [(max(1, h["n_labels"] - held), h["champion_accuracy"]) for h in history]
    return asdict(should_stop(points, settings.labels_per_turn))


def _print_turn(row: dict) -> None:
    promoted = "promoted" if row["promoted"] else "kept"
    latency = f", loop latency {row['loop_latency_s']} s" if row.get("loop_latency_s") else ""
    console.print(
        f"[bold]turn {row['turn']}[/]: {row['n_labels']} labels, holdout accuracy "
        f"{row['champion_accuracy']:.3f} (challenger v{row['model_version']} "
        f"{row['challenger_accuracy']:.3f}, {promoted}), champion v{row['champion_version']}, "
        f"{row['seconds']:.1f} s{latency}"
    )
    eff = row.get("efficiency")
    if eff:
        console.print(
            f"  label efficiency: {eff['reason']}"
            + (" -> stopping rule met" if eff["stop"] else " -> keep labelling")
        )


def plot_history(history: list[dict], path: Path, title: str = "flywheel demo") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [h["n_labels"] for h in history],
        [h["champion_accuracy"] for h in history],
        marker="o",
        label="champion",
    )
    ax.plot(
        [h["n_labels"] for h in history],
        [h["challenger_accuracy"] for h in history],
        marker="x",
        linestyle=":",
        label="challenger",
    )
    ax.set_xlabel("labels (including the holdout)")
    ax.set_ylabel("holdout accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _report(settings: Settings, history: list[dict]) -> None:
    import mlflow

    png = plot_history(history, settings.data_dir / "demo" / "accuracy_vs_labels.png")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.mlflow_experiment)
    with mlflow.start_run(run_name=f"demo-after-turn-{len(history)}") as run:
        mlflow.log_artifact(str(png))
        mlflow.log_dict({"history": history}, "demo_history.json")
        for h in history:
            mlflow.log_metric(
                "champion_holdout_accuracy", h["champion_accuracy"], step=h["n_labels"]
            )
        exp_id = run.info.experiment_id
    table = Table("turn", "labels", "holdout acc", "champion", "time (s)", "loop latency (s)")
    for h in history:
        table.add_row(
            str(h["turn"]),
            str(h["n_labels"]),
            f"{h['champion_accuracy']:.3f}",
            f"v{h['champion_version']}",
            f"{h['seconds']:.1f}",
            str(h.get("loop_latency_s") or "-"),
        )
    console.print(table)
    last = history[-1]
    console.print(
        "step times of the last turn: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in last["steps"].items())
    )
    ls_url = settings.label_studio_base_url
    console.print(f"plot: {png}")
    console.print(f"MLflow runs:      {settings.tracking_uri}/#/experiments/{exp_id}/runs")
    console.print(f"MLflow model:     {settings.tracking_uri}/#/models/{settings.model_name}")
    queued = len(last.get("selected") or [])
    console.print(
        f"Label Studio:     {ls_url}/projects/ : the {queued} items the last turn picked wait "
        "unlabelled in the 'flywheel queue' tab, most uncertain first, with the model's guesses"
    )
    transformer = settings.url(settings.transformer_port)
    console.print(f"Serving endpoint: {transformer}/v1/models/{settings.model_name}:predict")
    console.print(
        f"  curl -s {transformer}/v1/models/{settings.model_name}:predict "
        f"-H 'Content-Type: application/json' -d '{{\"instances\": [\"digits-0007\"]}}'"
    )
    console.print(f"timings: {timings.path(settings)}")
