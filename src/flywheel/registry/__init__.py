"""The model registry: aliases `challenger`, `champion`, `previous` on one MLflow model.

    promote(settings, version=None, margin=None) -> Decision
    rollback(settings) -> Decision
    versions(settings) -> list[VersionInfo]
    set_alias(settings, alias, version)
    recover(settings) -> Decision | None   (complete an interrupted promotion/rollback)

A new version gets `challenger` (training does that). `promote` makes it `champion` only
when it beats the champion on the same fixed holdout by `settings.promotion_margin`; the
old champion keeps the alias `previous`, so `rollback` can swap them back. See
flywheel.registry.promotion for the exact rule. mlflow is imported inside the functions.
"""

from flywheel.registry.promotion import (
    Decision,
    PromotionConflict,
    RegistryError,
    RegistryUnavailable,
    VersionInfo,
    configure_client,
    promote,
    recover,
    rollback,
    set_alias,
    versions,
)

__all__ = [
    "Decision",
    "PromotionConflict",
    "RegistryError",
    "RegistryUnavailable",
    "VersionInfo",
    "configure_client",
    "promote",
    "recover",
    "rollback",
    "set_alias",
    "versions",
]
