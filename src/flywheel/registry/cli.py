"""`flywheel registry ...`: show versions and aliases, promote, roll back, approve, reject."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.settings import get_settings

app = typer.Typer(
    help="Model versions and the champion/challenger/previous aliases.", no_args_is_help=True
)
console = Console()


@app.command()
def show() -> None:
    """List the versions of the registered model with aliases and holdout accuracy."""
    from flywheel.registry import versions

    settings = get_settings()
    table = Table("version", "aliases", "holdout accuracy", "run", title=settings.model_name)
    for v in versions(settings):
        acc = "-" if v.holdout_accuracy is None else f"{v.holdout_accuracy:.4f}"
        table.add_row(v.version, ", ".join(v.aliases), acc, v.run_id or "-")
    console.print(table)


@app.command()
def promote(
    version: Annotated[str | None, typer.Argument(help="default: the challenger")] = None,
    margin: Annotated[float | None, typer.Option(help="default: FLYWHEEL_PROMOTION_MARGIN")] = None,
) -> None:
    """Make the challenger champion if it beats the champion on the holdout by the margin."""
    from flywheel.registry import promote as do_promote

    d = do_promote(get_settings(), version, margin)
    scores = f"candidate {d.candidate_accuracy}, champion {d.champion_accuracy}"
    console.print(
        f"{d.action}: v{d.candidate_version} ({d.reason}; {scores}); "
        f"champion is v{d.champion_version}"
    )


@app.command()
def rollback() -> None:
    """Swap `champion` and `previous`."""
    from flywheel.registry import rollback as do_rollback

    d = do_rollback(get_settings())
    console.print(f"rolled back: {d.reason}")


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="a version awaiting approval")],
    by: Annotated[str | None, typer.Option(help="who decides (default: login name)")] = None,
) -> None:
    """Promote a challenger that waits for approval (FLYWHEEL_PROMOTION=approve)."""
    from flywheel.registry.approval import approve as do_approve
    from flywheel.registry.approval import who

    d = do_approve(get_settings(), version, by)
    console.print(
        f"approved by {who(by)}: {d.action} v{version}; champion is v{d.champion_version}"
    )


@app.command()
def reject(
    version: Annotated[str, typer.Argument(help="a version awaiting approval")],
    by: Annotated[str | None, typer.Option(help="who decides (default: login name)")] = None,
    reason: Annotated[str, typer.Option(help="why, kept on the version")] = "",
) -> None:
    """Turn down a challenger that waits for approval; the champion stays."""
    from flywheel.registry.approval import reject as do_reject
    from flywheel.registry.approval import who

    do_reject(get_settings(), version, by, reason)
    console.print(f"rejected by {who(by)}: v{version}")


@app.command()
def pending() -> None:
    """Versions awaiting approval."""
    from flywheel.registry.approval import pending as waiting

    console.print(", ".join(waiting(get_settings())) or "none")


@app.command()
def recover() -> None:
    """Complete a promotion or rollback that was interrupted between its alias writes."""
    from flywheel.registry import recover as do_recover

    d = do_recover(get_settings())
    console.print(d.reason if d else "nothing to recover: no interrupted promotion or rollback")


@app.command()
def prune() -> None:
    """Delete old model versions (never an aliased one) and old local pipeline outputs."""
    from flywheel.registry.retention import prune_pipeline_outputs, prune_versions

    settings = get_settings()
    gone = prune_versions(settings)
    console.print(f"deleted {len(gone)} model versions" + (f": {', '.join(gone)}" if gone else ""))
    outputs = prune_pipeline_outputs(settings)
    console.print(f"deleted {len(outputs)} local pipeline outputs")
