"""Fixtures for the feature store tests: one built store per backend, shared per module.

`local` is the dev box (sqlite registry and online store, parquet + DuckDB offline).
`cluster` is the cluster configuration against real Postgres (SQL registry) and Redis
(online store): it runs where FLYWHEEL_TEST_POSTGRES_URL (a user allowed to CREATE
DATABASE) and FLYWHEEL_TEST_REDIS_URL (host:port) are set, as .ci/run does, and is
skipped with that message elsewhere. The offline parquet stays on local disk in both.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime

import pytest

from tests.conftest import make_settings
from tests.features.catalogue import write_catalogue

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # every image first seen
T1 = datetime(2026, 3, 1, tzinfo=UTC)  # two images replaced
N_ITEMS = 24
CHANGED = ["digits-0001", "digits-0002"]


def _cluster_overrides():
    pg, redis_url = (
        os.environ.get("FLYWHEEL_TEST_POSTGRES_URL"),
        os.environ.get("FLYWHEEL_TEST_REDIS_URL"),
    )
    if not (pg and redis_url):
        pytest.skip(
            "Postgres/Redis not configured: set FLYWHEEL_TEST_POSTGRES_URL and "
            "FLYWHEEL_TEST_REDIS_URL (.ci/run starts both from Debian packages)"
        )
    import psycopg
    import redis
    from sqlalchemy.engine import make_url

    admin = make_url(pg).set(drivername="postgresql")
    name = f"flywheel_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db = random.randint(1, 15)
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port), db=db)
    client.flushdb()

    def cleanup():
        client.flushdb()
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url = admin.set(drivername="postgresql+psycopg", database=name)
    return {
        "mode": "cluster",
        "feast_registry_url": url.render_as_string(hide_password=False),
        "feast_redis_url": f"{redis_url},db={db}",
    }, cleanup


@pytest.fixture(scope="module", params=["local", "cluster"])
def built(request, tmp_path_factory):
    """A store built in three steps: first build, an idempotent re-run, two images changed.

    Yields (settings, [first, rerun, after_change] BuildResults).
    """
    from flywheel.features import build_features

    cleanup = None
    overrides = {}
    if request.param == "cluster":
        overrides, cleanup = _cluster_overrides()
    home = tmp_path_factory.mktemp(f"features-{request.param}") / "home"
    settings = make_settings(home, **overrides)
    if request.param == "cluster":
        settings = make_settings(
            home, feast_offline_uri=str(home / "s3" / "items.parquet"), **overrides
        )
    try:
        write_catalogue(settings, N_ITEMS, updated_at=T0)
        results = [build_features(settings), build_features(settings)]
        write_catalogue(settings, N_ITEMS, updated_at=T0, changed={i: T1 for i in CHANGED})
        results.append(build_features(settings))
        yield settings, results
    finally:
        if cleanup:
            from flywheel.features.retrieval import forget_stores

            forget_stores()  # release the registry's connections before DROP DATABASE
            cleanup()
