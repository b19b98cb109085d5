"""One drift check: recent served inputs against the champion's training set.

    flywheel monitor drift [--hours H]          # CLI
    check_drift(settings, since=None) -> DriftReport

1. Current: the prediction log of the last `FLYWHEEL_DRIFT_WINDOW_H` hours (at most
   `FLYWHEEL_DRIFT_MAX_ITEMS` newest rows; an item asked for twice counts once). Item-id rows
   get their features from the online store, inline-image rows carry theirs in the log.
2. Reference: the champion's label snapshot (the run's `snapshot_id` tag, the parquet under
   `settings.snapshot_dir`): its items' features from the online store.
3. The champion (loaded from MLflow) scores both sides: confidence and predicted classes.
4. Tests (flywheel.monitoring.drift): representation MMD, confidence KS, class-mix
   chi-square, plus one MMD per collection slice (reported; the decision uses the three).
5. Writes `<home>/data/monitoring/drift-<stamp>.html` (and `.json`), logs both and the
   p-values to MLflow (experiment `<FLYWHEEL_MLFLOW_EXPERIMENT>-monitoring`, run `drift`).
6. Drift found: the served items with the largest MMD witness (at most
   `FLYWHEEL_DRIFT_REVIEW_MAX`, only items with a Label Studio task) get the tag
   `data.drift_review` and show in the Data Manager tab "drift review"; a `drift_found`
   notification is sent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from flywheel.errors import InputError
from flywheel.monitoring import drift
from flywheel.settings import Settings

REVIEW_FIELD = "drift_review"
REVIEW_VIEW = "drift review"
INLINE = "(inline images)"


@dataclass
class DriftReport:
    drift_found: bool
    champion_version: str
    snapshot_id: str
    window_start: str
    n_reference: int
    n_current: int
    p_values: dict[str, float]
    statistics: dict[str, float]
    slices: list[dict]
    class_mix: dict[str, list[int]]
    top_items: list[dict]
    tagged: int = 0
    html_path: str = ""
    run_id: str | None = None
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _champion(settings: Settings):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        mv = client.get_model_version_by_alias(settings.model_name, "champion")
    except MlflowException:
        raise InputError(
            f"model {settings.model_name!r} has no champion to compare with; run a turn first"
        ) from None
    snapshot_id = client.get_run(mv.run_id).data.tags.get("snapshot_id", "none")
    return str(mv.version), snapshot_id


def score_version(settings: Settings, version: str, rows: np.ndarray) -> np.ndarray:
    """Class probabilities [n, k] of model `version` for rows [n, d], in this process."""
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    model = mlflow.pytorch.load_model(f"models:/{settings.model_name}/{version}")
    try:
        model.eval()
    except NotImplementedError:  # exported programs are always in eval mode
        pass
    with torch.no_grad():
        out = [
            model(torch.from_numpy(rows[s : s + 1024])).float().numpy()
            for s in range(0, len(rows), 1024)
        ]
    return np.concatenate(out)


def _current(settings: Settings, since: datetime):
    """Recent served rows: item_id (or None), source, collection, features [n, d]."""
    from flywheel import features
    from flywheel.serving.predlog import read_predictions

    log = read_predictions(settings, since=since)
    if log.empty:
        return log, np.zeros((0, 0), np.float32)
    log = log.tail(settings.drift_max_items)
    keyed = log["item_id"].fillna("") + "|" + log["source"]
    log = log[~keyed.duplicated(keep="last") | log["item_id"].isna()].reset_index(drop=True)
    vectors: list[np.ndarray | None] = [None] * len(log)
    store = [n for n in range(len(log)) if log.at[n, "source"] == "store"]
    if store:
        ids = [log.at[n, "item_id"] for n in store]
        try:
            found = features.online_features(ids, settings)
        except features.UnknownItemsError as exc:  # items gone from the store since: skip
            gone = set(exc.item_ids)
            store = [n for n, i in zip(store, ids, strict=True) if i not in gone]
            found = features.online_features([log.at[n, "item_id"] for n in store], settings)
        for n, row in zip(store, found, strict=True):
            vectors[n] = row
    for n in range(len(log)):
        if vectors[n] is None and log.at[n, "features"] is not None:
            vectors[n] = np.asarray(log.at[n, "features"], dtype=np.float32)
    keep = [n for n, v in enumerate(vectors) if v is not None]
    log = log.iloc[keep].reset_index(drop=True)
    return log, np.stack([vectors[n] for n in keep]).astype(np.float32)


def check_drift(
    settings: Settings,
    since: datetime | None = None,
    tag: bool = True,
    log_to_mlflow: bool = True,
    notify: bool = True,
) -> DriftReport:
    """Run the check (module doc); raises InputError when there is too little to compare."""
    from flywheel import features
    from flywheel.cards import read_catalogue_or_none
    from flywheel.labelling import read_snapshot
    from flywheel.splits import is_holdout

    since = since or datetime.now(UTC) - timedelta(hours=settings.drift_window_h)
    version, snapshot_id = _champion(settings)
    snapshot = read_snapshot(settings, snapshot_id)
    ref_ids = snapshot["item_id"].astype(str).tolist()
    reference = features.online_features(ref_ids, settings)
    current_log, current = _current(settings, since)
    if len(current) < settings.drift_min_items:
        raise InputError(
            f"only {len(current)} served predictions since {since:%Y-%m-%d %H:%M} UTC "
            f"(FLYWHEEL_DRIFT_MIN_ITEMS={settings.drift_min_items}); serve more or widen "
            "the window (--hours)"
        )
    classes = list(settings.label_classes)
    ref_probs = score_version(settings, version, reference)
    cur_probs = score_version(settings, version, current)
    holdout = np.array([is_holdout(i, settings.holdout_fraction) for i in ref_ids])
    ref_conf = ref_probs[holdout].max(1) if holdout.sum() >= 5 else ref_probs.max(1)

    mmd = drift.mmd_test(reference, current, seed=0)
    ks, p_conf = drift.confidence_test(ref_conf, cur_probs.max(1))
    chi2, p_mix, ref_counts, cur_counts = drift.class_mix_test(
        ref_probs.argmax(1), cur_probs.argmax(1), len(classes)
    )
    p_values = {"representation": mmd.p_value, "confidence": p_conf, "class_mix": p_mix}
    found = drift.is_drift(p_values, settings.drift_alpha)

    catalogue = read_catalogue_or_none(settings)
    coll = {}
    if catalogue is not None:
        coll = dict(zip(catalogue["item_id"], catalogue["collection"], strict=True))
    ref_coll = np.array([coll.get(i, "-") for i in ref_ids])
    cur_coll = np.array(
        [
            coll.get(i, "-") if s == "store" else INLINE
            for i, s in zip(current_log["item_id"], current_log["source"], strict=True)
        ]
    )
    slices = []
    for name in sorted(set(cur_coll)):
        sel = cur_coll == name
        ref_sel = ref_coll == name
        base = reference[ref_sel] if ref_sel.sum() >= 10 else reference
        if sel.sum() < 10:
            slices.append({"slice": name, "n": int(sel.sum()), "mmd2": None, "p_value": None})
            continue
        res = drift.mmd_test(base, current[sel], n_permutations=200, seed=1)
        slices.append(
            {
                "slice": name,
                "n": int(sel.sum()),
                "mmd2": res.mmd2,
                "p_value": res.p_value,
                "against": name if ref_sel.sum() >= 10 else "all training items",
            }
        )

    order = np.argsort(-mmd.witness, kind="stable")
    top = []
    for n in order:
        if mmd.witness[n] <= 0 or len(top) >= settings.drift_review_max:
            break
        item = current_log.at[n, "item_id"]
        top.append(
            {
                "item_id": item,
                "source": current_log.at[n, "source"],
                "witness": float(mmd.witness[n]),
                "predicted": classes[int(cur_probs[n].argmax())],
                "confidence": float(cur_probs[n].max()),
            }
        )
    report = DriftReport(
        drift_found=found,
        champion_version=version,
        snapshot_id=snapshot_id,
        window_start=since.isoformat(),
        n_reference=len(reference),
        n_current=len(current),
        p_values=p_values,
        statistics={"mmd2": mmd.mmd2, "ks": ks, "chi2": chi2, "bandwidth": mmd.bandwidth},
        slices=slices,
        class_mix={
            "classes": classes,
            "reference": ref_counts.tolist(),
            "current": cur_counts.tolist(),
        },
        top_items=top,
        alpha=settings.drift_alpha,
    )
    if found and tag:
        report.tagged = _tag(settings, report)
    from flywheel.monitoring.drift_report import render

    out = settings.data_dir / "monitoring" / f"drift-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out.parent.mkdir(parents=True, exist_ok=True)
    html = render(report, reference, current, ref_conf, cur_probs.max(1))
    Path(f"{out}.html").write_text(html)
    report.html_path = f"{out}.html"
    Path(f"{out}.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    (settings.data_dir / "monitoring" / "latest.json").write_text(
        json.dumps(report.to_dict(), default=str)
    )
    if log_to_mlflow:
        report.run_id = _log(settings, report, f"{out}.html", f"{out}.json")
    if found and notify:
        from flywheel.monitoring.notify import notify as send

        send(
            settings,
            "drift_found",
            f"drift found against champion v{version}: "
            f"p-values {', '.join(f'{k} {v:.3g}' for k, v in p_values.items())}; "
            f"{report.tagged} items tagged for review",
            report=report.html_path,
        )
    return report


def _tag(settings: Settings, report: DriftReport) -> int:
    from flywheel.labelling import client as lsc
    from flywheel.labelling.review import tag_for_review

    ids = [t["item_id"] for t in report.top_items if t["item_id"]]
    if not ids:
        report.notes.append("no drifted item has an item id: nothing to tag")
        return 0
    known = lsc.tasks_by_item(lsc.project_tasks(settings))
    keep = [t for t in report.top_items if t["item_id"] in known]
    if len(keep) < len(ids):
        report.notes.append(f"{len(ids) - len(keep)} drifted items have no Label Studio task")
    tag = f"drift-{datetime.now(UTC):%Y-%m-%dT%H:%M}-v{report.champion_version}"
    return tag_for_review(
        settings,
        [t["item_id"] for t in keep],
        REVIEW_FIELD,
        tag,
        REVIEW_VIEW,
        [t["witness"] for t in keep],
    )


def _log(settings: Settings, report: DriftReport, html: str, data: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    name = f"{settings.mlflow_experiment}-monitoring"
    exp = mlflow.set_experiment(name)
    from mlflow import MlflowClient

    MlflowClient(settings.tracking_uri).set_experiment_tag(
        exp.experiment_id, "mlflow.experimentKind", "custom_model_development"
    )
    with mlflow.start_run(run_name="drift") as run:
        mlflow.set_tags(
            {
                "drift_found": str(report.drift_found),
                "champion_version": report.champion_version,
                "snapshot_id": report.snapshot_id,
            }
        )
        mlflow.log_params({"alpha": report.alpha, "window_start": report.window_start})
        mlflow.log_metrics(
            {
                "n_reference": report.n_reference,
                "n_current": report.n_current,
                "drift_found": float(report.drift_found),
                "tagged": report.tagged,
                **{f"p_{k}": v for k, v in report.p_values.items()},
                **{k: float(v) for k, v in report.statistics.items()},
            }
        )
        mlflow.log_artifact(html)
        mlflow.log_artifact(data)
        return run.info.run_id


def latest(settings: Settings) -> dict | None:
    """The last drift check's summary (for `flywheel report`), or None."""
    path = settings.data_dir / "monitoring" / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None
