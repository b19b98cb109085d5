"""The steps of one turn, as plain functions (the KFP components call these).

Each step reads the settings from the environment, does one thing through the library,
records its timing, and returns a small dict of plain values (what KFP passes on).

    export_labels        Label Studio -> label snapshot (content-hashed parquet)
    build_features       catalogue -> Feast (apply + materialize) -> training set parquet
    train                training set -> MLflow run + registered version (`challenger`)
    evaluate             challenger vs champion on the same fixed holdout
    register             promote to `champion` if it wins (else keep the champion)
    deploy               the model servers answer with the new champion
    select_for_labelling champion scores the unlabelled pool -> most uncertain items become
                         the first Label Studio tasks, with the model's guess attached
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from flywheel.errors import FlywheelError, ServiceError
from flywheel.loop.timings import timed
from flywheel.settings import Settings, get_settings
from flywheel.splits import is_holdout


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def export_labels(out_path: str | None = None, settings: Settings | None = None) -> dict:
    from flywheel.labelling import export_labels as export

    s = _settings(settings)
    with timed(s, "export_labels") as rec:
        snap = export(s)
        if out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            snap.frame.to_parquet(out_path, index=False)
        rec.update(snapshot_id=snap.snapshot_id, n_labels=len(snap.frame))
    return {"snapshot_id": snap.snapshot_id, "n_labels": len(snap.frame), "path": str(snap.path)}


def build_features(snapshot_id: str, out_path: str, settings: Settings | None = None) -> dict:
    from flywheel import features
    from flywheel.labelling import read_snapshot

    s = _settings(settings)
    with timed(s, "build_features", snapshot_id=snapshot_id):
        built = features.build_features(s)
        frame = features.training_set(_without_quarantined(s, read_snapshot(s, snapshot_id)), s)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out_path, index=False)
    return {"n_rows": len(frame), "new_feature_rows": int(getattr(built, "new_rows", 0) or 0)}


def _without_quarantined(s: Settings, snapshot_frame):
    """The label snapshot less the quarantined items (poison never stops a turn)."""
    from flywheel.labelling.quarantine import quarantined_ids

    held = quarantined_ids(s)
    return snapshot_frame[~snapshot_frame["item_id"].astype(str).isin(held)]


def read_training_set(path: str):
    import pandas as pd

    frame = pd.read_parquet(path)
    for column in ("pixels", "embedding"):  # embedding: FLYWHEEL_REPRESENTATION=embedding
        if column in frame.columns:
            frame[column] = [np.asarray(p, dtype=np.float32) for p in frame[column]]
    return frame


def train(
    training_set_path: str,
    snapshot_id: str,
    params: dict | None = None,
    settings: Settings | None = None,
    training_set_uri: str | None = None,
) -> dict:
    """Train on the training set: in this process locally; on the cluster as a TrainJob
    whose pods read the set from its URI (`training_set_uri`, the KFP artifact's)."""
    from flywheel.training import TrainConfig
    from flywheel.training import train as train_model

    s = _settings(settings)
    with timed(s, "train", snapshot_id=snapshot_id) as rec:
        out = _reuse_turn_version(s, snapshot_id, params)
        if out is not None:  # a rerun of this turn: no duplicate version
            rec.update(out, reused=True)
            return out
        config = TrainConfig(
            snapshot_id=snapshot_id, feature_service=s.feature_service, **(params or {})
        )
        if s.mode == "cluster":
            from flywheel.training.trainjob import run_trainjob

            result = run_trainjob(s, training_set_uri or training_set_path, config)
        else:
            result = train_model(read_training_set(training_set_path), s, config)
        out = {
            "model_version": str(result.version),
            "run_id": str(result.run_id),
            "model_uri": str(result.model_uri),
            "holdout_accuracy": float(result.holdout_accuracy),
            "val_accuracy": float(
                result.val_accuracy if result.val_accuracy is not None else result.holdout_accuracy
            ),
            "n_train": int(result.n_train),
        }
        rec.update(out)
    return out


def _reuse_turn_version(s: Settings, snapshot_id: str, params: dict | None) -> dict | None:
    """The train step's output for the version a run of this turn already registered."""
    from flywheel.registry import set_alias
    from flywheel.registry.turns import version_for_turn

    found = version_for_turn(s, snapshot_id, params)
    if found is None:
        return None
    set_alias(s, "challenger", found.version)
    val = found.val_accuracy if found.val_accuracy is not None else found.holdout_accuracy
    return {
        "model_version": found.version,
        "run_id": found.run_id,
        "model_uri": f"models:/{s.model_name}/{found.version}",
        "holdout_accuracy": found.holdout_accuracy,
        "val_accuracy": float(val),
        "n_train": found.n_train,
    }


def evaluate(model_version: str, settings: Settings | None = None) -> dict:
    """The challenger's and the champion's accuracy on the same fixed holdout (measured by
    the train step on the holdout items, logged on the challenger's run)."""
    from mlflow import MlflowClient

    s = _settings(settings)
    with timed(s, "evaluate", model_version=model_version) as rec:
        client = MlflowClient(tracking_uri=s.tracking_uri)
        mv = client.get_model_version(s.model_name, model_version)
        metrics = client.get_run(mv.run_id).data.metrics
        challenger = float(metrics.get("holdout_accuracy", float("nan")))
        champion = metrics.get("champion_holdout_accuracy")
        out = {
            "challenger_accuracy": challenger,
            "champion_accuracy": float(champion) if champion is not None else -1.0,
        }
        rec.update(out)
    return out


def register(model_version: str, settings: Settings | None = None) -> dict:
    from flywheel.registry import promote

    s = _settings(settings)
    if s.promotion == "approve":  # the winner waits for `flywheel registry approve`
        from flywheel.registry.approval import gate

        with timed(s, "register", model_version=model_version) as rec:
            out = gate(s, model_version)
            rec.update(out)
        return out
    with timed(s, "register", model_version=model_version) as rec:
        decision = promote(s, model_version)
        if decision.promoted:
            from flywheel.monitoring.notify import notify

            notify(s, "promotion", f"v{model_version} is champion ({decision.reason})")
        out = {
            "promoted": decision.promoted,
            "champion_version": str(decision.champion_version),
            "action": decision.action,
            "reason": decision.reason,
        }
        rec.update(out)
    return out


def current_champion(s: Settings) -> str:
    """The version the `champion` alias points to."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=s.tracking_uri)
    return str(client.get_model_version_by_alias(s.model_name, "champion").version)


def deploy(
    champion_version: str | None = None,
    settings: Settings | None = None,
    timeout_s: float = 120.0,
) -> dict:
    """Dev box: tell the running predictor to reload and wait until it serves the version.
    Cluster: roll the InferenceService (canary) to the new champion."""
    s = _settings(settings)
    champion_version = champion_version or current_champion(s)
    with timed(s, "deploy", model_version=champion_version) as rec:
        if s.mode == "cluster":
            from flywheel.loop.rollout import roll_out

            served = roll_out(s, champion_version)
        else:
            served = _reload_local(s, champion_version, timeout_s)
        rec.update(served_version=served)
    return {"served_version": served}


def _reload_local(s: Settings, version: str, timeout_s: float) -> str:
    import httpx

    from flywheel import services
    from flywheel.serving.client import reload

    [status] = services.status(s, ["predictor"])
    if status.state != "running":
        return "not-running"  # nothing serves yet: the next `flywheel up` loads the champion
    reload(s, timeout=timeout_s)
    url = f"{s.url(s.predictor_port)}/v1/models/{s.model_name}:predict"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = {"instances": [[0.0] * _served_dim(s)]}
        answer = httpx.post(url, json=probe, timeout=10)
        if answer.status_code == 200 and str(answer.json().get("model_version")) == version:
            return str(version)
        time.sleep(0.2)
    raise ServiceError(
        f"the predictor at {url} did not serve version {version} within "
        f"{timeout_s:.0f} s; see `flywheel logs predictor`"
    )


def _served_dim(s: Settings) -> int:
    """The row length the predictor's loaded model takes (a head on embeddings: the
    backbone's; else the pixels')."""
    import httpx

    try:
        meta = httpx.get(f"{s.url(s.predictor_port)}/v2/models/{s.model_name}", timeout=10)
        d = int(meta.json()["inputs"][0]["shape"][-1])
        return d if d > 0 else s.image_size**2
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
        return s.image_size**2


def score_pool(s: Settings, version: str, item_ids: list[str]) -> np.ndarray:
    """Class probabilities of `version` for the items: through the running model servers
    when they serve that version (their prediction log records it), else in this process
    from the online features."""
    served = _score_served(s, version, item_ids)
    return served if served is not None else _score_in_process(s, version, item_ids)


def _score_served(s: Settings, version: str, item_ids: list[str]) -> np.ndarray | None:
    from flywheel import services
    from flywheel.serving.client import predict_items

    if s.mode != "local":
        return None
    states = {r.state for r in services.status(s, ["predictor", "transformer"])}
    if states != {"running"}:
        return None
    out = []
    for start in range(0, len(item_ids), s.max_batch):
        answer = predict_items(item_ids[start : start + s.max_batch], s)
        if str(answer.model_version) != str(version):
            return None
        out.append(np.asarray(answer.probabilities, dtype=np.float32))
    return np.concatenate(out) if out else None


def _score_in_process(s: Settings, version: str, item_ids: list[str]) -> np.ndarray:
    import torch

    from flywheel.features.vectors import vectors_for
    from flywheel.registry.representation import model_representation
    from flywheel.registry.trusted import load_trusted

    rep = model_representation(s, version)["representation"]
    model = load_trusted(s, version).module  # UntrustedModel: nothing is scored
    out = []
    for start in range(0, len(item_ids), 1024):
        x = torch.from_numpy(vectors_for(item_ids[start : start + 1024], s, rep))
        with torch.no_grad():
            out.append(model(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(s.label_classes)), np.float32)


def score_pool_isolated(
    s: Settings, version: str, item_ids: list[str]
) -> tuple[list[str], np.ndarray]:
    """`score_pool`, but an item that cannot be scored is quarantined and left out.

    The pool is scored at once; when that fails it is split in halves until the failing
    items are found (a few extra calls per poison item). When every item fails the fault
    is not in the items (a server is down): the first error is raised, nobody quarantined.
    """
    from flywheel.labelling import quarantine

    kept, rows, poisoned, first_error = [], [], [], []

    def score(ids: list[str]) -> None:
        try:
            rows.append(_checked(score_pool(s, version, ids), len(ids)))
            kept.extend(ids)
            return
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            first_error.append(exc)
            if len(ids) == 1:
                poisoned.append((ids[0], "scoring", f"{type(exc).__name__}: {exc}", ""))
                return
        half = len(ids) // 2
        score(ids[:half])
        score(ids[half:])

    score(list(item_ids))
    if item_ids and not kept:
        raise first_error[0]
    quarantine.add_many(s, poisoned)
    return kept, np.concatenate(rows) if rows else np.zeros((0, len(s.label_classes)))


def _checked(probs: np.ndarray, n: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.shape[0] != n or not np.isfinite(probs).all():
        raise ValueError(f"scores of shape {probs.shape} for {n} items, or not finite")
    return probs


def select_for_labelling(
    champion_version: str | None,
    k: int,
    strategy: str,
    settings: Settings | None = None,
    seed: int = 0,
) -> dict:
    """Score the unlabelled pool (holdout items excluded: they are labelled once, for
    evaluation) and queue the `k` most uncertain with the champion's guess attached."""
    from flywheel import labelling
    from flywheel.labelling import quarantine
    from flywheel.labelling.acquisition import spread_near_duplicates
    from flywheel.labelling.duplicates import near_duplicate_groups

    s = _settings(settings)
    k = k or s.labels_per_turn  # 0 / "": the settings (the pipeline's defaults)
    strategy = strategy or s.acquisition
    champion_version = champion_version or current_champion(s)
    with timed(s, "select_for_labelling", model_version=champion_version) as rec:
        held = quarantine.quarantined_ids(s)
        pool = [
            i
            for i in labelling.unlabelled_items(s)
            if not is_holdout(i, s.holdout_fraction) and i not in held
        ]
        if not pool:
            rec.update(n_selected=0)
            _remember_selection(s, champion_version, [])
            return {"n_selected": 0, "item_ids": []}
        pool, probs = score_pool_isolated(s, champion_version, pool)
        if strategy == "hybrid":
            chosen = _select_hybrid(s, champion_version, probs, pool, k, seed)
        else:
            ranked = labelling.select_for_labelling(probs, pool, len(pool), strategy, seed)
            chosen = spread_near_duplicates(ranked, near_duplicate_groups(s), k)
        index = {item: i for i, item in enumerate(pool)}
        chosen_probs = probs[[index[i] for i in chosen]]
        model_version = f"{s.model_name}-v{champion_version}"
        labelling.upload_predictions(s, chosen, chosen_probs, model_version)
        labelling.queue_for_labelling(s, chosen, tag=f"turn-v{champion_version}")
        rec.update(n_selected=len(chosen), pool=len(pool))
        _remember_selection(s, champion_version, chosen)
    return {"n_selected": len(chosen), "item_ids": chosen}


def _select_hybrid(s: Settings, version: str, probs, pool: list[str], k: int, seed: int):
    """Hybrid acquisition on the vectors the champion reads (its representation)."""
    from flywheel.features.vectors import vectors_for
    from flywheel.labelling.acquisition import select_hybrid
    from flywheel.registry.representation import model_representation

    rep = model_representation(s, version)["representation"]
    return select_hybrid(probs, vectors_for(pool, s, rep), pool, k, seed)


def _remember_selection(s: Settings, version: str, chosen: list[str]) -> None:
    import json

    path = s.data_dir / "loop" / "last_selection.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_version": version, "item_ids": chosen}))


class TurnFailed(FlywheelError):
    """A step of a turn failed; the message names it."""
