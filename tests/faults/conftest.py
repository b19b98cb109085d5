"""Fault and load tests: real services on loopback, each bounded in time and count.

They reuse the serving tests' session fixture (predictor + transformer on the session's
MLflow) and the session `stack`; the tests that kill MLflow start their own. Each prints
the recovery time it measured (run with `-s` to see them)."""

from tests.serving.conftest import serving  # noqa: F401 - the shared serving fixture
