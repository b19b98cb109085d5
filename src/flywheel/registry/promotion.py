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

Faults (both fail closed; nothing here takes an unreadable registry for an empty one):
- Any error reading the registry other than "not there" raises `RegistryUnavailable` and
  changes nothing. The MLflow client's timeouts and retries are set on purpose
  (`configure_client`: FLYWHEEL_MLFLOW_TIMEOUT_S per request, default 30 s, and
  FLYWHEEL_MLFLOW_RETRIES retries 1 s, 2 s, 4 s apart, default 3), so a dead server fails a
  call within about 7 s and a hung one within 2 minutes, instead of hanging for many.
- Promotions and rollbacks are serialised: a file lock under `<home>/run/` in local mode, and
  in both modes a compare-and-set: the aliases are read again just before the move, and
  when `champion` is no longer the one the decision was made against, `PromotionConflict`
  is raised and nothing is written.
- A move is journalled: its intent (the new `champion` and `previous`) is written first as the
  registered model's tag `flywheel.promotion_intent`, then `previous`, then `champion` last;
  both are read back and verified, then the intent is cleared. A move killed half-way leaves
  the intent, and the next promote/rollback (or `recover`) completes it first, so the pointer
  to undo is never lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flywheel.errors import InputError, ServiceError

ALIASES = ("champion", "challenger", "previous")


class RegistryError(InputError):
    """The registered model, a version or an alias is not there."""


class RegistryUnavailable(ServiceError):
    """The registry could not be read or written (down, timing out, refusing): no change."""


class PromotionConflict(ServiceError):
    """Another promotion or rollback moved `champion` meanwhile, or one holds the lock."""


INTENT_TAG = "flywheel.promotion_intent"
LOCK_WAIT_S = 60.0


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


def client_env(settings) -> dict[str, str]:
    """The MLflow HTTP client's time-out and retries, as the env variables it reads per
    request. Worst case for one call on a dead server: the retries' backoff (1+2+4 s with 3
    retries); on a hung one: (retries+1) x time-out + that backoff."""
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(settings.mlflow_timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.mlflow_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    }


def configure_client(settings) -> None:
    """Apply `client_env` to this process unless the environment sets them already."""
    for key, value in client_env(settings).items():
        os.environ.setdefault(key, value)


