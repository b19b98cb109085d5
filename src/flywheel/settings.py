"""One settings object for the whole platform.

Every URL, port, token, path and mode comes from here. Values are read, in order of
precedence, from the environment (`FLYWHEEL_<NAME>`), then an optional `.env` file in the
working directory, then the defaults below, which are the embedded dev-box defaults
(`.flywheel/` for all data, services on 127.0.0.1). `.env.example` documents each one.

Secrets (the Label Studio admin password and API token) are never fixed in code: when
not set they are generated once and kept under `<home>/secrets/` (mode 0600), so a
restart keeps the same ones.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.errors import SettingsError

Port = int

__all__ = ["Settings", "SettingsError", "get_settings", "load"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- where and how -------------------------------------------------------------
    mode: Literal["local", "cluster"] = "local"
    home: Path = Field(Path(".flywheel"), description="All dev-box data lives here.")
    host: str = Field("127.0.0.1", description="Interface the dev-box services bind to.")

    # --- MLflow: tracking server and model registry ---------------------------------
    mlflow_port: Port = Field(5000, ge=1, le=65535)
    mlflow_tracking_uri: str | None = Field(None, description="Default: the local server.")
    mlflow_experiment: str = "flywheel"
    model_name: str = Field("flywheel-digits", description="Registered model name.")

    # --- Label Studio ----------------------------------------------------------------
    label_studio_port: Port = Field(8080, ge=1, le=65535)
    label_studio_url: str | None = Field(None, description="Default: the local server.")
    label_studio_username: str = "admin@flywheel.local"
    label_studio_password: SecretStr | None = None
    label_studio_token: SecretStr | None = None
    label_studio_venv: Path = Field(Path(".venv-labelstudio"), description="Server's own venv.")
    label_studio_project: str = "flywheel-digits"
    label_classes: list[str] = Field(
        default=[str(d) for d in range(10)],
        description='Class names, as JSON: ["0","1",...]. The labelling config offers these.',
    )
    trigger_min_labels: int = Field(50, ge=1, description="New labels that start a turn.")
    label_overlap: int = Field(1, ge=1, description="Annotators who label each task.")
    label_resolution: Literal["latest", "majority", "review"] = Field(
        "latest", description="How disagreeing annotators are settled (labelling/agreement.py)."
    )
    demo_noise_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of deliberately wrong demo-annotator labels."
    )
    trigger_action: str = Field(
        "flywheel.loop.trigger_action:run_turn_now",
        description='What the trigger calls once enough labels arrive: "module:function".',
    )
    trigger_poll_s: float = Field(
        30.0, ge=0, description="Trigger's polling fallback interval (0: webhooks only)."
    )
    trigger_url: str | None = Field(
        None, description="Trigger URL Label Studio posts webhooks to. Default: local."
    )

    # --- Feast --------------------------------------------------------------------------
    feature_repo: Path = Path("feature_repo")
    feast_port: Port = Field(6566, ge=1, le=65535)
    feature_service: str = Field("item_classifier", description="Feast feature service.")
    image_size: int = Field(8, ge=2, le=512, description="Side of the pixel representation.")
    representation: str = Field(
        "pixels", description='Item representation: "pixels" or "module:function".'
    )
    # Cluster stores (dev box: sqlite and parquet under <home>/data/feast/).
    feast_registry_url: str | None = Field(None, description="SQL registry (SQLAlchemy URL).")
    feast_redis_url: str = Field("redis:6379", description="Redis online store (cluster).")
    feast_offline_uri: str | None = Field(None, description="Offline parquet (path or s3://).")
    feast_s3_endpoint: str | None = Field(None, description="S3 endpoint (MinIO) for s3:// URIs.")

    # --- training and the registry -----------------------------------------------------------
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Fixed holdout share.")
    promotion_margin: float = Field(
        0.0, ge=0.0, le=1.0, description="Holdout accuracy a challenger must gain to win."
    )
    model_arch: str = Field("cnn", description="Classifier architecture by name.")

    # --- serving (KServe model servers) and the loop trigger -------------------------
    predictor_port: Port = Field(8085, ge=1, le=65535)
    transformer_port: Port = Field(8086, ge=1, le=65535)
    trigger_port: Port = Field(8090, ge=1, le=65535)
    max_batch: int = Field(256, ge=1, description="Largest batch a model server accepts.")
    champion_poll_s: float = Field(
        10.0, ge=0, description="How often the predictor checks the champion alias (0: never)."
    )

    # --- the loop: Kubeflow pipelines ------------------------------------------------------------
    image: str = Field("ghcr.io/flywheel-ml/flywheel:0.1.0", description="Platform image.")
    kfp_host: str | None = Field(None, description="Kubeflow Pipelines API endpoint.")
    kfp_experiment: str = "flywheel"
    labels_per_turn: int = Field(50, ge=1, description="Items sent to labelling per turn.")
    acquisition: Literal["least_confidence", "margin", "entropy", "random"] = "margin"
    train_gpus: int = Field(0, ge=0, description="GPUs for the train step on the cluster.")
    train_accelerator: str = Field("nvidia.com/gpu", description="Accelerator resource name.")
    train_node_selector: dict[str, str] = Field(
        default_factory=dict, description='JSON, e.g. {"nvidia.com/gpu.present": "true"}.'
    )
    train_tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description='JSON, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", '
        '"effect": "NoSchedule"}].',
    )

    # --- cluster side (offline checks) ---------------------------------------------------------
    crds_dir: Path = Field(
        Path("../shared/crds"), description="Upstream CRDs used to validate custom resources."
    )

    # --- supervision ----------------------------------------------------------------------
    health_timeout_s: float = Field(300.0, gt=0, description="How long `up` waits per service.")

    @field_validator("home", "feature_repo", "label_studio_venv", "crds_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # --- derived values ---------------------------------------------------------------
    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.url(self.mlflow_port)

    @property
    def label_studio_base_url(self) -> str:
        return self.label_studio_url or self.url(self.label_studio_port)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def catalogue_path(self) -> Path:
        """The item catalogue (parquet): one row per item image, see flywheel.labelling."""
        return self.data_dir / "catalogue.parquet"

    @property
    def snapshot_dir(self) -> Path:
        """Label snapshots (parquet), one file per snapshot id."""
        return self.data_dir / "snapshots"

    def secret(self, name: str, value: SecretStr | None = None, nbytes: int = 24) -> str:
        """Return `value` if set, else the secret stored under home/secrets, made once."""
        if value is not None:
            return value.get_secret_value()
        path = self.home / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(nbytes)[:40])
        return path.read_text().strip()

    def to_env(self, base: bool = False) -> dict[str, str]:
        """Every setting as the FLYWHEEL_* variable that rebuilds it in a child process
        (secrets included where set; unset ones are read from `<home>/secrets`).
        `base=True` starts from this process's environment without FLYWHEEL_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")} if base else {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if value is not None:
                env[env_name(field)] = _env_text(value)
        return env

    @property
    def ls_token(self) -> str:
        """Label Studio API token (6-40 chars, as Label Studio requires)."""
        token = self.secret("label_studio_token", self.label_studio_token, 20)
        if not 6 <= len(token) <= 40:
            raise SettingsError("FLYWHEEL_LABEL_STUDIO_TOKEN must be 6 to 40 characters long")
        return token

    @property
    def ls_password(self) -> str:
        return self.secret("label_studio_password", self.label_studio_password)


def _env_text(value) -> str:
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def env_name(field: str) -> str:
    """The environment variable that sets `field`, for error messages."""
    return f"FLYWHEEL_{field.upper()}"


def load(**overrides) -> Settings:
    """Build the settings, turning validation errors into one clear SettingsError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            given = err.get("input")
            problems.append(f"{env_name(field)}={given!r}: {err['msg']}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own with `load`)."""
    return load()
