"""`flywheel collection ...` and `flywheel labels ...`.

flywheel collection init [--limit N]                  the demo digits -> Label Studio
flywheel collection add DIR [--metadata CSV] [--collection NAME] [--strict] [--copy]
flywheel collection add --iiif MANIFEST [--collection NAME]   a IIIF manifest (file or URL)
flywheel collection report                            rejected files, quarantined items
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
    directory: Annotated[
        Path | None,
        typer.Argument(help="Folder of images (JPEG, PNG, TIFF, JPEG 2000, WebP, GIF, BMP)."),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(help="CSV with a `file` column and optional item_id, accession_date."),
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Collection name (default: the folder's name).")
    ] = None,
    iiif: Annotated[
        str | None, typer.Option(help="A IIIF Presentation v2/v3 manifest (file or URL).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit non-zero when any file is rejected.")] = False,
    copy: Annotated[
        bool, typer.Option(help="Copy the masters under the home (sources that will move).")
    ] = False,
) -> None:
    """Add a folder of images (or a IIIF manifest) as items and register Label Studio tasks.

    Every good file is added; every rejected one is named with its reason (also in the
    report file). Exits 0 when anything was added, 1 with --strict on any rejection."""
    from flywheel.errors import FlywheelError, InputError
    from flywheel.labelling.collection import add_collection

    settings = get_settings()
    if copy:
        settings = settings.model_copy(update={"intake_copy_masters": True})
    if (directory is None) == (iiif is None):
        raise InputError("give a folder of images or --iiif MANIFEST (one of them)")
    with _progress() as bar:
        if iiif is not None:
            from flywheel.labelling.iiif import add_manifest

            task = bar.add_task(f"adding IIIF {iiif}", total=None)
            result = add_manifest(settings, iiif, collection, progress=lambda: bar.advance(task))
        else:
            task = bar.add_task(f"adding {directory}", total=None)
            result = add_collection(
                settings, directory, metadata, collection, progress=lambda: bar.advance(task)
            )
    counts = ", ".join(
        f"{result.count(k)} {k}" for k in ("added", "changed", "unchanged", "rejected", "skipped")
    )
    console.print(f"files: {counts}; report {result.report_path}")
    for outcome in result.rejected:
        console.print(f"[red]rejected[/] {outcome.file}: {outcome.reason}", highlight=False)
    _summary(settings, result.rows, "added")
    if strict and result.rejected:
        raise FlywheelError(
            f"--strict: {len(result.rejected)} file(s) rejected (the others were added); "
            f"see {result.report_path}"
        )


@collection_app.command("report")
def report() -> None:
    """The last intake's rejected files and the quarantined items, with their reasons."""
    import json

    from flywheel.labelling import quarantine

    settings = get_settings()
    folder = settings.data_dir / "intake"
    rejected = 0
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        files = json.loads(path.read_text()).get("files", [])
        bad = [f for f in files if f["status"] == "rejected"]
        rejected += len(bad)
        console.print(f"[bold]{path.stem}[/]: {len(files)} files, {len(bad)} rejected ({path})")
        for f in bad:
            console.print(f"  [red]rejected[/] {f['file']}: {f['reason']}", highlight=False)
    held = quarantine.read(settings)
    console.print(f"[bold]quarantine[/]: {len(held)} items ({quarantine.store_path(settings)})")
    for item_id, entry in sorted(held.items()):
        console.print(
            f"  [yellow]{item_id}[/] at {entry['stage']}: {entry['reason']}", highlight=False
        )
    if not rejected and not held:
        console.print("no rejected files, no quarantined items")


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
    from flywheel.labelling.acquisition import select_for_labelling, spread_near_duplicates
    from flywheel.labelling.duplicates import near_duplicate_groups
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
    ranked = select_for_labelling(probs, [str(i) for i in ids], len(ids), strategy, seed)
    chosen = spread_near_duplicates(ranked, near_duplicate_groups(get_settings()), k)
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
