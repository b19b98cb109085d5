"""monitor_drift: recent served inputs vs the champion's training set (a separate pipeline,
scheduled on the cluster). The report page is an HTML artifact the KFP UI shows."""

from typing import NamedTuple

from kfp.dsl import HTML, Output

from components.base import component


@component
def monitor_drift(report: Output[HTML], hours: float = 0.0) -> NamedTuple(
    "Drift", [("drift_found", bool), ("tagged", int)]
):
    import shutil
    from datetime import UTC, datetime, timedelta

    from flywheel.monitoring.drift_check import check_drift
    from flywheel.settings import get_settings

    since = datetime.now(UTC) - timedelta(hours=hours) if hours > 0 else None
    result = check_drift(get_settings(), since=since)
    shutil.copyfile(result.html_path, report.path)
    report.metadata.update({"drift_found": result.drift_found, **result.p_values})
    return (result.drift_found, result.tagged)
