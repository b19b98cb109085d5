"""The approval gate: with `FLYWHEEL_PROMOTION=approve` a winning challenger waits for a person.

    gate(settings, version) -> dict          # the register step, instead of promote()
    approve(settings, version, by=None) -> Decision
    reject(settings, version, by=None, reason="") -> None
    pending(settings) -> list[str]

`gate` applies promotion's rule without moving an alias: the candidate wins when there is no
champion, or when its holdout accuracy beats the champion's (the champion re-scored on the
candidate's holdout when that was measured) by at least `FLYWHEEL_PROMOTION_MARGIN`. A
winner is marked `approval=pending` (a model-version tag) and gets a flip report: every
catalogued item whose predicted label the challenger would change, counted by class and by
collection, logged on the challenger's run (`flip_report.md`, `flip_report.json`) and tagged
`data.flip_review` in Label Studio (tab "flip review", at most `FLYWHEEL_LABELS_PER_TURN`
items, most confident flips first); an `approval_awaited` notification goes out.

`approve` promotes through `flywheel.registry.promote` (so the champion, `previous` and the
decision record stay promotion's business) and records `approval=approved`,
`approval_by`, `approval_at` on the version; `reject` records `approval=rejected` with who
and why and leaves the aliases alone. Deciding a version that is not pending is an error.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from datetime import UTC, datetime

import numpy as np

from flywheel.registry.promotion import Decision, RegistryError, promote, versions
from flywheel.settings import Settings

log = logging.getLogger("flywheel.registry.approval")

FLIP_FIELD = "flip_review"
FLIP_VIEW = "flip review"


def _client(settings: Settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def who(by: str | None = None) -> str:
    """The person deciding: `by`, else FLYWHEEL_APPROVER / the login name."""
    return by or os.environ.get("FLYWHEEL_APPROVER") or getpass.getuser()


def wins(settings: Settings, version: str) -> tuple[bool, str | None, str]:
    """(wins, champion version, reason) by promotion's rule, moving nothing."""
    found = {v.version: v for v in versions(settings)}
    if str(version) not in found:
        raise RegistryError(f"model {settings.model_name!r} has no version {version}")
    cand = found[str(version)]
    champ = next((v for v in found.values() if "champion" in v.aliases), None)
    if champ is None:
        return True, None, "no champion yet"
    if champ.version == cand.version:
        return False, champ.version, "already champion"
    run = _client(settings).get_run(cand.run_id) if cand.run_id else None
    champ_acc = champ.holdout_accuracy
    if run and run.data.tags.get("champion_version_compared") == champ.version:
        champ_acc = run.data.metrics.get("champion_holdout_accuracy", champ_acc)
    margin = settings.promotion_margin
    acc = cand.holdout_accuracy
    if acc is None or champ_acc is None:
        return champ_acc is None, champ.version, "no score to compare"
    if acc > champ_acc and acc - champ_acc >= margin:
        return True, champ.version, f"beats champion v{champ.version} ({acc:.4f} > {champ_acc:.4f})"
    return False, champ.version, f"does not beat champion v{champ.version} by {margin}"


def flips(settings: Settings, champion: str, challenger: str):
    """Catalogued items whose predicted label changes: a DataFrame (item_id, collection,
    champion, challenger, confidence) and the counts by class and collection."""
    from flywheel.cards import read_catalogue_or_none
    from flywheel.features import online_features
    from flywheel.monitoring.drift_check import score_version

    catalogue = read_catalogue_or_none(settings)
    if catalogue is None or catalogue.empty:
        raise RegistryError("no catalogue to compute the flip report on")
    ids = catalogue["item_id"].astype(str).tolist()
    rows = online_features(ids, settings)
    classes = list(settings.label_classes)
    old = score_version(settings, champion, rows)
    new = score_version(settings, challenger, rows)
    changed = old.argmax(1) != new.argmax(1)
    import pandas as pd

    frame = pd.DataFrame(
        {
            "item_id": np.asarray(ids)[changed],
            "collection": catalogue["collection"].astype(str).to_numpy()[changed],
            "champion": [classes[i] for i in old.argmax(1)[changed]],
            "challenger": [classes[i] for i in new.argmax(1)[changed]],
            "confidence": new.max(1)[changed],
        }
    ).sort_values(["confidence", "item_id"], ascending=[False, True], kind="stable")
    return frame.reset_index(drop=True), len(ids)


def flip_markdown(frame, n_items: int, champion: str, challenger: str) -> str:
    lines = [
        f"# Flip report: v{champion} -> v{challenger}",
        "",
        f"{len(frame)} of {n_items} catalogued items would change their predicted label.",
        "",
        "## By class (champion -> challenger)",
        "",
        "| champion | challenger | items |",
        "|---|---|---|",
    ]
    for (a, b), n in frame.groupby(["champion", "challenger"]).size().items():
        lines.append(f"| {a} | {b} | {int(n)} |")
    lines += ["", "## By collection", "", "| collection | items |", "|---|---|"]
    for coll, n in frame.groupby("collection").size().items():
        lines.append(f"| {coll} | {int(n)} |")
    return "\n".join(lines) + "\n"