def _client(settings):
    from mlflow import MlflowClient

    configure_client(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _not_found(exc) -> bool:
    code = str(getattr(exc, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(exc).lower()


@contextmanager
def _registry(settings, what: str) -> Iterator[None]:
    """Turn any failure to reach the registry into RegistryUnavailable (fail closed)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (RegistryError, RegistryUnavailable, PromotionConflict):
        raise
    except (MlflowException, OSError, ValueError) as exc:  # requests errors are OSErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RegistryUnavailable(
            f"the model registry at {settings.tracking_uri} could not {what}: {first[:300]}; "
            "nothing was changed (is MLflow up? `flywheel status`)"
        ) from None


def _model(client, settings):
    from mlflow.exceptions import MlflowException

    with _registry(settings, f"read model {settings.model_name!r}"):
        try:
            return client.get_registered_model(settings.model_name)
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(
                    f"registered model {settings.model_name!r} does not exist at "
                    f"{settings.tracking_uri} (FLYWHEEL_MODEL_NAME); train one first with "
                    "`flywheel train run`"
                ) from None
            raise


def _aliases(client, settings) -> dict[str, str]:
    """Every alias -> version of the model, read in one call (so they agree)."""
    return {a: str(v) for a, v in (_model(client, settings).aliases or {}).items()}


def _alias(client, settings, alias: str):
    version = _aliases(client, settings).get(alias)
    return None if version is None else _version(client, settings, version)


def _version(client, settings, version: str):
    from mlflow.exceptions import MlflowException

    with _registry(settings, f"read version {version}"):
        try:
            return client.get_model_version(settings.model_name, str(version))
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(
                    f"model {settings.model_name!r} has no version {version}"
                ) from None
            raise


def _metric(client, run_id: str | None, name: str, settings=None) -> float | None:
    if not run_id:
        return None
    with _registry(settings, f"read run {run_id}") if settings else _nothing():
        return client.get_run(run_id).data.metrics.get(name)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _serialised(settings) -> Iterator[None]:
    """One promotion or rollback at a time: a file lock in local mode (the cluster relies on
    the compare-and-set in `_move`)."""
    if settings.mode != "local":
        yield
        return
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / f"promotion-{settings.model_name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PromotionConflict(
                        f"another promotion or rollback of {settings.model_name!r} has held "
                        f"{path} for {LOCK_WAIT_S:.0f} s; try again when it is done"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def _move(client, settings, op: str, champion: str, previous: str | None, expected) -> None:
    """Journalled, verified move of `champion` (and `previous`), compare-and-set on the
    champion the decision was made against (`expected`, None for "no champion")."""
    name = settings.model_name
    now = _aliases(client, settings).get("champion")
    if now != expected:
        raise PromotionConflict(
            f"`champion` of {name!r} moved to v{now} while this {op} decided against "
            f"v{expected}; nothing was changed, run it again"
        )
    intent = {"op": op, "champion": champion, "previous": previous, "expected": expected}
    with _registry(settings, f"{op} (aliases unchanged)"):
        client.set_registered_model_tag(name, INTENT_TAG, json.dumps(intent))
    _apply(client, settings, intent)


def _apply(client, settings, intent: dict) -> None:
    name = settings.model_name
    with _registry(settings, f"finish the {intent['op']} (run it again to complete it)"):
        if intent.get("previous"):
            client.set_registered_model_alias(name, "previous", intent["previous"])
        client.set_registered_model_alias(name, "champion", intent["champion"])  # last
        got = _aliases(client, settings)
        if got.get("champion") != intent["champion"] or (
            intent.get("previous") and got.get("previous") != intent["previous"]
        ):
            raise RegistryUnavailable(
                f"the registry at {settings.tracking_uri} did not keep the {intent['op']}: "
                f"read back champion v{got.get('champion')}, previous v{got.get('previous')}; "
                f"the intent is kept and the next promote/rollback completes it"
            )
        client.delete_registered_model_tag(name, INTENT_TAG)


def recover(settings) -> Decision | None:
    """Complete a promotion or rollback that was interrupted between its alias writes.

    Returns the completed move as a Decision ("recovered"), or None when none was pending."""
    client = _client(settings)
    with _serialised(settings):
        return _recover(client, settings)


def _recover(client, settings) -> Decision | None:
    raw = (_model(client, settings).tags or {}).get(INTENT_TAG)
    if not raw:
        return None
    intent = json.loads(raw)
    _apply(client, settings, intent)
    return Decision(
        "recovered",
        f"completed an interrupted {intent['op']}: champion v{intent['champion']}",
        intent["champion"],
        intent["champion"],
    )


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
    with _registry(settings, "list model versions"):
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
    with _serialised(settings):
        _recover(client, settings)
        return _promote(client, settings, version, margin)


def _promote(client, settings, version: str | None, margin: float | None) -> Decision:
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
    cand_acc = _metric(client, cand.run_id, "holdout_accuracy", settings)

    if champ is None:
        decision = Decision(
            "promoted", "no champion yet", cand.version, cand.version, cand_acc, None, margin
        )
    elif champ.version == cand.version:
        return Decision(
            "unchanged", "already champion", cand.version, champ.version, cand_acc, cand_acc, margin
        )
    else:
        with _registry(settings, f"read run {cand.run_id}"):
            run = client.get_run(cand.run_id) if cand.run_id else None
        compared = run.data.tags.get("champion_version_compared") if run else None
        champ_acc = None
        if compared == str(champ.version):
            champ_acc = run.data.metrics.get("champion_holdout_accuracy")
        if champ_acc is None:
            champ_acc = _metric(client, champ.run_id, "holdout_accuracy", settings)
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
        old = str(champ.version) if champ is not None else None
        _move(client, settings, "promotion", str(cand.version), old, old)
    with _registry(settings, "log the decision (the aliases are already moved)"):
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
    with _serialised(settings):
        _recover(client, settings)
        aliases = _aliases(client, settings)
        if "previous" not in aliases or "champion" not in aliases:
            raise RegistryError(
                f"model {settings.model_name!r} has no `previous` champion to roll back to"
            )
        prev = _version(client, settings, aliases["previous"])
        champ = _version(client, settings, aliases["champion"])
        _move(client, settings, "rollback", str(prev.version), str(champ.version), champ.version)
        if prev.run_id:
            with _registry(settings, "tag the rolled-back run (the aliases are already moved)"):
                client.set_tag(prev.run_id, "rolled_back_from", champ.version)
    return Decision(
        "rolled_back", f"champion v{champ.version} -> v{prev.version}", prev.version, prev.version
    )
