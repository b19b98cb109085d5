"""The one command-line entry point, `flywheel`, behind the Makefile.

    flywheel up [SERVICE...]      start the dev-box services and wait until they answer
    flywheel down [SERVICE...]    stop them (data under .flywheel/ is kept)
    flywheel status               state, pid, port and URL of each service
    flywheel logs [SERVICE]       the tail of a service's log
    flywheel backup [DEST]        back up the dev box's databases, artifacts, items, secrets
    flywheel restore SOURCE       put a backup back (services stopped first)

Subcommand groups (collection, labels, features, train, serve, loop...) live beside the
code they drive and are added below. Heavy libraries are imported inside commands so
`flywheel --help` stays fast. Every FlywheelError becomes a one-line message and a
non-zero exit code.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel import services
from flywheel.errors import FlywheelError
from flywheel.settings import get_settings

app = typer.Typer(
    help="flywheel: label -> features -> train -> register -> serve -> label again.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)

STATE_STYLE = {"running": "green", "starting": "yellow", "unhealthy": "yellow"}

Names = Annotated[list[str] | None, typer.Argument(help="Services (default: all).")]


@app.command()
def up(
    names: Names = None,
    with_: Annotated[
        list[str] | None,
        typer.Option("--with", help="Optional services to add (monitoring)."),
    ] = None,
) -> None:
    """Start the local services that are not running and wait until each answers."""
    settings = get_settings()
    if with_:  # the named (default: all) services plus the optional ones asked for
        names = [s.name for s in services.select(settings, names or [])] + with_
    started = time.monotonic()
    with console.status("starting services...") as spinner:

        def on_wait(svc: services.Service, waited: float) -> None:
            spinner.update(f"waiting for {svc.name} at {svc.url(settings)} ({waited:.0f} s)")

        ready = services.up(settings, names or [], on_wait=on_wait)
    console.print(f"[green]up[/] in {time.monotonic() - started:.1f} s")
    for svc in ready:
        console.print(f"  {svc.name:14} {svc.url(settings)}{svc.ui_path}  {svc.description}")


@app.command()
def down(names: Names = None) -> None:
    """Stop the local services (all of them, and the supervisor, by default)."""
    services.down(get_settings(), names or [])
    console.print("stopped" + (f": {', '.join(names)}" if names else ""))


@app.command()
def status(names: Names = None) -> None:
    """Show each service's state, pid, port and URL."""
    rows = services.status(get_settings(), names or [])
    table = Table("service", "state", "pid", "port", "url", "restarts", "last exit")
    for row in rows:
        style = STATE_STYLE.get(row.state, "red")
        table.add_row(
            row.name,
            f"[{style}]{row.state}[/]",
            str(row.pid or "-"),
            str(row.port),
            row.url,
            str(row.restarts),
            row.last_exit or "-",
        )
    console.print(table)
    for row in rows:
        if row.log_tail is not None:
            console.rule(f"{row.name} is {row.state}: crash loop; the end of its log")
            console.print(row.log_tail, markup=False, highlight=False)
    from flywheel.serving.predlog import write_errors

    for rec in write_errors(get_settings()):
        if rec.get("write_errors"):
            console.print(
                f"[red]prediction log[/] (pid {rec['pid']}): {rec['write_errors']} failed "
                f"writes, {rec['records_lost']} records lost; last: {rec['last_error']}",
                highlight=False,
            )
    _quarantine_line()


def _quarantine_line() -> None:
    from flywheel.labelling import quarantine

    held = quarantine.read(get_settings())
    if held:
        stages = sorted({e.get("stage", "?") for e in held.values()})
        console.print(
            f"[yellow]quarantine[/]: {len(held)} items ({', '.join(stages)}); "
            "see `flywheel collection report`"
        )


@app.command()
def logs(
    name: Annotated[str | None, typer.Argument(help="Service (default: all).")] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1)] = 40,
) -> None:
    """Print the last lines of a service's log (or of every service's)."""
    settings = get_settings()
    sup = services.Supervisor(settings)
    for svc in services.select(settings, [name] if name else []):
        console.rule(f"{svc.name}  {sup.log_file(svc.name)}")
        console.print(services.tail(sup.log_file(svc.name), lines), markup=False, highlight=False)


@app.command()
def backup(
    dest: Annotated[
        str | None, typer.Argument(help="New folder (default: home/backups/TIME).")
    ] = None,
) -> None:
    """Back up Label Studio, MLflow, the trigger, items, catalogue, snapshots and secrets."""
    from pathlib import Path

    from flywheel import backup as bk

    with console.status("backing up...") as spinner:
        out = bk.backup(get_settings(), Path(dest) if dest else None, spinner.update)
    console.print(f"backup written to {out}", highlight=False)


@app.command()
def restore(
    source: Annotated[str, typer.Argument(help="A folder written by `flywheel backup`.")],
) -> None:
    """Restore a backup into this home (services stopped; replaced data is kept aside)."""
    from pathlib import Path

    from flywheel import backup as bk

    with console.status("restoring...") as spinner:
        aside = bk.restore(get_settings(), Path(source), spinner.update)
    console.print(f"restored {source}; the replaced data is in {aside}", highlight=False)
    console.print("start the services again with `flywheel up`")


@app.command()
def settings() -> None:
    """Print the effective settings (secrets hidden)."""
    for key, value in get_settings().model_dump().items():
        console.print(f"{key} = {value}", markup=False, highlight=False)


# Subcommand groups: (module, attribute, name). Each module keeps its imports light.
GROUPS = [
    ("flywheel.labelling.cli", "collection_app", "collection"),
    ("flywheel.labelling.cli", "labels_app", "labels"),
    ("flywheel.features.cli", "app", "features"),
    ("flywheel.training.cli", "app", "train"),
    ("flywheel.registry.cli", "app", "registry"),
    ("flywheel.serving.cli", "app", "serve"),
    ("flywheel.loop.cli", "app", "loop"),
    ("flywheel.loop.cli", "demo", "demo"),
    ("flywheel.deploy.cli", "deploy", "deploy"),
    ("flywheel.deploy.cli", "undeploy", "undeploy"),
    ("flywheel.deploy.cli", "crds_app", "crds"),
    ("flywheel.monitoring.cli", "app", "monitor"),
    ("flywheel.monitoring.cli", "report", "report"),
    ("flywheel.deploy.cli", "restore", "restore-cluster"),
]

for _module, _attr, _name in GROUPS:
    try:
        _group = getattr(importlib.import_module(_module), _attr)
    except ModuleNotFoundError as _exc:  # a group whose module is not written yet
        if not (_exc.name and _module.startswith(_exc.name)):
            raise
        continue
    if isinstance(_group, typer.Typer):
        app.add_typer(_group, name=_name)
    else:  # a single command
        app.command(name=_name)(_group)


def main() -> None:
    try:
        if "--help" not in sys.argv:  # a dev box opened beyond loopback: log in to MLflow
            import os

            os.environ.update(services.mlflow_client_env(get_settings()))
        code = app(standalone_mode=False)  # click returns typer.Exit's code here
        if isinstance(code, int) and code:
            sys.exit(code)
    except FlywheelError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
