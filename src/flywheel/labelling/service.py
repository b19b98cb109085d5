"""The trigger as a dev-box service (`flywheel up` starts it beside Label Studio).

The supervised process gets the caller's effective settings as FLYWHEEL_* variables, so
`python -m flywheel.labelling.trigger` reads what `flywheel up` was given. supervisord's
`environment=` cannot carry a double quote, so a value holding one (a JSON list of strings
such as FLYWHEEL_LABEL_CLASSES) is left to the environment / `.env` the child inherits,
which is where the caller read it from.
"""

from __future__ import annotations

import json
import sys

from flywheel.services import Service, register
from flywheel.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """FLYWHEEL_* variables that reproduce `settings` in a child process."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        if '"' not in text:
            env[f"FLYWHEEL_{name.upper()}"] = text
    return env


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
        env=settings_env(settings),
        prepare=lambda: (settings.data_dir / "trigger").mkdir(parents=True, exist_ok=True),
    )
