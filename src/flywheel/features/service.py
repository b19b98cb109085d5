"""The Feast feature server as a dev-box service (`flywheel up` starts it).

`feast serve` on settings.feast_port, bound to loopback, reading the same stores as
the library (the environment from `feast_env`). It answers /health and
POST /get-online-features. In the cluster the Helm chart runs the same server.
"""

from __future__ import annotations

from flywheel.features.store import feast_dir, feast_env, yaml_path
from flywheel.services import BIN, Service, register
from flywheel.settings import Settings


@register
def feature_server(settings: Settings) -> Service:
    return Service(
        name="feast",
        description="Feast feature server (online features over HTTP)",
        command=[
            str(BIN / "feast"),
            "-c",
            str(settings.feature_repo),
            "-f",
            str(yaml_path(settings)),
            "serve",
            "-h",
            settings.host,
            "-p",
            str(settings.feast_port),
            "--no-access-log",
        ],
        port=settings.feast_port,
        port_setting="feast_port",
        health_path="/health",
        ui_path="/docs",
        env=feast_env(settings),
        prepare=lambda: feast_dir(settings).mkdir(parents=True, exist_ok=True),
    )
