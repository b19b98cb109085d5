"""The trigger as a dev-box service (`flywheel up` starts it beside Label Studio).

The supervised process gets the caller's effective settings as FLYWHEEL_* variables
(`Settings.to_env`), so `python -m flywheel.labelling.trigger` reads what `flywheel up`
was given.
"""

from __future__ import annotations

import sys

from flywheel.services import Service, register
from flywheel.settings import Settings


@register
def trigger_service(settings: Settings) -> Service:
    return Service(
        name="trigger",
        description="Loop trigger (Label Studio webhooks -> next turn)",
        command=[sys.executable, "-m", "flywheel.labelling.trigger"],
        port=settings.trigger_port,
        port_setting="trigger_port",
        health_path="/health",
        ui_path="/status",
        env=settings.to_env(),
        prepare=lambda: (settings.data_dir / "trigger").mkdir(parents=True, exist_ok=True),
    )
