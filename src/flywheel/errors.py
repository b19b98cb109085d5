"""Typed errors. The CLI prints their message on one line and exits non-zero; servers
turn them into 4xx JSON bodies. Each message names what was wrong and what to do."""


class FlywheelError(Exception):
    """Base class for every error the platform reports to a person."""

    exit_code = 1


class SettingsError(FlywheelError, ValueError):
    """A setting is missing or malformed."""

    exit_code = 2


class ServiceError(FlywheelError, RuntimeError):
    """A service could not be started or reached."""


class InputError(FlywheelError, ValueError):
    """Input data (a file, a snapshot, a request) is not what it must be."""

    exit_code = 2
