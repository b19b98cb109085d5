"""One settings object for the whole platform.

Every URL, port, token, path and mode comes from here. Values are read, in order of
precedence, from the environment (`FLYWHEEL_<NAME>`), then an optional `.env` file in the
working directory, then the defaults below, which are the embedded dev-box defaults
(`.flywheel/` for all data, services on 127.0.0.1). `.env.example` documents each one.

Secrets (the Label Studio admin password and API token) are never fixed in code: when
not set they are generated once and kept under `<home>/secrets/` (mode 0600, written
atomically: flywheel.private), so a restart keeps the same ones. The dev-box services bind
loopback only unless FLYWHEEL_ALLOW_REMOTE=true.
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

from flywheel import names
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
    allow_remote: bool = Field(
        False,
        description="Let dev-box services bind a non-loopback FLYWHEEL_HOST (MLflow then "
        "runs its basic-auth app).",
    )

    # --- MLflow: tracking server and model registry ---------------------------------
    mlflow_port: Port = Field(5000, ge=1, le=65535)
    mlflow_tracking_uri: str | None = Field(None, description="Default: the local server.")
    mlflow_experiment: str = "flywheel"
    model_name: str = Field("flywheel-digits", description="Registered model name.")
    mlflow_timeout_s: float = Field(30.0, gt=0, description="MLflow client per-request time-out.")
    mlflow_retries: int = Field(3, ge=0, le=10, description="MLflow client retries (1, 2, 4 s).")

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
    export_max_bad_share: float = Field(
        0.1, ge=0, le=1, description="Share of bad labelled tasks an export quarantines."
    )
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
    trigger_token: SecretStr | None = Field(
        None, description="Webhook secret header value. Default: generated under home/secrets."
    )
    trigger_max_body_bytes: int = Field(262144, ge=1024, description="Largest webhook body.")
    trigger_poll_min_s: float = Field(5.0, ge=0, description="`POST /poll` at most this often.")
    trigger_retries: int = Field(2, ge=0, le=10, description="Retries of a failed turn action.")
    trigger_backoff_max_s: float = Field(
        300.0, ge=0, description="Longest wait before re-firing labels of a failed turn."
    )

    # --- intake: what a collection holds (see labelling/intake.py) ---------------------
    card_size: int = Field(
        480, ge=16, le=4096, description="Longest side of the card Label Studio shows."
    )
    intake_max_pixels: int = Field(
        1_000_000_000, ge=1, description="Decompression-bomb limit: most pixels in one image."
    )
    intake_pages: Literal["first", "each"] = Field(
        "first", description="Multi-page TIFF: the first page, or one item per page."
    )
    intake_copy_masters: bool = Field(
        False, description="Copy masters under the home (for sources that will move)."
    )
    intake_workers: int = Field(0, ge=0, description="Intake/feature processes (0: CPUs).")
    near_duplicate_bits: int = Field(
        4, ge=-1, le=64, description="Perceptual-hash distance of near-duplicates (-1: off)."
    )

    # --- Feast --------------------------------------------------------------------------
    feature_repo: Path = Path("feature_repo")
    feast_port: Port = Field(6566, ge=1, le=65535)
    feature_service: str = Field("item_classifier", description="Feast feature service.")
    image_size: int = Field(8, ge=2, le=512, description="Side of the pixel representation.")
    representation: str = Field(
        "pixels",
        description='Item representation: "pixels", "embedding" or "module:function".',
    )
    # The embedding representation (flywheel.features.embedding): a Hugging Face vision model.
    backbone: str = Field(
        "facebook/dinov2-small",
        description="Vision backbone: a Hugging Face model id or a local model directory.",
    )
    backbone_weights: str = Field(
        "pretrained",
        description="pretrained (download once into the cache) | none (random) | PATH (file/dir).",
    )
    backbone_image_size: int = Field(224, ge=8, le=1024, description="Backbone input side.")
    backbone_batch: int = Field(32, ge=1, description="Images per backbone forward.")
    backbone_cache: Path | None = Field(
        None, description="Downloaded backbones (default: <home>/cache/backbones)."
    )
    train_mode: Literal["auto", "scratch", "head", "finetune"] = Field(
        "auto", description="auto: head on embeddings, scratch on pixels."
    )
    # Cluster stores (dev box: sqlite and parquet under <home>/data/feast/).
    feast_registry_url: str | None = Field(None, description="SQL registry (SQLAlchemy URL).")
    feast_redis_url: str = Field("redis:6379", description="Redis online store (cluster).")
    feast_offline_uri: str | None = Field(None, description="Offline parquet (path or s3://).")
    feast_s3_endpoint: str | None = Field(None, description="S3 endpoint (MinIO) for s3:// URIs.")

    # --- state that crosses pods (cluster): an S3-compatible object store ---------------------
    state_uri: str | None = Field(
        None, description="Where steps hand state (s3://bucket/prefix). Default: <home>/data."
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL, e.g. http://s3:9000.")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key (a Secret).")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key (a Secret).")
    s3_region: str = Field("us-east-1", description="S3 region (most servers ignore it).")

    # --- training and the registry -----------------------------------------------------------
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Fixed holdout share.")
    promotion_margin: float = Field(
        0.0, ge=0.0, le=1.0, description="Holdout accuracy a challenger must gain to win."
    )
    model_arch: str = Field("cnn", description="Classifier architecture by name.")
    model_intended_use: str = Field(
        "Suggesting labels for items of the collections it was trained on, for a person to "
        "check in Label Studio; not for unattended cataloguing decisions.",
        description="Intended use, as written in every model card.",
    )
    model_limitations: str = Field(
        "Knows only the classes it was trained on and answers one of them for any image; "
        "accuracy is measured on a fixed holdout of the same collections and may not hold "
        "for new accessions, scanners or kinds of material (see the drift report).",
        description="Limitations, as written in every model card.",
    )
    keep_model_versions: int = Field(
        50, ge=0, description="Model versions kept by `registry prune` (aliased ones always)."
    )
    keep_pipeline_days: int = Field(
        14, ge=0, description="Days of local pipeline outputs kept by `registry prune`."
    )

    # --- serving (KServe model servers) and the loop trigger -------------------------
    predictor_port: Port = Field(8085, ge=1, le=65535)
    transformer_port: Port = Field(8086, ge=1, le=65535)
    trigger_port: Port = Field(8090, ge=1, le=65535)
    max_batch: int = Field(256, ge=1, description="Largest batch a model server accepts.")
    predlog_max_bytes: int = Field(
        64 * 2**20, ge=4096, description="Prediction log file size before the next part."
    )
    predlog_keep_days: int = Field(90, ge=0, description="Days of prediction log kept (0: all).")
    champion_poll_s: float = Field(
        10.0, ge=0, description="How often the predictor checks the champion alias (0: never)."
    )
    max_request_bytes: int = Field(
        32 << 20, ge=1024, description="Largest request body a model server accepts (413)."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest inline image (pixels, all frames) served (400)."
    )

    # --- the loop: Kubeflow pipelines ------------------------------------------------------------
    image: str = Field(names.IMAGE, description="Platform image (repo:tag or repo@sha256:...).")
    kfp_host: str | None = Field(None, description="Kubeflow Pipelines API endpoint.")
    kfp_experiment: str = "flywheel"
    labels_per_turn: int = Field(50, ge=1, description="Items sent to labelling per turn.")
    acquisition: Literal["least_confidence", "margin", "entropy", "random", "hybrid"] = "margin"
    train_gpus: int = Field(0, ge=0, description="GPUs for the train step on the cluster.")
    train_num_nodes: int = Field(1, ge=1, description="Nodes of a TrainJob (cluster).")
    training_runtime: str = Field(
        names.TRAINING_RUNTIME, description="The chart's TrainingRuntime that TrainJobs use."
    )
    train_accelerator: str = Field("nvidia.com/gpu", description="Accelerator resource name.")
    train_node_selector: dict[str, str] = Field(
        default_factory=dict, description='JSON, e.g. {"nvidia.com/gpu.present": "true"}.'
    )
    train_tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description='JSON, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", '
        '"effect": "NoSchedule"}].',
    )

    # --- monitoring, drift, notifications, approval (flywheel.monitoring) -----------------------
    drift_window_h: float = Field(24.0, gt=0, description="Hours of served predictions checked.")
    drift_alpha: float = Field(0.05, gt=0, lt=1, description="Drift test significance level.")
    drift_min_items: int = Field(30, ge=2, description="Fewest served items a check needs.")
    drift_max_items: int = Field(2000, ge=2, description="Newest served items a check uses.")
    drift_review_max: int = Field(20, ge=0, description="Drifted items tagged per check.")
    drift_schedule: str = Field("0 3 * * *", description="Cron of the cluster drift pipeline.")
    notify_webhooks: list[str] = Field(
        default_factory=list, description="Webhook URLs (Slack-compatible JSON), as JSON list."
    )
    notify_events: list[str] = Field(
        default=["turn_done", "turn_failed", "promotion", "drift_found", "approval_awaited"],
        description="Events that are sent to the webhooks.",
    )
    notify_retries: int = Field(3, ge=0, le=10, description="Retries per webhook delivery.")
    notify_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook post.")
    prometheus_port: Port = Field(9090, ge=1, le=65535)
    prometheus_bin: Path = Field(Path("/usr/bin/prometheus"), description="Prometheus server.")
    prometheus_scrape_s: float = Field(15.0, gt=0, description="Dev-box scrape interval.")
    promotion: Literal["auto", "approve"] = Field(
        "auto", description="auto: a winning challenger is promoted; approve: it waits."
    )

    # --- cluster side (offline checks) ---------------------------------------------------------
    namespace: str | None = Field(
        None, description="Release namespace (default: the pod's service-account namespace)."
    )
    kube_backend: Literal["kubernetes", "rehearsal"] = Field(
        "kubernetes", description="How flywheel.kube reaches the cluster (rehearsal: one box)."
    )
    crds_dir: Path = Field(
        Path("build/crds"),
        description="Upstream CRDs for `deploy --dry-run` (`make crds` fetches them here).",
    )

    # --- supervision ----------------------------------------------------------------------
    health_timeout_s: float = Field(300.0, gt=0, description="How long `up` waits per service.")
    service_start_s: float = Field(
        3.0, ge=0, description="A service that dies sooner after a start counts as a failed start."
    )
    service_start_retries: int = Field(
        5, ge=0, description="Failed starts in a row (1 s, 2 s, ... apart) before `fatal`."
    )

    @field_validator("allow_remote")
    @classmethod
    def _loopback_unless_allowed(cls, allow: bool, info) -> bool:
        host, mode = info.data.get("host"), info.data.get("mode")
        if mode == "local" and host and not allow and not is_loopback(host):
            raise ValueError(
                f"FLYWHEEL_HOST={host} would open the dev-box services (MLflow, Label Studio, "
                "the model servers) beyond this machine; use 127.0.0.1, or set "
                "FLYWHEEL_ALLOW_REMOTE=true to accept it (MLflow then requires a login)"
            )
        return allow

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
    def items_dir(self) -> Path:
        """Item images, one folder per collection: all that Label Studio may serve."""
        return self.data_dir / "items"

    @property
    def snapshot_dir(self) -> Path:
        """Label snapshots (parquet), one file per snapshot id."""
        return self.data_dir / "snapshots"

    def secret(self, name: str, value: SecretStr | None = None, nbytes: int = 24) -> str:
        """Return `value` if set, else the secret stored under home/secrets, made once."""
        if value is not None:
            return value.get_secret_value()
        from flywheel.private import create_private, ensure_home

        path = self.home / "secrets" / name
        if not path.exists():
            ensure_home(self.home)
            ensure_home(path.parent)
            create_private(path, secrets.token_hex(nbytes)[:40])  # atomic, 0600 from birth
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
    def webhook_token(self) -> str:
        """The secret Label Studio sends in the trigger webhook's header (generated once)."""
        return self.secret("trigger_token", self.trigger_token, 24)

    @property
    def ls_password(self) -> str:
        return self.secret("label_studio_password", self.label_studio_password)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
