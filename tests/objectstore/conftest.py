"""A real S3 server (moto's, on a free loopback port) for the object-store tests."""

from __future__ import annotations

import pytest

from flywheel.rehearsal import s3server
from tests.conftest import free_port, make_settings


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> s3server.S3Server:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    server = s3server.start(free_port(), log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def s3_settings(s3, tmp_path):
    """A factory: settings for a fresh home whose state lives in one S3 bucket."""
    import uuid

    from flywheel import objectstore

    bucket = f"fw-{uuid.uuid4().hex[:12]}"

    def make(name: str, **overrides):
        values = dict(
            state_uri=f"s3://{bucket}/state",
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
        )
        values.update(overrides)
        settings = make_settings(tmp_path / name, **values)
        objectstore.ensure_bucket(settings, settings.state_uri)
        return settings

    return make
