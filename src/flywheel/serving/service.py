"""The two dev-box model servers, registered with `flywheel up`.

    predictor    http://127.0.0.1:8085   serves models:/<model_name>@champion
    transformer  http://127.0.0.1:8086   item ids / images -> features -> predictor

Both are supervised processes (`python -m flywheel.serving.predictor|transformer`) that get
the caller's settings through `FLYWHEEL_*` environment variables, so a test home or a `.env`
reaches them unchanged. Health: `/v2/health/live` (alive even before a champion exists).
"""

from __future__ import annotations

import sys

from flywheel.services import Service, register
from flywheel.settings import Settings


def _server(settings: Settings, name: str, port: int, port_setting: str, what: str) -> Service:
    return Service(
        name=name,
        description=what,
        command=[sys.executable, "-m", f"flywheel.serving.{name}"],
        port=port,
        port_setting=port_setting,
        health_path="/v2/health/live",
        ui_path=f"/v2/models/{settings.model_name}",
        env={**settings.to_env(), "PYTHONUNBUFFERED": "1"},
    )


@register
def predictor(settings: Settings) -> Service:
    return _server(
        settings,
        "predictor",
        settings.predictor_port,
        "predictor_port",
        "KServe predictor (MLflow champion)",
    )


@register
def transformer(settings: Settings) -> Service:
    return _server(
        settings,
        "transformer",
        settings.transformer_port,
        "transformer_port",
        "KServe transformer (Feast features -> predictor)",
    )
