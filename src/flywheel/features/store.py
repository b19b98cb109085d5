"""The Feast feature store, configured from flywheel's settings.

The per-mode `feature_store*.yaml` in the feature repo holds ${FLYWHEEL_*} placeholders;
`feast_env(settings)` gives their values (absolute paths under <home>/data/feast/ on the
dev box, the cluster's URLs otherwise). The same values substitute them here, in-process,
and become the environment of `feast serve` and of `feast` commands a person runs, so
every reader sees the same stores. Feast is imported lazily: it takes seconds.
"""

from __future__ import annotations

import importlib.util
import os
import string
from contextlib import contextmanager
from pathlib import Path

from flywheel.errors import SettingsError
from flywheel.settings import Settings

OFFLINE_FILE = "items.parquet"
DEFINITIONS = "definitions.py"


def feast_dir(settings: Settings) -> Path:
    """Where the dev-box stores live: <home>/data/feast/."""
    return settings.data_dir / "feast"


def offline_uri(settings: Settings) -> str:
    """The offline feature history: a local parquet path or an s3:// URI."""
    return settings.feast_offline_uri or str(feast_dir(settings) / OFFLINE_FILE)


def embeddings_uri(settings: Settings) -> str:
    """The embedding rows (feature view item_embeddings), beside the offline feature history."""
    return offline_uri(settings).rsplit("/", 1)[0] + "/embeddings.parquet"


def yaml_path(settings: Settings) -> Path:
    name = "feature_store.yaml" if settings.mode == "local" else "feature_store.cluster.yaml"
    return settings.feature_repo / name


def feast_env(settings: Settings) -> dict[str, str]:
    """The variables the feature repo's yaml and definitions read."""
    registry = settings.feast_registry_url or f"sqlite:///{feast_dir(settings) / 'registry.db'}"
    return {
        "FLYWHEEL_FEAST_REGISTRY_URL": registry,
        "FLYWHEEL_FEAST_ONLINE_PATH": str(feast_dir(settings) / "online.db"),
        "FLYWHEEL_FEAST_REDIS_URL": settings.feast_redis_url,
        "FLYWHEEL_FEAST_OFFLINE_URI": offline_uri(settings),
        "FLYWHEEL_FEAST_S3_ENDPOINT": settings.feast_s3_endpoint or "",
        "FLYWHEEL_FEATURE_SERVICE": settings.feature_service,
    }


def repo_config(settings: Settings):
    """The Feast RepoConfig: the mode's yaml with its placeholders filled in."""
    import yaml
    from feast.repo_config import RepoConfig

    path = yaml_path(settings)
    if not path.exists():
        raise SettingsError(
            f"no feature store definition at {path}: set FLYWHEEL_FEATURE_REPO to the "
            f"feature_repo/ directory"
        )
    template = string.Template(path.read_text())
    try:
        text = template.substitute(feast_env(settings))
    except (KeyError, ValueError) as exc:
        raise SettingsError(f"{path}: unknown placeholder {exc}") from None
    config = RepoConfig(**yaml.safe_load(text))
    config.repo_path = settings.feature_repo
    return config


def feature_store(settings: Settings):
    """A FeatureStore for these settings (a new one each call: cache it where it matters)."""
    if settings.mode == "local":
        feast_dir(settings).mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo), config=repo_config(settings))


def definitions(settings: Settings) -> list:
    """The Feast objects of the repo's definitions module, built for these settings."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    path = settings.feature_repo / DEFINITIONS
    spec = importlib.util.spec_from_file_location("flywheel_feature_definitions", path)
    module = importlib.util.module_from_spec(spec)
    with environ(feast_env(settings)):
        spec.loader.exec_module(module)
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    return [obj for obj in vars(module).values() if isinstance(obj, kinds)]


@contextmanager
def environ(values: dict[str, str]):
    """Set environment variables for the duration of a block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
