"""Promotion and rollback of registered model versions by alias.

The rule (`promote`):
- the candidate is the given version, or the one with alias `challenger`;
- no `champion` yet -> the candidate becomes champion;
- the candidate already is champion -> nothing changes (promotion is idempotent);
- otherwise it is promoted iff its holdout accuracy beats the champion's by at least the
  margin: `candidate > champion` and `candidate - champion >= margin`. The champion's score
  is the one measured on the candidate's own holdout at training time
  (`champion_holdout_accuracy`, same items, same day) when that was the current champion;
  else the champion's own logged `holdout_accuracy`.
On promotion the old champion gets `previous`. The decision, both scores and the margin are
logged on the candidate's run (tags `promotion_*`, metrics `promotion_*_accuracy`).
`rollback` swaps `champion` and `previous`, so a second rollback undoes the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.errors import InputError

ALIASES = ("champion", "challenger", "previous")


class RegistryError(InputError):
    """The registered model, a version or an alias is not there."""


@dataclass
class Decision:
    action: str  # promoted | kept | unchanged | rolled_back
    reason: str
    candidate_version: str | None
    champion_version: str | None  # champion after the decision
    candidate_accuracy: float | None = None
    champion_accuracy: float | None = None
    margin: float | None = None

    @property
    def promoted(self) -> bool:
        return self.action == "promoted"


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str | None
    holdout_accuracy: float | None
    created: int


def _client(settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _model(client, settings):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(settings.model_name)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise RegistryError(
                f"registered model {settings.model_name!r} does not exist at "
                f"{settings.tracking_uri} (FLYWHEEL_MODEL_NAME); train one first with "
                "`flywheel train run`"
            ) from None
        raise


def _alias(client, settings, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(settings.model_name, alias)
    except MlflowException:
        return None


def _version(client, settings, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(settings.model_name, str(version))
    except MlflowException:
        raise RegistryError(f"model {settings.model_name!r} has no version {version}") from None


def _metric(client, run_id: str | None, name: str) -> float | None:
    if not run_id:
        return None
    return client.get_run(run_id).data.metrics.get(name)


def set_alias(settings, alias: str, version: str) -> None:
    """Point `alias` at `version` of `settings.model_name`."""
    client = _client(settings)
    _model(client, settings)
    _version(client, settings, version)
    client.set_registered_model_alias(settings.model_name, alias, str(version))


def versions(settings) -> list[VersionInfo]:
    """Every version of the registered model with its aliases and holdout accuracy."""
    client = _client(settings)
    model = _model(client, settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{settings.model_name}'"):
        out.append(
            VersionInfo(
                str(mv.version),
                sorted(by_version.get(str(mv.version), [])),
                mv.run_id,
                _metric(client, mv.run_id, "holdout_accuracy"),
                mv.creation_timestamp,
            )
        )
    return sorted(out, key=lambda v: int(v.version))


def promote(settings, version: str | None = None, margin: float | None = None) -> Decision:
    """Make the candidate (default: `challenger`) champion if it wins; see module doc."""
    client = _client(settings)
    _model(client, settings)
    margin = settings.promotion_margin if margin is None else margin
    if version is None:
        cand = _alias(client, settings, "challenger")
        if cand is None:
            raise RegistryError(
                f"model {settings.model_name!r} has no `challenger` version; train one or "
                "name a version"
            )
    else:
        cand = _version(client, settings, version)
    champ = _alias(client, settings, "champion")
    cand_acc = _metric(client, cand.run_id, "holdout_accuracy")

    if champ is None:
        decision = Decision(
            "promoted", "no champion yet", cand.version, cand.version, cand_acc, None, margin
        )
    elif champ.version == cand.version:
        return Decision(
            "unchanged", "already champion", cand.version, champ.version, cand_acc, cand_acc, margin
        )
    else:
        run = client.get_run(cand.run_id) if cand.run_id else None
        compared = run.data.tags.get("champion_version_compared") if run else None
        champ_acc = None
        if compared == str(champ.version):
            champ_acc = run.data.metrics.get("champion_holdout_accuracy")
        if champ_acc is None:
            champ_acc = _metric(client, champ.run_id, "holdout_accuracy")
        if cand_acc is None:
            raise RegistryError(f"version {cand.version} has no holdout_accuracy on its run")
        wins = champ_acc is None or (cand_acc > champ_acc and cand_acc - champ_acc >= margin)
        if wins:
            decision = Decision(
                "promoted",
                f"beats champion v{champ.version} by at least {margin}",
                cand.version,
                cand.version,
                cand_acc,
                champ_acc,
                margin,
            )
        else:
            decision = Decision(
                "kept",
                f"does not beat champion v{champ.version} by {margin}",
                cand.version,
                champ.version,
                cand_acc,
                champ_acc,
                margin,
            )
    if decision.promoted:
        if champ is not None:
            client.set_registered_model_alias(settings.model_name, "previous", champ.version)
        client.set_registered_model_alias(settings.model_name, "champion", cand.version)
    _log_decision(client, cand.run_id, decision)
    return decision


def _log_decision(client, run_id: str | None, d: Decision) -> None:
    if not run_id:
        return
    client.set_tag(run_id, "promotion_decision", d.action)
    client.set_tag(run_id, "promotion_reason", d.reason)
    client.set_tag(run_id, "promotion_margin", str(d.margin))
    if d.candidate_accuracy is not None:
        client.log_metric(run_id, "promotion_candidate_accuracy", d.candidate_accuracy)
    if d.champion_accuracy is not None:
        client.log_metric(run_id, "promotion_champion_accuracy", d.champion_accuracy)


def rollback(settings) -> Decision:
    """Swap `champion` and `previous` (the champion before the last promotion)."""
    client = _client(settings)
    _model(client, settings)
    prev = _alias(client, settings, "previous")
    champ = _alias(client, settings, "champion")
    if prev is None or champ is None:
        raise RegistryError(
            f"model {settings.model_name!r} has no `previous` champion to roll back to"
        )
    client.set_registered_model_alias(settings.model_name, "champion", prev.version)
    client.set_registered_model_alias(settings.model_name, "previous", champ.version)
    if prev.run_id:
        client.set_tag(prev.run_id, "rolled_back_from", champ.version)
    return Decision(
        "rolled_back", f"champion v{champ.version} -> v{prev.version}", prev.version, prev.version
    )
