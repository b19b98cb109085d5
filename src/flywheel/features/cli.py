"""`flywheel features ...`: build, apply, materialize, look up, print the environment.

flywheel features build            catalogue -> offline rows -> apply -> materialize
flywheel features apply            register feature_repo/'s definitions
flywheel features materialize      offline -> online, incrementally
flywheel features get ITEM...      online features of items (-f NAME to choose, --json)
flywheel features env              `export` lines for running `feast` by hand
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.settings import get_settings

app = typer.Typer(
    help="The Feast feature store: build, apply, materialize, look up.", no_args_is_help=True
)
console = Console()


@app.command()
def build() -> None:
    """Compute features for new or changed item images, apply and materialize them."""
    from rich.progress import Progress

    from flywheel.features.build import build_features

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("representing images", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = build_features(get_settings(), on_progress=on_progress)
    console.print(
        f"[green]features built[/]: {result.items} items, {result.new_rows} new "
        f"rows ({result.total_rows} in all) in {result.seconds:.1f} s"
    )
    from flywheel.labelling.quarantine import read as quarantined

    held = [i for i, e in quarantined(get_settings()).items() if e.get("stage") == "features"]
    if held:
        console.print(
            f"[yellow]quarantined[/]: {len(held)} items whose image fails "
            f"({', '.join(sorted(held)[:5])}{' ...' if len(held) > 5 else ''}); "
            "see `flywheel collection report`"
        )


@app.command()
def apply() -> None:
    """Register the feature repo's entity, feature view and feature service."""
    from flywheel.features.build import apply as apply_definitions

    names = apply_definitions(get_settings())
    console.print(f"[green]applied[/]: {', '.join(names)}")


@app.command()
def materialize() -> None:
    """Load the offline rows not yet online into the online store."""
    from flywheel.features.build import materialize as run

    run(get_settings())
    console.print("[green]materialized[/]")


@app.command()
def get(
    items: Annotated[list[str], typer.Argument(help="Item ids.")],
    feature: Annotated[
        list[str] | None,
        typer.Option("-f", "--feature", help="Feature name (repeat; default: all)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: {item id: {feature: value}}.")
    ] = False,
) -> None:
    """Print the online features of ITEMS (with embeddings: the configured backbone's too)."""
    from flywheel.features.retrieval import online_lookup

    settings = get_settings()
    names = feature or ["pixels", "collection", "accession_date", "image_sha256"]
    rows = online_lookup(items, settings, names)
    if settings.representation == "embedding" and not feature:
        rows, names = _with_embedding(rows, names, settings)
    if as_json:
        out = {item: {n: rows[n][i] for n in names} for i, item in enumerate(rows["item_id"])}
        print(json.dumps(out))
        return
    table = Table("item_id", *names)
    for i, item in enumerate(rows["item_id"]):
        table.add_row(item, *(_show(rows[n][i]) for n in names))
    console.print(table)


@app.command()
def env() -> None:
    """Print `export` lines that let `feast` commands see flywheel's stores."""
    from flywheel.features.store import feast_dir, feast_env, yaml_path

    settings = get_settings()
    if settings.mode == "local":
        feast_dir(settings).mkdir(parents=True, exist_ok=True)
    values = {**feast_env(settings), "FEAST_FS_YAML_FILE_PATH": str(yaml_path(settings))}
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")


def _with_embedding(rows: dict, names: list[str], settings) -> tuple[dict, list[str]]:
    """Add the configured backbone's vectors (`embedding`) and their `representation`."""
    from flywheel.features.embedding import backbone_for
    from flywheel.features.vectors import online_embeddings

    rep = backbone_for(settings).representation_id
    vectors = online_embeddings(rows["item_id"], settings, rep)
    rows = {**rows, "embedding": vectors.tolist(), "representation": [rep] * len(vectors)}
    return rows, [*names, "embedding", "representation"]


def _show(value) -> str:
    if isinstance(value, list):
        head = ", ".join(f"{v:.2f}" for v in value[:4])
        return f"[{head}, ...] ({len(value)} values)"
    return str(value)
