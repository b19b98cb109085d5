"""One MLflow identity per workload, made through MLflow's auth app.

    ensure_identities(tracking_uri, identities, model_name, experiment) -> list[str]
    python -m flywheel.registry.identities          (the chart's mlflow-users Job)

Runs as the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). For each
`name -> (password, permission)` it makes the user `flywheel-<name>` (or resets its password
to the one in its Secret, so a rotated Secret takes effect), then grants `permission`
(READ, EDIT, MANAGE) on the registered model and on the experiment, creating both when
they are missing. Run it again at any time: it converges (a changed permission replaces
the old grant).

The chart's identities (global.mlflowIdentities): `serving` READ (predictor and
transformer), `reader` READ (trigger, materialization), `training` EDIT (runs and new
versions), `pipeline` MANAGE (the register step, which moves `champion`). MLflow's auth app
guards alias changes with the same EDIT permission as new versions, so it cannot keep
`training` from moving an alias itself; flywheel's trainer never does, and the predictor
serves only versions whose provenance it checks (flywheel.registry.trusted).

The Job reads FLYWHEEL_MLFLOW_IDENTITIES (JSON `{name: permission}`), each password from
FLYWHEEL_MLFLOW_PASSWORD_<NAME>, and the model and experiment from the usual settings.
"""

from __future__ import annotations

import json
import os
import sys

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")


def username(name: str) -> str:
    return f"flywheel-{name}"


def ensure_identities(
    tracking_uri: str,
    identities: dict[str, tuple[str, str]],
    model_name: str,
    experiment: str,
) -> list[str]:
    """Create/update the users and their grants; returns the user names."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.server.auth.client import AuthServiceClient

    for name, (password, permission) in identities.items():
        if permission not in PERMISSIONS:
            raise ValueError(
                f"identity {name}: permission {permission!r} is not one of {PERMISSIONS}"
            )
        if not password:
            raise ValueError(f"identity {name}: empty password")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    auth = AuthServiceClient(tracking_uri)
    made = []
    for name, (password, permission) in sorted(identities.items()):
        user = username(name)
        try:
            auth.create_user(user, password)
        except RestException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.update_user_password(user, password)
        for kind, resource in (("registered_model", model_name), ("experiment", experiment_id)):
            try:
                auth.grant_user_permission(user, kind, resource, permission)
            except RestException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                auth.revoke_user_permission(user, kind, resource)
                auth.grant_user_permission(user, kind, resource, permission)
        made.append(user)
    return made


def main() -> int:
    from flywheel.settings import get_settings

    settings = get_settings()
    wanted = json.loads(os.environ["FLYWHEEL_MLFLOW_IDENTITIES"])
    identities = {
        name: (os.environ.get(f"FLYWHEEL_MLFLOW_PASSWORD_{name.upper()}", ""), permission)
        for name, permission in wanted.items()
    }
    users = ensure_identities(
        settings.tracking_uri, identities, settings.model_name, settings.mlflow_experiment
    )
    print(f"MLflow identities ready: {', '.join(users)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
