"""`flywheel labels quality`: agreement, suspected label errors and class balance of the
current labels, and the "label review" tab in Label Studio for the suspects.

`quality_report(settings)` exports a snapshot (the export's rules and agreement numbers),
reads the snapshot items' features from the feature store, computes out-of-fold class
probabilities with the loop's training code and lists the suspected label errors
(`flywheel.labelling.noise`). When the demo annotator made mistakes on purpose
(`FLYWHEEL_DEMO_NOISE_RATE`), the report also scores the suspects against them.

`send_to_review(settings, suspects, tag)` marks the suspects' tasks (`data.review`, highest
for the most suspicious; `data.review_suggestion`) so the Data Manager tab "label review"
lists them, and attaches the model's suggestion as a prediction (`model_version` = tag). The
project's pre-annotation model version is left alone. A reviewer who relabels an item adds a
newer annotation, which the next snapshot takes (latest wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.labelling import client as lsc
from flywheel.labelling.noise import (
    Suspect,
    class_balance,
    out_of_fold_probabilities,
    precision_recall,
    suspect_label_errors,
)
from flywheel.settings import Settings

REVIEW_VIEW = "label review"


@dataclass
class QualityReport:
    snapshot_id: str
    labels: int
    agreement: dict
    balance: dict[str, int]
    suspects: list[Suspect] = field(default_factory=list)
    injected: dict | None = None  # precision / recall against the demo's deliberate errors


def quality_report(settings: Settings, folds: int = 5, max_steps: int = 300) -> QualityReport:
    from flywheel.features.retrieval import training_set
    from flywheel.labelling.annotator import injected_errors
    from flywheel.labelling.export import export_labels

    snap = export_labels(settings)
    frame = snap.frame
    report = QualityReport(
        snap.snapshot_id, len(frame), snap.stats["agreement"], class_balance(frame["label"])
    )
    if len(frame) >= 2 * folds and frame["label"].nunique() >= 2:
        import numpy as np

        with_features = training_set(frame, settings)
        x = np.stack(with_features["pixels"].tolist())
        labels = with_features["label"].astype(str).tolist()
        probs = out_of_fold_probabilities(
            x, labels, list(settings.label_classes), folds, 0, max_steps, settings.image_size
        )
        ids = with_features["item_id"].astype(str).tolist()
        report.suspects = suspect_label_errors(labels, probs, list(settings.label_classes), ids)
    injected = injected_errors(settings)
    if injected:
        in_snapshot = set(frame["item_id"].astype(str))
        labelled = dict(zip(frame["item_id"].astype(str), frame["label"], strict=True))
        still_wrong = [i for i, wrong in injected.items() if labelled.get(i) == wrong]
        report.injected = precision_recall(report.suspects, still_wrong)
        report.injected["in_snapshot"] = len(in_snapshot & set(injected))
    return report


def ensure_review_view(settings: Settings, project, ls=None) -> None:
    """A Data Manager tab listing the tasks marked for label review, most suspicious first."""
    ls = ls or lsc.client(settings)
    views = lsc._call("list views", settings, ls.views.list, project=project.id)
    if any((v.data or {}).get("title") == REVIEW_VIEW for v in views):
        return
    data = {
        "title": REVIEW_VIEW,
        "ordering": ["-tasks:data.review"],
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:data.review",
                    "operator": "greater",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }
    lsc._call("add the label review view", settings, ls.views.create, project=project.id, data=data)


def send_to_review(settings: Settings, suspects: list[Suspect], tag: str) -> int:
    """Mark the suspects' tasks for review with the model's suggestion; returns how many."""
    from label_studio_sdk import PredictionRequest

    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    ensure_review_view(settings, project, ls)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    existing = lsc.project_predictions(settings, project, ls)
    predictions, changed = [], 0
    for rank, s in enumerate(suspects):
        task = tasks.get(s.item_id)
        if task is None:
            continue
        data = dict(task["data"])
        data.update(
            review=len(suspects) - rank,
            review_suggestion=f"{s.suggestion} (p={s.suggestion_probability:.2f}; "
            f"labelled {s.label}, p={s.label_probability:.2f})",
        )
        lsc._call(f"mark task {task['id']}", settings, ls.tasks.update, str(task["id"]), data=data)
        changed += 1
        if not any(p["model_version"] == tag for p in existing.get(task["id"], [])):
            predictions.append(
                PredictionRequest(
                    task=task["id"],
                    model_version=tag,
                    score=s.suggestion_probability,
                    result=[
                        {
                            "from_name": lsc.FROM_NAME,
                            "to_name": lsc.TO_NAME,
                            "type": "choices",
                            "value": {"choices": [s.suggestion]},
                        }
                    ],
                )
            )
    if predictions:
        lsc._call(
            "import review suggestions",
            settings,
            ls.projects.import_predictions,
            project.id,
            request=predictions,
        )
    return changed
