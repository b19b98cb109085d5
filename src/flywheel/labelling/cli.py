"""`flywheel collection ...` and `flywheel labels ...`.

flywheel collection init [--limit N]                  the demo digits -> Label Studio
flywheel collection add DIR [--metadata CSV] [--collection NAME]
flywheel labels export                                label snapshot (parquet)
flywheel labels select --probabilities NPY [-k K] [--strategy S]
flywheel labels annotate-demo [-n N | ITEM...]        the demo annotator labels items
flywheel labels quality [--review]                    agreement, suspected errors, balance
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flywheel.settings import get_settings

console = Console()
collection_app = typer.Typer(
    help="The item collection: images, catalogue, Label Studio tasks.", no_args_is_help=True
)
labels_app = typer.Typer(
    help="Labels: export snapshots, pick what to label next.", no_args_is_help=True
)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _summary(settings, rows, label: str) -> None:
    console.print(
        f"[green]{label}[/]: {len(rows)} items in collection "
        f"{', '.join(sorted(set(rows.collection)))}; catalogue "
        f"{settings.catalogue_path}; Label Studio project "
        f"{settings.label_studio_project!r} at {settings.label_studio_base_url}"
    )


@collection_app.command("init")
def init(
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N digits.")] = None,
) -> None:
    """Render the demo digits (scikit-learn, no download) and register them as tasks."""
    from flywheel.labelling.collection import init_demo

    settings = get_settings()
    with _progress() as bar:
        task = bar.add_task("rendering and adding digit cards", total=limit or 1797)
        rows = init_demo(settings, limit=limit, progress=lambda: bar.advance(task))
    _summary(settings, rows, "demo collection ready")


@collection_app.command("add")
def add(
    directory: Annotated[Path, typer.Argument(help="Folder of PNG/JPEG images.")],
    metadata: Annotated[
        Path | None,
        typer.Option(help="CSV with a `file` column and optional item_id, accession_date."),
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Collection name (default: the folder's name).")
    ] = None,
) -> None:
    """Add a folder of images as items and register them as Label Studio tasks."""
    from flywheel.labelling.collection import add_images

    settings = get_settings()
    with _progress() as bar:
        task = bar.add_task(f"adding {directory}", total=None)
        rows = add_images(
            settings, directory, metadata, collection, progress=lambda: bar.advance(task)
        )
    _summary(settings, rows, "added")


@labels_app.command("export")
def export() -> None:
    """Export the annotations as a label snapshot (same annotations -> same snapshot id)."""
    from flywheel.labelling.export import export_labels

    with console.status("exporting labels from Label Studio..."):
        snap = export_labels(get_settings())
    s = snap.stats
    console.print(
        f"[green]snapshot {snap.snapshot_id}[/]: {len(snap.frame)} labels "
        f"({s['tasks']} tasks, {s['unlabelled']} unlabelled, {s['cancelled']} "
        f"skipped annotations, {s['overruled']} overruled) -> {snap.path}"
    )
    if len(snap.frame):
        counts = snap.frame.label.value_counts().sort_index()
        console.print("per class: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


@labels_app.command("select")
def select(
    probabilities: Annotated[
        Path, typer.Option(help=".npz with `item_ids` and `probabilities` [n, classes].")
    ],
    k: Annotated[int, typer.Option("-k", min=0, help="How many items.")] = 50,
    strategy: Annotated[
        str, typer.Option(help="least_confidence | margin | entropy | random")
    ] = "least_confidence",
    seed: Annotated[int, typer.Option()] = 0,
    queue: Annotated[bool, typer.Option(help="Also queue them first in Label Studio.")] = False,
) -> None:
    """Pick the next items to label from a model's probabilities (and optionally queue them)."""
    import numpy as np

    from flywheel.errors import InputError
    from flywheel.labelling.acquisition import select_for_labelling
    from flywheel.labelling.predictions import queue_for_labelling

    if not probabilities.exists():
        raise InputError(f"{probabilities} does not exist")
    try:
        data = np.load(probabilities, allow_pickle=False)
        ids, probs = data["item_ids"], data["probabilities"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(
            f"{probabilities} must be an .npz with item_ids and probabilities ({exc})"
        ) from None
    chosen = select_for_labelling(probs, [str(i) for i in ids], k, strategy, seed)
    for item_id in chosen:
        console.print(item_id)
    if queue:
        changed = queue_for_labelling(get_settings(), chosen, tag=strategy)
        console.print(f"[green]queued[/] {len(chosen)} items ({changed} tasks changed)")


@labels_app.command("annotate-demo")
def annotate_demo(
    items: Annotated[list[str] | None, typer.Argument(help="Item ids (default: -n first).")] = None,
    n: Annotated[int, typer.Option("-n", min=1, help="Label the first N unlabelled.")] = 50,
) -> None:
    """Let the demo annotator (an automatic user) label items from the known answers."""
    from flywheel.labelling.annotator import DEMO_EMAIL, DemoAnnotator
    from flywheel.labelling.predictions import unlabelled_items

    settings = get_settings()
    chosen = items or unlabelled_items(settings)[:n]
    annotator = DemoAnnotator(settings)
    with _progress() as bar:
        task = bar.add_task(f"{DEMO_EMAIL} labelling", total=len(chosen))
        created = annotator.label(chosen, progress=lambda: bar.advance(task))
    console.print(
        f"[green]{created}[/] annotations by {DEMO_EMAIL} "
        f"({len(chosen) - created} already labelled)"
    )


@labels_app.command("quality")
def quality(
    review: Annotated[
        bool, typer.Option(help="Send suspected errors to the 'label review' tab.")
    ] = False,
    folds: Annotated[int, typer.Option(min=2, help="Folds for out-of-fold probabilities.")] = 5,
    top: Annotated[int, typer.Option(min=0, help="Suspects to list.")] = 20,
) -> None:
    """Agreement between annotators, suspected label errors and class balance."""
    from rich.table import Table

    from flywheel.labelling.quality import REVIEW_VIEW, quality_report, send_to_review

    settings = get_settings()
    with console.status("exporting labels and scoring them out of fold..."):
        report = quality_report(settings, folds=folds)
    a = report.agreement
    alpha, mean = a["krippendorff_alpha"], a["mean_item_agreement"]
    console.print(
        f"[bold]snapshot {report.snapshot_id}[/]: {report.labels} labels; "
        f"{a['items_with_overlap']} items with several annotators; Krippendorff's alpha "
        f"{'-' if alpha is None else f'{alpha:.3f}'}; mean item agreement "
        f"{'-' if mean is None else f'{mean:.3f}'}; "
        f"{len(a['in_review'])} in review ({settings.label_resolution} policy)"
    )
    if a["per_annotator"]:
        table = Table("annotator", "items shared", "agrees with others", "Cohen's kappa")
        for who, row in a["per_annotator"].items():
            kappa = "-" if row["kappa"] is None else f"{row['kappa']:.3f}"
            table.add_row(who, str(row["items"]), f"{row['agreement']:.1%}", kappa)
        console.print(table)
    console.print("class balance: " + ", ".join(f"{k}: {v}" for k, v in report.balance.items()))
    table = Table("item", "label", "suggestion", "p(label)", "p(suggestion)")
    for s in report.suspects[:top]:
        table.add_row(
            s.item_id,
            s.label,
            s.suggestion,
            f"{s.label_probability:.2f}",
            f"{s.suggestion_probability:.2f}",
        )
    console.print(f"suspected label errors: {len(report.suspects)}")
    if report.suspects:
        console.print(table)
    if report.injected:
        i = report.injected
        console.print(
            f"against the demo annotator's deliberate errors: {i['found']} of {i['injected']} "
            f"found (recall {i['recall'] or 0:.1%}), precision {i['precision'] or 0:.1%}"
        )
    if review and report.suspects:
        n = send_to_review(settings, report.suspects, f"label-review-{report.snapshot_id}")
        console.print(f"[green]{n}[/] tasks in the {REVIEW_VIEW!r} tab with the model's suggestion")
