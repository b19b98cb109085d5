"""`flywheel monitor drift` and `flywheel report`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.settings import get_settings

app = typer.Typer(help="Monitoring: drift of the served inputs.", no_args_is_help=True)
console = Console()


@app.command()
def drift(
    hours: Annotated[
        float | None, typer.Option(help="Hours of served predictions (FLYWHEEL_DRIFT_WINDOW_H)")
    ] = None,
    tag: Annotated[bool, typer.Option(help="Tag drifted items in Label Studio")] = True,
) -> None:
    """Compare recent served inputs with the champion's training set; write the report."""
    from flywheel.monitoring.drift_check import check_drift

    settings = get_settings()
    since = datetime.now(UTC) - timedelta(hours=hours) if hours else None
    with console.status("checking drift (permutation tests)..."):
        report = check_drift(settings, since=since, tag=tag)
    table = Table("test", "p-value", title=f"champion v{report.champion_version}")
    for name, p in report.p_values.items():
        table.add_row(name, f"{p:.4g}")
    console.print(table)
    verdict = "[red]drift found[/]" if report.drift_found else "[green]no drift[/]"
    console.print(
        f"{verdict}: {report.n_current} served vs {report.n_reference} training items; "
        f"{report.tagged} tagged for review; report {report.html_path}"
    )


def report(
    out: Annotated[
        str | None, typer.Option(help="Output HTML (default <home>/data/report.html)")
    ] = None,
) -> None:
    """Write one static HTML page of the loop's health."""
    from flywheel.monitoring.report import write_report

    path = write_report(get_settings(), out)
    console.print(f"report: {path}")
