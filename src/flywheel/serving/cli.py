"""`flywheel serve ...`: run the model servers in the foreground, reload, predict.

    flywheel serve predictor [-- KServe args]     the predictor (what `flywheel up` supervises)
    flywheel serve transformer [-- KServe args]   the transformer
    flywheel serve reload                         the predictor loads the current champion
    flywheel serve predict ITEM_ID...             predictions for items, via the transformer

Imports stay light: kserve is imported only by the two server commands.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.settings import get_settings

app = typer.Typer(
    help="Model serving: KServe predictor and Feast transformer.", no_args_is_help=True
)
console = Console()

Extra = Annotated[list[str] | None, typer.Argument(help="KServe arguments, e.g. --http_port 9000.")]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def predictor(kserve_args: Extra = None) -> None:
    """Run the predictor in the foreground (models:/<model_name>@champion)."""
    from flywheel.serving.predictor import main

    main(kserve_args or [])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def transformer(kserve_args: Extra = None) -> None:
    """Run the transformer in the foreground (item ids -> Feast -> predictor)."""
    from flywheel.serving.transformer import main

    main(kserve_args or [])


@app.command()
def reload() -> None:
    """Make the running predictor load the version the `champion` alias points to."""
    from flywheel.serving.client import reload as do_reload

    settings = get_settings()
    do_reload(settings)
    console.print(
        f"predictor at {settings.url(settings.predictor_port)} serves the champion "
        f"of {settings.model_name}"
    )


@app.command()
def predict(item_ids: Annotated[list[str], typer.Argument(help="Item ids in the store.")]) -> None:
    """Predict items through the running transformer and print a table."""
    from flywheel.serving.client import predict_items

    result = predict_items(item_ids, get_settings())
    table = Table("item_id", "label", "probability", title=f"model version {result.model_version}")
    for item_id, label, probs in zip(
        result.item_ids, result.labels, result.probabilities, strict=True
    ):
        table.add_row(str(item_id), label, f"{max(probs):.3f}")
    console.print(table)