def gate(settings: Settings, version: str) -> dict:
    """The register step under FLYWHEEL_PROMOTION=approve (module doc)."""
    from flywheel.monitoring.notify import notify

    version = str(version)
    ok, champion, reason = wins(settings, version)
    client = _client(settings)
    if not ok:
        return {
            "promoted": False,
            "champion_version": str(champion),
            "action": "kept",
            "reason": reason,
        }
    if champion is None:  # nothing to compare with: the first model is promoted as before
        d = promote(settings, version)
        return {
            "promoted": d.promoted,
            "champion_version": str(d.champion_version),
            "action": d.action,
            "reason": d.reason,
        }
    try:
        frame, n_items = flips(settings, champion, version)
    except Exception as exc:  # noqa: BLE001 - the gate still holds; the person is told why
        import pandas as pd

        log.warning("no flip report for v%s: %s", version, exc)
        frame = pd.DataFrame(columns=["item_id", "collection", "champion", "challenger"])
        frame["confidence"], n_items = [], 0
        reason = f"{reason}; no flip report ({type(exc).__name__}: {exc})"
    mv = client.get_model_version(settings.model_name, version)
    summary = {
        "champion": champion,
        "challenger": version,
        "n_items": n_items,
        "n_flips": len(frame),
        "by_class": {
            f"{a}->{b}": int(n)
            for (a, b), n in frame.groupby(["champion", "challenger"]).size().items()
        },
        "by_collection": {str(c): int(n) for c, n in frame.groupby("collection").size().items()},
        "items": frame.head(1000).to_dict(orient="records"),
    }
    if mv.run_id:
        client.log_text(
            mv.run_id, flip_markdown(frame, n_items, champion, version), "flip_report.md"
        )
        client.log_text(mv.run_id, json.dumps(summary, indent=1, default=float), "flip_report.json")
    tagged = 0
    if len(frame):
        from flywheel.labelling import client as lsc
        from flywheel.labelling.review import tag_for_review

        known = lsc.tasks_by_item(lsc.project_tasks(settings))
        top = frame[frame["item_id"].isin(known)].head(settings.labels_per_turn)
        tagged = tag_for_review(
            settings,
            top["item_id"].tolist(),
            FLIP_FIELD,
            f"flip-v{champion}-v{version}",
            FLIP_VIEW,
            top["confidence"].tolist(),
        )
    client.set_model_version_tag(settings.model_name, version, "approval", "pending")
    client.set_model_version_tag(settings.model_name, version, "approval_flips", str(len(frame)))
    notify(
        settings,
        "approval_awaited",
        f"v{version} {reason}; {len(frame)} of {n_items} items would change label; "
        f"decide with `flywheel registry approve {version}` or `reject {version}`",
        version=version,
        flips=len(frame),
    )
    return {
        "promoted": False,
        "champion_version": str(champion),
        "action": "awaiting_approval",
        "reason": reason,
        "flips": len(frame),
        "tagged": tagged,
    }


def _pending_or_error(settings: Settings, version: str):
    client = _client(settings)
    try:
        mv = client.get_model_version(settings.model_name, str(version))
    except Exception:  # noqa: BLE001 - MlflowException: not there
        raise RegistryError(f"model {settings.model_name!r} has no version {version}") from None
    state = (mv.tags or {}).get("approval")
    if state != "pending":
        raise RegistryError(
            f"version {version} is not awaiting approval (approval={state or 'none'}); "
            f"pending: {', '.join(pending(settings)) or 'none'}"
        )
    return client


def _record(client, settings, version: str, state: str, by: str, reason: str = "") -> None:
    tags = {"approval": state, "approval_by": by, "approval_at": datetime.now(UTC).isoformat()}
    if reason:
        tags["approval_reason"] = reason
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, str(version), key, value)


def approve(settings: Settings, version: str, by: str | None = None) -> Decision:
    """Promote a pending version; records who approved it."""
    from flywheel.monitoring.notify import notify

    client = _pending_or_error(settings, version)
    decision = promote(settings, str(version), margin=0.0)
    _record(client, settings, version, "approved", who(by))
    if decision.promoted:
        notify(settings, "promotion", f"v{version} is champion (approved by {who(by)})")
    return decision


def reject(settings: Settings, version: str, by: str | None = None, reason: str = "") -> None:
    """Turn a pending version down; records who and why. Aliases stay as they are."""
    client = _pending_or_error(settings, version)
    _record(client, settings, version, "rejected", who(by), reason)


def pending(settings: Settings) -> list[str]:
    """Versions awaiting approval."""
    client = _client(settings)
    return sorted(
        (
            str(mv.version)
            for mv in client.search_model_versions(f"name='{settings.model_name}'")
            if (mv.tags or {}).get("approval") == "pending"
        ),
        key=int,
    )
