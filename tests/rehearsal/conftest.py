"""Fixtures of the rehearsal tests: the S3 server of the object-store tests."""

from tests.objectstore.conftest import s3, s3_settings  # noqa: F401
